// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {RewardDistributor} from "../../src/RewardDistributor.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice `proposeRoot`: every rule of an ordinary proposal, unit and model-checked.
contract ProposeRootTest is DistributorFixture {
    function test_ProposeRoot_stagesPendingRoot() public {
        _fund(t1.total);
        uint64 validAt = uint64(block.timestamp) + PERIOD;
        vm.expectEmit(address(rd));
        emit IRewardDistributor.RootProposed(1, t1.root, t1.total, keccak256("m1"), validAt, "ipfs://m1");
        vm.prank(poster);
        rd.proposeRoot(1, t1.root, t1.total, keccak256("m1"), "ipfs://m1");

        (uint64 epoch, bytes32 root, uint256 total, bytes32 dataHash, uint64 pendingValidAt) =
            rd.pendingRoot();
        assertEq(epoch, 1, "epoch");
        assertEq(root, t1.root, "root");
        assertEq(total, t1.total, "total");
        assertEq(dataHash, keccak256("m1"), "dataHash");
        assertEq(pendingValidAt, validAt, "validAt");
        assertEq(rd.root(), bytes32(0), "not accepted yet");
        assertEq(rd.currentEpoch(), 0, "epoch unchanged");
    }

    function test_ProposeRoot_revertsForNonPoster() public {
        _fund(t1.total);
        address[3] memory others = [admin, guardian, mallory];
        bytes32 role = rd.POSTER_ROLE();
        for (uint256 i; i < others.length; ++i) {
            vm.prank(others[i]);
            vm.expectRevert(_unauthorized(others[i], role));
            rd.proposeRoot(1, t1.root, t1.total, bytes32(0), "");
        }
    }

    function test_ProposeRoot_revertsOnZeroRoot() public {
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.InvalidRoot.selector);
        rd.proposeRoot(1, bytes32(0), 0, bytes32(0), "");
    }

    function test_ProposeRoot_revertsWhileRootPending() public {
        _fund(t1.total);
        _propose(1, t1);
        vm.warp(block.timestamp + PERIOD); // even once the pending root could be accepted
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.RootPending.selector);
        rd.proposeRoot(2, t1.root, t1.total, bytes32(0), "");
    }

    function test_ProposeRoot_revertsWhenInsolvent() public {
        _fund(t1.total - 1);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.Insolvent.selector);
        rd.proposeRoot(1, t1.root, t1.total, bytes32(0), "");
    }

    function test_ProposeRoot_acceptsTotalEqualToFunded() public {
        _fund(t1.total);
        _propose(1, t1);
        (, bytes32 root,,,) = rd.pendingRoot();
        assertEq(root, t1.root, "pending");
    }

    function test_ProposeRoot_revertsWhenEpochNotAfter() public {
        _post(3, t1);
        Tree memory t2 = _tree3(200e18, 50e18, 25e18);
        _fund(t2.total);
        vm.startPrank(poster);
        vm.expectRevert(IRewardDistributor.EpochNotAfter.selector);
        rd.proposeRoot(3, t2.root, t2.total, bytes32(0), "");
        vm.expectRevert(IRewardDistributor.EpochNotAfter.selector);
        rd.proposeRoot(2, t2.root, t2.total, bytes32(0), "");
        rd.proposeRoot(4, t2.root, t2.total, bytes32(0), "");
        vm.stopPrank();
    }

    function test_ProposeRoot_revertsOnEpochZeroFirst() public {
        _fund(t1.total);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.EpochNotAfter.selector);
        rd.proposeRoot(0, t1.root, t1.total, bytes32(0), "");
    }

    function test_ProposeRoot_revertsWhenTotalDecreased() public {
        _post(1, t1);
        Tree memory lower = _tree3(100e18, 50e18, 25e18 - 1);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.TotalDecreased.selector);
        rd.proposeRoot(2, lower.root, lower.total, bytes32(0), "");
    }

    function test_ProposeRoot_equalTotalIsAllowed() public {
        _post(1, t1);
        Tree memory same = _tree3(25e18, 50e18, 100e18);
        _propose(2, same);
        (uint64 epoch,,,,) = rd.pendingRoot();
        assertEq(epoch, 2, "pending epoch");
    }

    function test_ProposeRoot_zeroChallengePeriodAcceptsAtOnce() public {
        RewardDistributor instant = new RewardDistributor(token, 0, poster);
        token.mint(address(this), t1.total);
        token.approve(address(instant), t1.total);
        instant.fund(t1.total);

        vm.expectEmit(address(instant));
        emit IRewardDistributor.RootProposed(
            1, t1.root, t1.total, keccak256("d"), uint64(block.timestamp), "u"
        );
        vm.expectEmit(address(instant));
        emit IRewardDistributor.RootAccepted(1, t1.root, t1.total);
        vm.prank(poster);
        instant.proposeRoot(1, t1.root, t1.total, keccak256("d"), "u");

        assertEq(instant.root(), t1.root, "root");
        assertEq(instant.currentEpoch(), 1, "epoch");
        assertEq(instant.cumulativeTotal(), t1.total, "total");
        (uint64 epoch,,,,) = instant.pendingRoot();
        assertEq(epoch, 0, "nothing pending");
        vm.expectRevert(IRewardDistributor.NoPendingRoot.selector);
        instant.acceptRoot();
        instant.claim(alice, 100e18, _proof(t1, 0));
        assertEq(token.balanceOf(alice), 100e18, "claimable at once");
    }

    function test_ProposeRoot_revertsWhilePaused() public {
        _post(1, t1);
        Tree memory t2 = _tree3(110e18, 50e18, 25e18);
        _fund(t2.total - t1.total);
        _pause();
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.proposeRoot(2, t2.root, t2.total, bytes32(0), "");
    }

    /// @dev The race of version 1: the service checked `paused()`, then the guardian's pause landed
    /// before its ordinary proposal. That proposal must revert, not be staged as a correction.
    function test_ProposeRoot_pauseRaceStagesNothing() public {
        _post(1, t1);
        Tree memory t2 = _tree3(110e18, 50e18, 25e18);
        _fund(t2.total - t1.total);
        assertFalse(rd.paused(), "checked unpaused");
        _pause(); // lands first, in the same block
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.proposeRoot(2, t2.root, t2.total, keccak256("m2"), "ipfs://m2");

        (uint64 epoch, bytes32 root, uint256 total, bytes32 dataHash, uint64 validAt) = rd.pendingRoot();
        assertEq(epoch, 0, "pending epoch");
        assertEq(root, bytes32(0), "pending root");
        assertEq(total, 0, "pending total");
        assertEq(dataHash, bytes32(0), "pending dataHash");
        assertEq(validAt, 0, "pending validAt");
        // Nothing to accept under the pause, and the guardian can unpause at once.
        vm.warp(block.timestamp + PERIOD);
        vm.expectRevert(IRewardDistributor.NoPendingRoot.selector);
        rd.acceptRoot();
        _unpause();
        assertEq(rd.root(), t1.root, "root unchanged");
    }

    /// @dev Model check of every proposal rule against random state and arguments.
    function testFuzz_ProposeRoot_followsTheRules(
        uint64 currentEpoch,
        uint256 currentTotal,
        uint256 funded,
        uint64 epoch,
        uint256 total,
        bool zeroRoot,
        bool pausedFirst
    ) public {
        currentEpoch = uint64(bound(currentEpoch, 1, type(uint64).max - 1));
        currentTotal = bound(currentTotal, 0, MAX_AMOUNT);
        funded = bound(funded, currentTotal, MAX_AMOUNT);
        total = bound(total, 0, MAX_AMOUNT);

        _fund(funded);
        vm.prank(poster);
        rd.proposeRoot(currentEpoch, keccak256("current"), currentTotal, bytes32(0), "");
        _acceptWhenValid();
        if (pausedFirst) _pause();

        bytes32 root = zeroRoot ? bytes32(0) : keccak256(abi.encode(epoch, total));
        bytes4 expected;
        if (pausedFirst) {
            expected = IRewardDistributor.EnforcedPause.selector;
        } else if (zeroRoot) {
            expected = IRewardDistributor.InvalidRoot.selector;
        } else if (total > funded) {
            expected = IRewardDistributor.Insolvent.selector;
        } else if (epoch <= currentEpoch) {
            expected = IRewardDistributor.EpochNotAfter.selector;
        } else if (total < currentTotal) {
            expected = IRewardDistributor.TotalDecreased.selector;
        }

        if (expected != bytes4(0)) vm.expectRevert(expected);
        vm.prank(poster);
        rd.proposeRoot(epoch, root, total, keccak256("data"), "uri");
        if (expected == bytes4(0)) _assertPending(epoch, root, total);
        else _assertNothingPending();
    }
}
