// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice `pause`: stops claims and acceptance, records the pause block, keeps the root visible.
contract PauseTest is DistributorFixture {
    function test_Pause_stopsClaimsAndKeepsRootVisible() public {
        _post(1, t1);
        vm.expectEmit(address(rd));
        emit IRewardDistributor.Paused(guardian);
        _pause();
        assertTrue(rd.paused(), "paused");
        assertEq(rd.root(), t1.root, "root() still reports the accepted root");
        bytes32[] memory proof = _proof(t1, 0);
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.claim(alice, 100e18, proof);
    }

    function test_Pause_recordsPausedAtBlock() public {
        assertEq(rd.pausedAtBlock(), 0, "before any pause");
        vm.roll(100);
        _pause();
        assertEq(rd.pausedAtBlock(), 100, "pause block");
    }

    function test_Pause_secondPauseUpdatesPausedAtBlock() public {
        vm.roll(100);
        _pause();
        vm.roll(150);
        _unpause();
        assertEq(rd.pausedAtBlock(), 100, "kept after unpause");
        vm.roll(200);
        _pause();
        assertEq(rd.pausedAtBlock(), 200, "second pause");
    }

    function test_Pause_keepsEpochInThePackedSlot() public {
        _post(3, t1);
        vm.roll(100);
        _pause();
        assertEq(rd.currentEpoch(), 3, "epoch");
        assertTrue(rd.paused(), "paused");
        assertEq(rd.pausedAtBlock(), 100, "pause block");
        _unpause();
        assertEq(rd.currentEpoch(), 3, "epoch after unpause");
        assertEq(rd.pausedAtBlock(), 100, "pause block after unpause");
    }

    function test_Pause_revertsForNonGuardian() public {
        address[3] memory others = [admin, poster, mallory];
        bytes32 role = rd.GUARDIAN_ROLE();
        for (uint256 i; i < others.length; ++i) {
            vm.prank(others[i]);
            vm.expectRevert(_unauthorized(others[i], role));
            rd.pause();
        }
    }

    function test_Pause_revertsWhenPaused() public {
        _pause();
        vm.prank(guardian);
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.pause();
    }

    function test_Pause_beforeAnyRoot() public {
        _pause();
        assertTrue(rd.paused(), "paused");
        assertEq(rd.root(), bytes32(0), "no root");
        _unpause();
        assertFalse(rd.paused(), "unpaused");
        assertEq(rd.root(), bytes32(0), "still no root");
    }

    function testFuzz_PauseUnpause_keepsRootAndClaims(uint8 cycles) public {
        cycles = uint8(bound(cycles, 1, 8));
        Tree memory t = _tree3(10e18, 20e18, 30e18);
        _post(1, t);
        for (uint256 c; c < cycles; ++c) {
            _pause();
            assertEq(rd.root(), t.root, "root while paused");
            _unpause();
            assertEq(rd.root(), t.root, "root after unpause");
        }
        _claim(t, 2);
        assertEq(token.balanceOf(carol), 30e18, "claims after cycles");
    }
}
