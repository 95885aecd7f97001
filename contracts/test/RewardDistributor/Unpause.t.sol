// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice `unpause`: restarts claims, refused while a correction is pending.
contract UnpauseTest is DistributorFixture {
    function test_Unpause_restartsClaims() public {
        _post(1, t1);
        _pause();
        vm.expectEmit(address(rd));
        emit IRewardDistributor.Unpaused(guardian);
        _unpause();
        assertFalse(rd.paused(), "paused");
        assertEq(rd.root(), t1.root, "root");
        _claim(t1, 0);
        assertEq(token.balanceOf(alice), 100e18, "claimed after unpause");
    }

    function test_Unpause_revertsWhenNotPaused() public {
        vm.prank(guardian);
        vm.expectRevert(IRewardDistributor.ExpectedPause.selector);
        rd.unpause();
    }

    function test_Unpause_revertsForNonGuardian() public {
        _pause();
        address[3] memory others = [admin, poster, mallory];
        bytes32 role = rd.GUARDIAN_ROLE();
        for (uint256 i; i < others.length; ++i) {
            vm.prank(others[i]);
            vm.expectRevert(_unauthorized(others[i], role));
            rd.unpause();
        }
    }

    function test_Unpause_revertsWhileCorrectionPending() public {
        _post(1, t1);
        _pause();
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        _proposeCorrection(1, fix);
        vm.prank(guardian);
        vm.expectRevert(IRewardDistributor.RootPending.selector);
        rd.unpause();
        vm.prank(guardian);
        rd.revokeRoot();
        _unpause();
        assertEq(rd.root(), t1.root, "root unchanged");
    }

    function test_Unpause_allowedOnceCorrectionAccepted() public {
        _post(1, t1);
        _pause();
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        _proposeCorrection(1, fix);
        _acceptWhenValid();
        _unpause();
        assertFalse(rd.paused(), "unpaused");
        _claim(fix, 0);
        assertEq(token.balanceOf(alice), 90e18, "claims the correction");
    }

    function test_Unpause_allowedWithOrdinaryRootPending() public {
        _post(1, t1);
        Tree memory t2 = _tree3(110e18, 50e18, 25e18);
        _fund(t2.total - t1.total);
        _propose(2, t2);
        _pause();
        _unpause();
        _acceptWhenValid();
        assertEq(rd.root(), t2.root, "accepted");
    }
}
