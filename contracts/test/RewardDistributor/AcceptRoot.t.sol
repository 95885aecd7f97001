// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice `acceptRoot`: anyone, once the challenge period is over, never while paused.
contract AcceptRootTest is DistributorFixture {
    function test_AcceptRoot_revertsWithoutPendingRoot() public {
        vm.expectRevert(IRewardDistributor.NoPendingRoot.selector);
        rd.acceptRoot();
        _post(1, t1);
        vm.expectRevert(IRewardDistributor.NoPendingRoot.selector);
        rd.acceptRoot();
    }

    function test_AcceptRoot_revertsBeforeValidAt() public {
        _fund(t1.total);
        _propose(1, t1);
        vm.warp(block.timestamp + PERIOD - 1);
        vm.prank(mallory);
        vm.expectRevert(IRewardDistributor.TooEarly.selector);
        rd.acceptRoot();
        vm.warp(block.timestamp + 1);
        vm.prank(mallory);
        rd.acceptRoot();
        assertEq(rd.root(), t1.root, "accepted at validAt");
    }

    function test_AcceptRoot_byAnyoneMakesRootCurrent() public {
        _post(1, t1);
        Tree memory t2 = _tree3(150e18, 60e18, 25e18);
        _fund(t2.total - t1.total);
        _propose(4, t2);
        vm.warp(block.timestamp + PERIOD);
        vm.expectEmit(address(rd));
        emit IRewardDistributor.RootAccepted(4, t2.root, t2.total);
        vm.prank(mallory);
        rd.acceptRoot();

        assertEq(rd.root(), t2.root, "root");
        assertEq(rd.previousRoot(), t1.root, "previousRoot");
        assertEq(rd.currentEpoch(), 4, "epoch");
        assertEq(rd.cumulativeTotal(), t2.total, "total");
        (uint64 epoch, bytes32 root, uint256 total, bytes32 dataHash, uint64 validAt) = rd.pendingRoot();
        assertEq(epoch, 0, "pending epoch cleared");
        assertEq(root, bytes32(0), "pending root cleared");
        assertEq(total, 0, "pending total cleared");
        assertEq(dataHash, bytes32(0), "pending dataHash cleared");
        assertEq(validAt, 0, "pending validAt cleared");
    }

    function test_AcceptRoot_revertsWhilePaused() public {
        _fund(t1.total);
        _propose(1, t1);
        vm.warp(block.timestamp + PERIOD);
        _pause();
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.acceptRoot();
        _unpause();
        rd.acceptRoot();
        assertEq(rd.root(), t1.root, "accepted after unpause");
    }

    function test_AcceptRoot_correctionStaysPausedAndClearsPreviousRoot() public {
        _post(1, t1);
        Tree memory t2 = _tree3(150e18, 60e18, 25e18);
        _post(2, t2);
        assertEq(rd.previousRoot(), t1.root, "previous before");
        _pause();
        Tree memory fix = _tree3(120e18, 60e18, 25e18);
        _proposeCorrection(2, fix);
        vm.warp(block.timestamp + PERIOD - 1);
        vm.expectRevert(IRewardDistributor.TooEarly.selector);
        rd.acceptRoot();
        vm.warp(block.timestamp + 1);
        vm.expectEmit(address(rd));
        emit IRewardDistributor.RootAccepted(2, fix.root, fix.total);
        rd.acceptRoot();

        assertTrue(rd.paused(), "still paused");
        assertEq(rd.root(), fix.root, "root reports the correction");
        assertEq(rd.previousRoot(), bytes32(0), "previous cleared");
        assertEq(rd.currentEpoch(), 2, "epoch");
        assertEq(rd.cumulativeTotal(), fix.total, "total");
        _unpause();
        assertEq(rd.root(), fix.root, "root after unpause");
    }

    function testFuzz_AcceptRoot_onlyFromValidAt(uint256 wait) public {
        wait = bound(wait, 0, 3 * PERIOD);
        Tree memory t = _tree3(1, 2, 3);
        _fund(t.total);
        _propose(1, t);
        vm.warp(block.timestamp + wait);
        if (wait < PERIOD) vm.expectRevert(IRewardDistributor.TooEarly.selector);
        rd.acceptRoot();
        assertEq(rd.root(), wait < PERIOD ? bytes32(0) : t.root, "root");
    }
}
