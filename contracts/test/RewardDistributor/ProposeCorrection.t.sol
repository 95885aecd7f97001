// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {RewardDistributor} from "../../src/RewardDistributor.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice `proposeCorrection`: staged only under pause, on claimed amounts read inside the pause;
/// corrected leaves never fall below what was claimed.
contract ProposeCorrectionTest is DistributorFixture {
    function test_ProposeCorrection_stagesPendingCorrection() public {
        _post(1, t1);
        _pause();
        vm.roll(block.number + 1);
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        uint64 validAt = uint64(block.timestamp) + PERIOD;
        vm.expectEmit(address(rd));
        emit IRewardDistributor.CorrectionProposed(
            1, fix.root, fix.total, keccak256("c1"), validAt, "ipfs://c1"
        );
        vm.prank(poster);
        rd.proposeCorrection(1, fix.root, fix.total, keccak256("c1"), "ipfs://c1", uint64(block.number - 1));

        (uint64 epoch, bytes32 root, uint256 total, bytes32 dataHash, uint64 pendingValidAt) =
            rd.pendingRoot();
        assertEq(epoch, 1, "epoch");
        assertEq(root, fix.root, "root");
        assertEq(total, fix.total, "total");
        assertEq(dataHash, keccak256("c1"), "dataHash");
        assertEq(pendingValidAt, validAt, "validAt");
        assertEq(rd.root(), t1.root, "not accepted yet");
    }

    function test_ProposeCorrection_allowsAnyEpochAndTotal() public {
        _post(1, t1);
        Tree memory t2 = _tree3(300e18, 50e18, 25e18);
        _post(5, t2);
        _pause();
        Tree memory fix = _tree3(100e18, 10e18, 0);
        _proposeCorrection(2, fix); // lower epoch and lower total
        (uint64 epoch, bytes32 root, uint256 total,,) = rd.pendingRoot();
        assertEq(epoch, 2, "epoch");
        assertEq(root, fix.root, "root");
        assertEq(total, fix.total, "total");
    }

    function test_ProposeCorrection_revertsWhenNotPaused() public {
        _post(1, t1);
        vm.roll(block.number + 1);
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.ExpectedPause.selector);
        rd.proposeCorrection(1, fix.root, fix.total, bytes32(0), "", uint64(block.number - 1));
    }

    function test_ProposeCorrection_revertsAfterUnpause() public {
        _post(1, t1);
        _pause();
        vm.roll(block.number + 1);
        _unpause();
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.ExpectedPause.selector);
        rd.proposeCorrection(1, fix.root, fix.total, bytes32(0), "", uint64(block.number - 1));
    }

    function test_ProposeCorrection_revertsForNonPoster() public {
        _post(1, t1);
        _pause();
        vm.roll(block.number + 1);
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        uint64 claimedAt = uint64(block.number - 1);
        address[3] memory others = [admin, guardian, mallory];
        bytes32 role = rd.POSTER_ROLE();
        for (uint256 i; i < others.length; ++i) {
            vm.prank(others[i]);
            vm.expectRevert(_unauthorized(others[i], role));
            rd.proposeCorrection(1, fix.root, fix.total, bytes32(0), "", claimedAt);
        }
    }

    function test_ProposeCorrection_revertsOnZeroRoot() public {
        _post(1, t1);
        _pause();
        vm.roll(block.number + 1);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.InvalidRoot.selector);
        rd.proposeCorrection(1, bytes32(0), 0, bytes32(0), "", uint64(block.number - 1));
    }

    function test_ProposeCorrection_revertsWhileCorrectionPending() public {
        _post(1, t1);
        _pause();
        _proposeCorrection(1, _tree3(90e18, 50e18, 25e18));
        Tree memory other = _tree3(80e18, 50e18, 25e18);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.RootPending.selector);
        rd.proposeCorrection(1, other.root, other.total, bytes32(0), "", uint64(block.number - 1));
    }

    function test_ProposeCorrection_revertsWhileOrdinaryRootPending() public {
        _post(1, t1);
        Tree memory t2 = _tree3(110e18, 50e18, 25e18);
        _fund(t2.total - t1.total);
        _propose(2, t2);
        _pause();
        vm.roll(block.number + 1);
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.RootPending.selector);
        rd.proposeCorrection(1, fix.root, fix.total, bytes32(0), "", uint64(block.number - 1));
    }

    function test_ProposeCorrection_revertsWhenInsolvent() public {
        _post(1, t1);
        _pause();
        vm.roll(block.number + 1);
        Tree memory big = _tree3(100e18, 50e18, 26e18);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.Insolvent.selector);
        rd.proposeCorrection(1, big.root, big.total, bytes32(0), "", uint64(block.number - 1));
    }

    function test_ProposeCorrection_revertsOnEpochZero() public {
        _post(1, t1);
        _pause();
        vm.roll(block.number + 1);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.EpochNotAfter.selector);
        rd.proposeCorrection(0, t1.root, t1.total, bytes32(0), "", uint64(block.number - 1));
    }

    function test_ProposeCorrection_revertsOnClaimsReadBeforePause() public {
        _post(1, t1);
        vm.roll(100);
        _pause();
        vm.roll(105);
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.StaleClaims.selector);
        rd.proposeCorrection(1, fix.root, fix.total, bytes32(0), "", 99);
    }

    function test_ProposeCorrection_acceptsClaimsReadAtPauseBlock() public {
        _post(1, t1);
        vm.roll(100);
        _pause();
        vm.roll(101);
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        vm.prank(poster);
        rd.proposeCorrection(1, fix.root, fix.total, bytes32(0), "", 100);
        (, bytes32 root,,,) = rd.pendingRoot();
        assertEq(root, fix.root, "staged");
    }

    function test_ProposeCorrection_revertsOnClaimsReadAtCurrentBlock() public {
        _post(1, t1);
        vm.roll(100);
        _pause();
        vm.roll(105);
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.StaleClaims.selector);
        rd.proposeCorrection(1, fix.root, fix.total, bytes32(0), "", 105);
    }

    function test_ProposeCorrection_revertsOnClaimsReadAfterCurrentBlock() public {
        _post(1, t1);
        vm.roll(100);
        _pause();
        vm.roll(105);
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.StaleClaims.selector);
        rd.proposeCorrection(1, fix.root, fix.total, bytes32(0), "", 106);
    }

    /// @dev Same block as the pause: no block of the pause is mined yet, so none can have been read.
    function test_ProposeCorrection_revertsInThePauseBlock() public {
        _post(1, t1);
        vm.roll(100);
        _pause();
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.StaleClaims.selector);
        rd.proposeCorrection(1, fix.root, fix.total, bytes32(0), "", 100);
    }

    function test_ProposeCorrection_waitsEvenWithZeroPeriod() public {
        RewardDistributor instant = new RewardDistributor(token, 0, poster);
        token.mint(address(this), t1.total);
        token.approve(address(instant), t1.total);
        instant.fund(t1.total);
        vm.startPrank(poster);
        instant.pause();
        vm.roll(block.number + 1);
        instant.proposeCorrection(1, t1.root, t1.total, bytes32(0), "", uint64(block.number - 1));
        assertEq(instant.root(), bytes32(0), "staged, not accepted");
        instant.acceptRoot();
        vm.stopPrank();
        assertEq(instant.root(), t1.root, "accepted by acceptRoot");
        assertTrue(instant.paused(), "still paused");
    }

    /// @dev Model check of every correction rule, the claimedAtBlock window included.
    function testFuzz_ProposeCorrection_followsTheRules(
        uint64 currentEpoch,
        uint256 currentTotal,
        uint256 funded,
        uint64 epoch,
        uint256 total,
        bool zeroRoot,
        bool paused,
        uint256 pausedAt,
        uint256 nowBlock,
        uint64 claimedAt
    ) public {
        currentEpoch = uint64(bound(currentEpoch, 1, type(uint64).max - 1));
        currentTotal = bound(currentTotal, 0, MAX_AMOUNT);
        funded = bound(funded, currentTotal, MAX_AMOUNT);
        total = bound(total, 0, MAX_AMOUNT);
        pausedAt = bound(pausedAt, 1, type(uint64).max - 1);
        nowBlock = bound(nowBlock, pausedAt, type(uint64).max);
        // Near the window's edges half the time, so both sides of each bound are hit.
        // forge-lint: disable-next-line(unsafe-typecast)
        if (claimedAt % 4 == 0) claimedAt = uint64(pausedAt - 1 + (claimedAt / 4) % 3);
        // forge-lint: disable-next-line(unsafe-typecast)
        else if (claimedAt % 4 == 1) claimedAt = uint64(nowBlock - 1 + (claimedAt / 4) % 2);

        _fund(funded);
        vm.prank(poster);
        rd.proposeRoot(currentEpoch, keccak256("current"), currentTotal, bytes32(0), "");
        _acceptWhenValid();
        vm.roll(pausedAt);
        if (paused) _pause();
        vm.roll(nowBlock);

        bytes32 root = zeroRoot ? bytes32(0) : keccak256(abi.encode(epoch, total));
        bytes4 expected;
        if (!paused) {
            expected = IRewardDistributor.ExpectedPause.selector;
        } else if (zeroRoot) {
            expected = IRewardDistributor.InvalidRoot.selector;
        } else if (total > funded) {
            expected = IRewardDistributor.Insolvent.selector;
        } else if (epoch == 0) {
            expected = IRewardDistributor.EpochNotAfter.selector;
        } else if (claimedAt < pausedAt || claimedAt >= nowBlock) {
            expected = IRewardDistributor.StaleClaims.selector;
        }

        if (expected != bytes4(0)) vm.expectRevert(expected);
        vm.prank(poster);
        rd.proposeCorrection(epoch, root, total, keccak256("data"), "uri", claimedAt);
        if (expected == bytes4(0)) _assertPending(epoch, root, total);
        else _assertNothingPending();
    }

    function testFuzz_Correction_leavesNeverBelowClaimed(uint256 seed) public {
        address[] memory accounts = _accounts(4);
        uint256[] memory amounts = new uint256[](4);
        for (uint256 i; i < 4; ++i) {
            amounts[i] = 1 + uint256(keccak256(abi.encode(seed, i))) % 1000e18;
        }
        Tree memory bad = _tree(accounts, amounts);
        _post(1, bad);
        for (uint256 i; i < 4; ++i) {
            if (uint256(keccak256(abi.encode(seed, "c", i))) % 2 == 0) _claim(bad, i);
        }
        _pause();
        // Recomputed amounts are lower; the correction's leaf is max(recomputed, claimed).
        uint256[] memory fixed_ = new uint256[](4);
        for (uint256 i; i < 4; ++i) {
            uint256 recomputed = amounts[i] / (2 + uint256(keccak256(abi.encode(seed, "r", i))) % 5);
            uint256 claimed = rd.claimed(accounts[i]);
            fixed_[i] = recomputed > claimed ? recomputed : claimed;
        }
        Tree memory fix = _tree(accounts, fixed_);
        _proposeCorrection(1, fix);
        _acceptWhenValid();
        _unpause();
        uint256 paid;
        for (uint256 i; i < 4; ++i) {
            bytes32[] memory proof = _proof(fix, i);
            if (fixed_[i] > rd.claimed(accounts[i])) rd.claim(accounts[i], fixed_[i], proof);
            bytes32[] memory badProof = _proof(bad, i);
            if (bad.leaves[i] != fix.leaves[i]) {
                vm.expectRevert(IRewardDistributor.InvalidProof.selector);
                rd.claim(accounts[i], amounts[i], badProof);
            }
            paid += token.balanceOf(accounts[i]);
        }
        assertEq(paid, fix.total, "paid exactly the corrected total");
        assertLe(paid, rd.totalFunded(), "solvent");
    }
}
