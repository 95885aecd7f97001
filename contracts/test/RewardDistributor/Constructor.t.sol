// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {RewardDistributor} from "../../src/RewardDistributor.sol";

/// @notice `constructor`: token, challenge period and roles, and every view empty at deployment.
contract ConstructorTest is DistributorFixture {
    function test_Constructor_setsTokenPeriodAndRoles() public {
        RewardDistributor fresh = new RewardDistributor(token, 7 days, admin);
        assertEq(address(fresh.token()), address(token), "token");
        assertEq(fresh.challengePeriod(), 7 days, "challengePeriod");
        assertTrue(fresh.hasRole(0x00, admin), "admin role");
        assertTrue(fresh.hasRole(keccak256("POSTER_ROLE"), admin), "poster role");
        assertTrue(fresh.hasRole(keccak256("GUARDIAN_ROLE"), admin), "guardian role");
        assertEq(fresh.POSTER_ROLE(), keccak256("POSTER_ROLE"), "poster id");
        assertEq(fresh.GUARDIAN_ROLE(), keccak256("GUARDIAN_ROLE"), "guardian id");
    }

    function test_Constructor_guardianRoleAdministersItself() public view {
        assertEq(rd.getRoleAdmin(rd.GUARDIAN_ROLE()), rd.GUARDIAN_ROLE(), "guardian admin");
        assertEq(rd.getRoleAdmin(rd.POSTER_ROLE()), bytes32(0), "poster admin");
    }

    function test_Views_emptyAtStart() public view {
        assertEq(rd.root(), bytes32(0), "root");
        assertEq(rd.previousRoot(), bytes32(0), "previousRoot");
        assertEq(rd.currentEpoch(), 0, "epoch");
        assertEq(rd.cumulativeTotal(), 0, "total");
        assertEq(rd.totalFunded(), 0, "funded");
        assertEq(rd.claimed(alice), 0, "claimed");
        assertFalse(rd.paused(), "paused");
        (uint64 epoch, bytes32 root, uint256 total, bytes32 dataHash, uint64 validAt) = rd.pendingRoot();
        assertEq(epoch, 0, "pending epoch");
        assertEq(root, bytes32(0), "pending root");
        assertEq(total, 0, "pending total");
        assertEq(dataHash, bytes32(0), "pending dataHash");
        assertEq(validAt, 0, "pending validAt");
    }
}
