// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "./base/DistributorFixture.sol";
import {Merkle} from "./base/Merkle.sol";
import {RewardDistributor} from "../src/RewardDistributor.sol";
import {IRewardDistributor} from "../src/interfaces/IRewardDistributor.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @notice Unit tests: every function and every revert path of RewardDistributor.
contract RewardDistributorTest is DistributorFixture {
    Tree internal t1;

    function setUp() public override {
        super.setUp();
        t1 = _tree3(100e18, 50e18, 25e18);
    }

    // ================================================================ constructor and views

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

    // ================================================================ fund

    function test_Fund_pullsTokensAndCountsThem() public {
        token.mint(funder, 10e18);
        vm.startPrank(funder);
        token.approve(address(rd), 10e18);
        vm.expectEmit(address(rd));
        emit IRewardDistributor.Funded(funder, 4e18);
        rd.fund(4e18);
        rd.fund(6e18);
        vm.stopPrank();
        assertEq(rd.totalFunded(), 10e18, "totalFunded");
        assertEq(token.balanceOf(address(rd)), 10e18, "balance");
        assertEq(token.balanceOf(funder), 0, "funder balance");
    }

    function test_Fund_revertsWithoutAllowance() public {
        token.mint(funder, 1e18);
        vm.prank(funder);
        vm.expectRevert(
            abi.encodeWithSignature(
                "ERC20InsufficientAllowance(address,uint256,uint256)", address(rd), 0, 1e18
            )
        );
        rd.fund(1e18);
    }

    function test_Fund_directTransferDoesNotCount() public {
        token.mint(address(rd), 1_000e18);
        assertEq(rd.totalFunded(), 0, "totalFunded");
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.Insolvent.selector);
        rd.proposeRoot(1, t1.root, t1.total, bytes32(0), "");
    }

    // ================================================================ proposeRoot

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

    // ================================================================ proposeCorrection

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

    // ================================================================ acceptRoot

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

    // ================================================================ revokeRoot

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

    // ================================================================ pause and unpause

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

    // ================================================================ claim

    function test_Claim_paysLeafToAccountWhoeverSubmits() public {
        _post(1, t1);
        bytes32[] memory proof = _proof(t1, 1);
        vm.expectEmit(address(rd));
        emit IRewardDistributor.Claimed(bob, 50e18, 50e18);
        vm.expectEmit(address(token));
        emit IERC20.Transfer(address(rd), bob, 50e18);
        vm.prank(relayer);
        rd.claim(bob, 50e18, proof);
        assertEq(token.balanceOf(bob), 50e18, "bob paid");
        assertEq(token.balanceOf(relayer), 0, "relayer not paid");
        assertEq(rd.claimed(bob), 50e18, "claimed");
        assertEq(token.balanceOf(address(rd)), t1.total - 50e18, "distributor balance");
    }

    function test_Claim_paysOnlyTheDifference() public {
        _post(1, t1);
        _claim(t1, 0);
        Tree memory t2 = _tree3(130e18, 50e18, 25e18);
        _post(2, t2);
        bytes32[] memory proof = _proof(t2, 0);
        vm.expectEmit(address(rd));
        emit IRewardDistributor.Claimed(alice, 30e18, 130e18);
        rd.claim(alice, 130e18, proof);
        assertEq(token.balanceOf(alice), 130e18, "balance");
        assertEq(rd.claimed(alice), 130e18, "claimed");
    }

    function test_Claim_revertsOnReplay() public {
        _post(1, t1);
        _claim(t1, 0);
        bytes32[] memory proof = _proof(t1, 0);
        vm.expectRevert(IRewardDistributor.NothingToClaim.selector);
        rd.claim(alice, 100e18, proof);
        assertEq(token.balanceOf(alice), 100e18, "paid once");
    }

    function test_Claim_revertsOnWrongAmount() public {
        _post(1, t1);
        bytes32[] memory proof = _proof(t1, 0);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(alice, 100e18 + 1, proof);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(alice, 100e18 - 1, proof);
    }

    function test_Claim_revertsBeforeAnyRoot() public {
        bytes32[] memory proof = _proof(t1, 0);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(alice, 100e18, proof);
    }

    function test_Claim_singleLeafTreeWithEmptyProof() public {
        address[] memory accounts = new address[](1);
        accounts[0] = carol;
        uint256[] memory amounts = new uint256[](1);
        amounts[0] = 7e18;
        Tree memory single = _tree(accounts, amounts);
        _post(1, single);
        rd.claim(carol, 7e18, new bytes32[](0));
        assertEq(token.balanceOf(carol), 7e18, "paid");
    }

    function test_Claim_againstPreviousRootRightAfterNewRoot() public {
        _post(1, t1);
        bytes32[] memory inFlight = _proof(t1, 1); // built against root 1
        Tree memory t2 = _tree3(150e18, 80e18, 25e18);
        _post(2, t2);
        rd.claim(bob, 50e18, inFlight);
        assertEq(token.balanceOf(bob), 50e18, "paid against previous root");
        // The rest comes with a proof against the current root.
        _claim(t2, 1);
        assertEq(token.balanceOf(bob), 80e18, "then the difference");
    }

    function test_Claim_againstPreviousRootRevertsWhilePaused() public {
        _post(1, t1);
        Tree memory t2 = _tree3(150e18, 80e18, 25e18);
        _post(2, t2);
        _pause();
        bytes32[] memory proof = _proof(t1, 1);
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.claim(bob, 50e18, proof);
        _unpause();
        rd.claim(bob, 50e18, proof);
        assertEq(token.balanceOf(bob), 50e18, "paid after unpause");
    }

    function test_Claim_revertsUnderPauseAfterCorrectionAccepted() public {
        _post(1, t1);
        _pause();
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        _proposeCorrection(1, fix);
        _acceptWhenValid();
        bytes32[] memory proof = _proof(fix, 0);
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.claim(alice, 90e18, proof);
    }

    function test_Claim_lowerAmountOfPreviousRootIsNothingToClaim() public {
        _post(1, t1);
        Tree memory t2 = _tree3(150e18, 80e18, 25e18);
        _post(2, t2);
        _claim(t2, 0);
        bytes32[] memory proof = _proof(t1, 0);
        vm.expectRevert(IRewardDistributor.NothingToClaim.selector);
        rd.claim(alice, 100e18, proof);
    }

    function test_Claim_rootTwoBackNoLongerClaims() public {
        _post(1, t1);
        Tree memory t2 = _tree3(150e18, 80e18, 25e18);
        _post(2, t2);
        Tree memory t3 = _tree3(160e18, 90e18, 30e18);
        _post(3, t3);
        bytes32[] memory proof = _proof(t1, 2);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(carol, 25e18, proof);
    }

    // ================================================================ claimMany

    function _batch(Tree memory t, uint256[] memory idx)
        internal
        pure
        returns (address[] memory accounts, uint256[] memory amounts, bytes32[][] memory proofs)
    {
        accounts = new address[](idx.length);
        amounts = new uint256[](idx.length);
        proofs = new bytes32[][](idx.length);
        for (uint256 i; i < idx.length; ++i) {
            accounts[i] = t.accounts[idx[i]];
            amounts[i] = t.amounts[idx[i]];
            proofs[i] = Merkle.proof(t.leaves, idx[i]);
        }
    }

    function _all3() internal pure returns (uint256[] memory idx) {
        idx = new uint256[](3);
        (idx[0], idx[1], idx[2]) = (0, 1, 2);
    }

    function test_ClaimMany_paysEveryEntry() public {
        _post(1, t1);
        (address[] memory a, uint256[] memory v, bytes32[][] memory p) = _batch(t1, _all3());
        vm.expectEmit(address(rd));
        emit IRewardDistributor.Claimed(alice, 100e18, 100e18);
        vm.expectEmit(address(rd));
        emit IRewardDistributor.Claimed(bob, 50e18, 50e18);
        vm.expectEmit(address(rd));
        emit IRewardDistributor.Claimed(carol, 25e18, 25e18);
        vm.prank(relayer);
        rd.claimMany(a, v, p);
        assertEq(token.balanceOf(alice), 100e18, "alice");
        assertEq(token.balanceOf(bob), 50e18, "bob");
        assertEq(token.balanceOf(carol), 25e18, "carol");
        assertEq(token.balanceOf(address(rd)), 0, "all paid");
    }

    function test_ClaimMany_revertsOnLengthMismatch() public {
        _post(1, t1);
        (address[] memory a, uint256[] memory v, bytes32[][] memory p) = _batch(t1, _all3());
        uint256[] memory shortAmounts = new uint256[](2);
        bytes32[][] memory shortProofs = new bytes32[][](2);
        vm.expectRevert(IRewardDistributor.LengthMismatch.selector);
        rd.claimMany(a, shortAmounts, p);
        vm.expectRevert(IRewardDistributor.LengthMismatch.selector);
        rd.claimMany(a, v, shortProofs);
    }

    function test_ClaimMany_revertsWholeCallOnAnyInvalidProof() public {
        _post(1, t1);
        (address[] memory a, uint256[] memory v, bytes32[][] memory p) = _batch(t1, _all3());
        v[2] += 1; // the last entry is forged
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claimMany(a, v, p);
        assertEq(token.balanceOf(alice), 0, "first entry rolled back");
        assertEq(rd.claimed(alice), 0, "claimed rolled back");
    }

    function test_ClaimMany_invalidProofOfSkippedEntryStillReverts() public {
        _post(1, t1);
        _claim(t1, 0);
        (address[] memory a, uint256[] memory v, bytes32[][] memory p) = _batch(t1, _all3());
        v[0] = 1; // alice has claimed 100e18: nothing left at 1, and the proof is wrong
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claimMany(a, v, p);
    }

    function test_ClaimMany_skipsEntriesWithNothingLeft() public {
        _post(1, t1);
        _claim(t1, 1);
        (address[] memory a, uint256[] memory v, bytes32[][] memory p) = _batch(t1, _all3());
        rd.claimMany(a, v, p);
        assertEq(token.balanceOf(alice), 100e18, "alice");
        assertEq(token.balanceOf(bob), 50e18, "bob paid once");
        assertEq(token.balanceOf(carol), 25e18, "carol");
    }

    function test_ClaimMany_allSkippedSucceeds() public {
        _post(1, t1);
        (address[] memory a, uint256[] memory v, bytes32[][] memory p) = _batch(t1, _all3());
        rd.claimMany(a, v, p);
        uint256 before = token.balanceOf(address(rd));
        rd.claimMany(a, v, p);
        assertEq(token.balanceOf(address(rd)), before, "nothing paid");
    }

    function test_ClaimMany_emptyBatchSucceeds() public {
        rd.claimMany(new address[](0), new uint256[](0), new bytes32[][](0));
    }

    function test_ClaimMany_revertsWhilePaused() public {
        _post(1, t1);
        _pause();
        (address[] memory a, uint256[] memory v, bytes32[][] memory p) = _batch(t1, _all3());
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.claimMany(a, v, p);
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.claimMany(new address[](0), new uint256[](0), new bytes32[][](0));
    }

    function test_ClaimMany_revertsUnderPauseAfterCorrectionAccepted() public {
        _post(1, t1);
        _pause();
        Tree memory fix = _tree3(90e18, 50e18, 25e18);
        _proposeCorrection(1, fix);
        _acceptWhenValid();
        (address[] memory a, uint256[] memory v, bytes32[][] memory p) = _batch(fix, _all3());
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.claimMany(a, v, p);
        assertEq(token.balanceOf(alice), 0, "nothing paid");
    }

    function test_ClaimMany_duplicateEntryPaysOnce() public {
        _post(1, t1);
        uint256[] memory idx = new uint256[](2);
        (address[] memory a, uint256[] memory v, bytes32[][] memory p) = _batch(t1, idx); // alice twice
        rd.claimMany(a, v, p);
        assertEq(token.balanceOf(alice), 100e18, "paid once");
    }

    function test_ClaimMany_mixesCurrentAndPreviousRoots() public {
        _post(1, t1);
        Tree memory t2 = _tree3(150e18, 80e18, 40e18);
        _post(2, t2);
        address[] memory a = new address[](2);
        uint256[] memory v = new uint256[](2);
        bytes32[][] memory p = new bytes32[][](2);
        (a[0], v[0], p[0]) = (alice, 100e18, _proof(t1, 0)); // previous root
        (a[1], v[1], p[1]) = (carol, 40e18, _proof(t2, 2)); // current root
        rd.claimMany(a, v, p);
        assertEq(token.balanceOf(alice), 100e18, "alice via previous");
        assertEq(token.balanceOf(carol), 40e18, "carol via current");
    }

    // ================================================================ attacks

    function test_Attack_anotherAccountsProof() public {
        _post(1, t1);
        bytes32[] memory aliceProof = _proof(t1, 0);
        vm.startPrank(mallory);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(mallory, 100e18, aliceProof);
        vm.stopPrank();
        assertEq(token.balanceOf(mallory), 0, "mallory unpaid");
    }

    function test_Attack_replayedClaimPaysNothing() public {
        _post(1, t1);
        _claim(t1, 2);
        // Same calldata again, from anyone, also after a new root that leaves carol's amount.
        Tree memory t2 = _tree3(150e18, 80e18, 25e18);
        _post(2, t2);
        bytes32[] memory proof = _proof(t1, 2);
        vm.prank(mallory);
        vm.expectRevert(IRewardDistributor.NothingToClaim.selector);
        rd.claim(carol, 25e18, proof);
        assertEq(token.balanceOf(carol), 25e18, "paid once");
    }

    /// @dev The classic second-preimage attack: with 64-byte single-hash leaves, an inner node
    /// H(a, b) is also the leaf of (account = a, amount = b). Here the poster's tree happens to
    /// contain a pair whose inner node has that shape; under double hashing it still cannot be
    /// claimed as a leaf.
    function test_Attack_innerNodeUsedAsLeaf() public {
        // Above 2^160, so the amount word sorts after the address word, as in H(a, b).
        uint256 amount = 2 ** 200;
        bytes32 a = bytes32(uint256(uint160(mallory)));
        bytes32 b = bytes32(amount);
        assertTrue(a < b, "pair order");
        bytes32[] memory nodes = new bytes32[](4);
        nodes[0] = a;
        nodes[1] = b;
        nodes[2] = Merkle.leaf(alice, 100e18);
        nodes[3] = Merkle.leaf(bob, 50e18);
        bytes32 root = Merkle.root(nodes);
        bytes32 inner = Merkle.hashPair(a, b);
        bytes32[] memory innerProof = new bytes32[](1);
        innerProof[0] = Merkle.hashPair(nodes[2], nodes[3]);

        // The forgery would pass a verifier that hashes abi.encode(account, amount) once.
        assertEq(keccak256(abi.encode(mallory, amount)), inner, "inner node is a single-hash leaf");
        assertTrue(MerkleProof.verify(innerProof, root, inner), "inner node is in the tree");

        _fund(amount);
        vm.prank(poster);
        rd.proposeRoot(1, root, amount, bytes32(0), "");
        _acceptWhenValid();
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(mallory, amount, innerProof);
        // Honest leaves of the same tree still claim.
        bytes32[] memory aliceProof = Merkle.proof(nodes, 2);
        rd.claim(alice, 100e18, aliceProof);
        assertEq(token.balanceOf(mallory), 0, "mallory unpaid");
    }

    function test_Attack_claimWhilePaused() public {
        _post(1, t1);
        _pause();
        bytes32[] memory proof = _proof(t1, 0);
        vm.prank(mallory);
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.claim(alice, 100e18, proof);
    }

    function test_Attack_acceptWhilePaused() public {
        _fund(t1.total);
        _propose(1, t1);
        _pause();
        vm.warp(block.timestamp + PERIOD);
        vm.prank(mallory);
        vm.expectRevert(IRewardDistributor.EnforcedPause.selector);
        rd.acceptRoot();
        assertEq(rd.root(), bytes32(0), "not accepted");
    }

    function test_Attack_acceptBeforeValidAt() public {
        _fund(t1.total);
        _propose(1, t1);
        vm.prank(mallory);
        vm.expectRevert(IRewardDistributor.TooEarly.selector);
        rd.acceptRoot();
    }

    function test_Attack_proposeWhilePending() public {
        _fund(2 * t1.total);
        _propose(1, t1);
        Tree memory evil = _tree3(1e18, 1e18, t1.total);
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.RootPending.selector);
        rd.proposeRoot(2, evil.root, evil.total, bytes32(0), "");
    }

    function test_Attack_insolventProposal() public {
        _post(1, t1);
        Tree memory t2 = _tree3(1_000e18, 50e18, 25e18);
        token.mint(address(rd), 10_000e18); // sent directly: does not count
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.Insolvent.selector);
        rd.proposeRoot(2, t2.root, t2.total, bytes32(0), "");
    }

    function test_Attack_nonPosterProposal() public {
        _fund(t1.total);
        Tree memory evil = _tree3(0, 0, t1.total);
        bytes32 role = rd.POSTER_ROLE();
        vm.prank(mallory);
        vm.expectRevert(_unauthorized(mallory, role));
        rd.proposeRoot(1, evil.root, evil.total, bytes32(0), "");
    }

    function test_Attack_revokedRootNeverClaims() public {
        _post(1, t1);
        Tree memory evil = _tree3(100e18, 50e18, 25e18);
        evil.accounts[2] = mallory;
        evil = _tree(evil.accounts, evil.amounts);
        _propose(2, evil);
        vm.prank(guardian);
        rd.revokeRoot();
        vm.warp(block.timestamp + 30 days);
        vm.expectRevert(IRewardDistributor.NoPendingRoot.selector);
        rd.acceptRoot();
        bytes32[] memory proof = _proof(evil, 2);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(mallory, 25e18, proof);
        // Nor after later roots are accepted.
        Tree memory t2 = _tree3(110e18, 50e18, 25e18);
        _post(2, t2);
        Tree memory t3 = _tree3(120e18, 50e18, 25e18);
        _post(3, t3);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(mallory, 25e18, proof);
    }

    function test_Attack_zeroRoot() public {
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.InvalidRoot.selector);
        rd.proposeRoot(1, bytes32(0), 0, bytes32(0), "");
        // Nothing verifies against the zero claim slot either.
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(address(0), 0, new bytes32[](0));
    }

    /// @dev A compromised poster key gets a bad root through the window (mallory over-credited);
    /// the guardian pauses, a correction with a lower total is staged and accepted under pause,
    /// and afterwards no proof of the bad root claims, not even as the previous root.
    function test_Attack_correctionReplacesBadRootUnderPause() public {
        _post(1, t1);
        _claim(t1, 0); // alice claimed 100e18 under the good root
        address[] memory accounts = new address[](4);
        (accounts[0], accounts[1], accounts[2], accounts[3]) = (alice, bob, carol, mallory);
        uint256[] memory amounts = new uint256[](4);
        (amounts[0], amounts[1], amounts[2], amounts[3]) = (110e18, 60e18, 30e18, 500e18);
        Tree memory bad = _tree(accounts, amounts);
        _post(2, bad);
        _claim(bad, 0); // alice claims 110e18 before anyone notices

        _pause();
        // Correction: recomputed epoch 2 gives alice 105e18 but she claimed 110e18, so her leaf
        // is max(105e18, 110e18); mallory gets nothing.
        (amounts[0], amounts[1], amounts[2], amounts[3]) = (110e18, 60e18, 30e18, 0);
        Tree memory fix = _tree(accounts, amounts);
        assertLe(fix.total, bad.total, "lower total");
        _proposeCorrection(2, fix);
        _acceptWhenValid();
        assertTrue(rd.paused(), "still paused");
        assertEq(rd.previousRoot(), bytes32(0), "bad root not kept as previous");
        _unpause();

        bytes32[] memory badProof = _proof(bad, 3);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(mallory, 500e18, badProof);
        badProof = _proof(bad, 1);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(bob, 60e18, badProof);
        // The good epoch-1 root was the previous root; the correction dropped it as well.
        bytes32[] memory oldProof = _proof(t1, 1);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(bob, 50e18, oldProof);

        _claim(fix, 1);
        _claim(fix, 2);
        vm.expectRevert(IRewardDistributor.NothingToClaim.selector);
        rd.claim(alice, 110e18, _proof(fix, 0));
        assertEq(token.balanceOf(mallory), 0, "mallory unpaid");
        assertEq(token.balanceOf(bob), 60e18, "bob");
        assertEq(token.balanceOf(carol), 30e18, "carol");
    }

    /// @dev Claimed amounts read during a first pause, a correction built on them, an unpause in
    /// which bob claims more, a second pause: the old reading would give bob a leaf below what
    /// he holds (the total would then undercount what was paid), so it is refused.
    function test_Attack_correctionOnClaimsOfAnEarlierPause() public {
        _post(1, t1);
        Tree memory t2 = _tree3(100e18, 80e18, 25e18);
        _post(2, t2);
        _claim(t1, 1); // bob: 50e18
        vm.roll(100);
        _pause();
        vm.roll(101);
        uint64 readAt = 100; // bob's claimed read as 50e18, inside the first pause
        vm.roll(110);
        _unpause();
        _claim(t2, 1); // bob: 80e18
        vm.roll(120);
        _pause();
        vm.roll(121);
        Tree memory stale = _tree3(100e18, 50e18, 25e18); // bob's leaf from the old reading
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.StaleClaims.selector);
        rd.proposeCorrection(2, stale.root, stale.total, bytes32(0), "", readAt);
        // Read again in this pause: bob's leaf is 80e18 and the correction is staged.
        Tree memory fresh = _tree3(100e18, 80e18, 25e18);
        vm.prank(poster);
        rd.proposeCorrection(2, fresh.root, fresh.total, bytes32(0), "", 120);
        (, bytes32 root,,,) = rd.pendingRoot();
        assertEq(root, fresh.root, "fresh correction staged");
    }

    /// @dev Claimed amounts read before the pause: a claim can land between the reading and the
    /// pause, so such a reading is refused even when nothing changed.
    function test_Attack_correctionOnClaimsReadBeforePause() public {
        _post(1, t1);
        vm.roll(100);
        uint64 readAt = 99;
        _claim(t1, 1); // lands in block 100, before the pause
        _pause();
        vm.roll(101);
        Tree memory stale = _tree3(100e18, 0, 25e18); // bob's claim not seen at block 99
        vm.prank(poster);
        vm.expectRevert(IRewardDistributor.StaleClaims.selector);
        rd.proposeCorrection(1, stale.root, stale.total, bytes32(0), "", readAt);
    }

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
