// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice `revokeRoot`: the guardian drops a pending root.
contract RevokeRootTest is DistributorFixture {
    function test_RevokeRoot_dropsPendingRoot() public {
        _fund(t1.total);
        _propose(1, t1);
        vm.expectEmit(address(rd));
        emit IRewardDistributor.RootRevoked(1, t1.root);
        vm.prank(guardian);
        rd.revokeRoot();
        (uint64 epoch, bytes32 root,,, uint64 validAt) = rd.pendingRoot();
        assertEq(epoch, 0, "epoch");
        assertEq(root, bytes32(0), "root");
        assertEq(validAt, 0, "validAt");
        vm.warp(block.timestamp + PERIOD);
        vm.expectRevert(IRewardDistributor.NoPendingRoot.selector);
        rd.acceptRoot();
    }

    function test_RevokeRoot_worksAfterValidAt() public {
        _fund(t1.total);
        _propose(1, t1);
        vm.warp(block.timestamp + 10 * PERIOD);
        vm.prank(guardian);
        rd.revokeRoot();
        vm.expectRevert(IRewardDistributor.NoPendingRoot.selector);
        rd.acceptRoot();
    }

    function test_RevokeRoot_revertsForNonGuardian() public {
        _fund(t1.total);
        _propose(1, t1);
        address[3] memory others = [admin, poster, mallory];
        bytes32 role = rd.GUARDIAN_ROLE();
        for (uint256 i; i < others.length; ++i) {
            vm.prank(others[i]);
            vm.expectRevert(_unauthorized(others[i], role));
            rd.revokeRoot();
        }
    }

    function test_RevokeRoot_revertsWithoutPendingRoot() public {
        vm.prank(guardian);
        vm.expectRevert(IRewardDistributor.NoPendingRoot.selector);
        rd.revokeRoot();
    }

    function test_RevokeRoot_epochCanBeProposedAgain() public {
        _fund(t1.total);
        _propose(1, t1);
        vm.prank(guardian);
        rd.revokeRoot();
        Tree memory again = _tree3(90e18, 50e18, 25e18);
        _propose(1, again);
        _acceptWhenValid();
        assertEq(rd.root(), again.root, "root");
        assertEq(rd.currentEpoch(), 1, "epoch");
    }
}
