// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";

/// @notice `grantRole` and `revokeRole`: the guardian role administers itself, so the admin alone cannot
/// remove a guardian.
contract RolesTest is DistributorFixture {
    function test_Attack_adminAloneCannotRemoveGuardian() public {
        bytes32 guardianRole = rd.GUARDIAN_ROLE();
        vm.startPrank(admin);
        vm.expectRevert(_unauthorized(admin, guardianRole));
        rd.revokeRole(guardianRole, guardian);
        vm.expectRevert(_unauthorized(admin, guardianRole));
        rd.grantRole(guardianRole, mallory);
        // The admin still administers the poster role.
        rd.grantRole(rd.POSTER_ROLE(), mallory);
        vm.stopPrank();
        assertTrue(rd.hasRole(guardianRole, guardian), "guardian kept");
        assertFalse(rd.hasRole(guardianRole, mallory), "no new guardian");
        assertTrue(rd.hasRole(rd.POSTER_ROLE(), mallory), "poster granted");
    }

    function test_Guardian_canAddAndRemoveGuardians() public {
        bytes32 guardianRole = rd.GUARDIAN_ROLE();
        address backup = makeAddr("backup");
        vm.startPrank(guardian);
        rd.grantRole(guardianRole, backup);
        vm.stopPrank();
        vm.prank(backup);
        rd.revokeRole(guardianRole, guardian);
        assertFalse(rd.hasRole(guardianRole, guardian), "rotated out");
        assertTrue(rd.hasRole(guardianRole, backup), "backup");
    }
}
