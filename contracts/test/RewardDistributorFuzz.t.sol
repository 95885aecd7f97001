// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "./base/DistributorFixture.sol";
import {Merkle} from "./base/Merkle.sol";
import {IRewardDistributor} from "../src/interfaces/IRewardDistributor.sol";

/// @notice Fuzz tests over amounts, claim sequences and proposals.
contract RewardDistributorFuzzTest is DistributorFixture {
    uint256 internal constant MAX_AMOUNT = 1e36;

    function _accounts(uint256 n) internal pure returns (address[] memory accounts) {
        accounts = new address[](n);
        for (uint256 i; i < n; ++i) {
            accounts[i] = address(uint160(uint256(keccak256(abi.encode("fuzz account", i)))));
        }
    }

    // ================================================================ amounts

    function testFuzz_Claim_paysAnyLeafOfAnyAccount(address account, uint256 amount, uint256 others) public {
        vm.assume(account != address(0) && account != address(rd));
        amount = bound(amount, 1, type(uint128).max);
        others = bound(others, 0, 20);
        address[] memory accounts = _accounts(others + 1);
        uint256[] memory amounts = new uint256[](others + 1);
        for (uint256 i; i <= others; ++i) {
            amounts[i] = 1e18 + i;
        }
        uint256 index = others / 2;
        accounts[index] = account;
        amounts[index] = amount;
        Tree memory t = _tree(accounts, amounts);
        _post(1, t);

        uint256 before = token.balanceOf(account);
        bytes32[] memory proof = _proof(t, index);
        vm.prank(relayer);
        rd.claim(account, amount, proof);
        assertEq(token.balanceOf(account) - before, amount, "paid the leaf");
        assertEq(rd.claimed(account), amount, "claimed");
    }

    function testFuzz_Claim_paysExactlyTheCumulativeDelta(uint256 first, uint256 growth) public {
        first = bound(first, 1, MAX_AMOUNT);
        growth = bound(growth, 0, MAX_AMOUNT);
        Tree memory t1 = _tree3(first, 1, 1);
        _post(1, t1);
        _claim(t1, 0);
        Tree memory t2 = _tree3(first + growth, 1, 1);
        _post(2, t2);
        bytes32[] memory proof = _proof(t2, 0);
        if (growth == 0) {
            vm.expectRevert(IRewardDistributor.NothingToClaim.selector);
            rd.claim(alice, first, proof);
        } else {
            vm.expectEmit(address(rd));
            emit IRewardDistributor.Claimed(alice, growth, first + growth);
            rd.claim(alice, first + growth, proof);
        }
        assertEq(token.balanceOf(alice), first + growth, "total paid is the last leaf");
    }

    function testFuzz_Claim_rejectsAnyOtherAmount(uint256 amount, uint256 forged) public {
        amount = bound(amount, 1, MAX_AMOUNT);
        vm.assume(forged != amount);
        Tree memory t = _tree3(amount, 2, 3);
        _post(1, t);
        bytes32[] memory proof = _proof(t, 0);
        vm.expectRevert(IRewardDistributor.InvalidProof.selector);
        rd.claim(alice, forged, proof);
    }

    function testFuzz_Fund_accumulates(uint256 a, uint256 b) public {
        a = bound(a, 0, MAX_AMOUNT);
        b = bound(b, 0, MAX_AMOUNT);
        _fund(a);
        _fund(b);
        assertEq(rd.totalFunded(), a + b, "totalFunded");
        assertEq(token.balanceOf(address(rd)), a + b, "balance");
    }

    // ================================================================ claim sequences

    Tree internal seqPrev;
    Tree internal seqCur;

    /// @dev Random growing roots for 5 accounts, claims against the current or the previous
    /// root in random order: each account's balance is the last leaf it claimed, and never above
    /// its leaf in the current root.
    function testFuzz_ClaimSequence_paysCumulativeOnce(uint256 seed) public {
        uint256 n = 5;
        address[] memory accounts = _accounts(n);
        uint256[] memory amounts = new uint256[](n);
        for (uint64 epoch = 1; epoch <= 6; ++epoch) {
            for (uint256 i; i < n; ++i) {
                amounts[i] += uint256(keccak256(abi.encode(seed, epoch, i))) % 1000e18;
            }
            if (epoch > 1) seqPrev = seqCur;
            seqCur = _tree(accounts, amounts);
            _post(epoch, seqCur);
            for (uint256 k; k < 4; ++k) {
                _sequenceStep(uint256(keccak256(abi.encode(seed, epoch, "claim", k))), epoch > 1);
            }
        }
    }

    function _sequenceStep(uint256 r, bool hasPrev) internal {
        Tree memory t = hasPrev && (r >> 8) % 2 == 0 ? seqPrev : seqCur;
        uint256 i = r % t.accounts.length;
        address account = t.accounts[i];
        uint256 already = rd.claimed(account);
        bytes32[] memory proof = _proof(t, i);
        if (t.amounts[i] <= already) {
            vm.expectRevert(IRewardDistributor.NothingToClaim.selector);
            rd.claim(account, t.amounts[i], proof);
            assertEq(token.balanceOf(account), already, "nothing paid");
        } else {
            rd.claim(account, t.amounts[i], proof);
            assertEq(token.balanceOf(account), t.amounts[i], "balance is the claimed leaf");
        }
        assertEq(rd.claimed(account), token.balanceOf(account), "claimed == paid");
        assertLe(rd.claimed(account), seqCur.amounts[i], "never above the current leaf");
    }

    function testFuzz_ClaimMany_matchesSingleClaims(uint256 seed, uint256 size) public {
        size = bound(size, 0, 12);
        uint256 n = 6;
        uint256[] memory amounts = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            amounts[i] = 1 + uint256(keccak256(abi.encode(seed, i))) % MAX_AMOUNT;
        }
        Tree memory t = _tree(_accounts(n), amounts);
        _post(1, t);
        // Some accounts claimed already; expected balances start from there.
        uint256[] memory expected = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            if (uint256(keccak256(abi.encode(seed, "pre", i))) % 3 == 0) _claim(t, i);
            expected[i] = token.balanceOf(t.accounts[i]);
        }

        uint256[] memory picks = new uint256[](size);
        for (uint256 k; k < size; ++k) {
            picks[k] = uint256(keccak256(abi.encode(seed, "batch", k))) % n; // repeats allowed
            expected[picks[k]] = amounts[picks[k]];
        }
        _claimManyPicks(t, picks);

        uint256 paid;
        for (uint256 i; i < n; ++i) {
            assertEq(token.balanceOf(t.accounts[i]), expected[i], "balance");
            assertEq(rd.claimed(t.accounts[i]), expected[i], "claimed");
            paid += expected[i];
        }
        assertEq(token.balanceOf(address(rd)), t.total - paid, "distributor balance");
    }

    function _claimManyPicks(Tree memory t, uint256[] memory picks) internal {
        address[] memory accounts = new address[](picks.length);
        uint256[] memory amounts = new uint256[](picks.length);
        bytes32[][] memory proofs = new bytes32[][](picks.length);
        for (uint256 k; k < picks.length; ++k) {
            (accounts[k], amounts[k], proofs[k]) =
            (t.accounts[picks[k]], t.amounts[picks[k]], _proof(t, picks[k]));
        }
        vm.prank(relayer);
        rd.claimMany(accounts, amounts, proofs);
    }

    // ================================================================ proposals

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

    function _assertNothingPending() internal view {
        (, bytes32 pRoot,,,) = rd.pendingRoot();
        assertEq(pRoot, bytes32(0), "nothing staged");
    }

    function _assertPending(uint64 epoch, bytes32 root, uint256 total) internal view {
        (uint64 pEpoch, bytes32 pRoot, uint256 pTotal, bytes32 pData, uint64 validAt) = rd.pendingRoot();
        assertEq(pEpoch, epoch, "epoch");
        assertEq(pRoot, root, "root");
        assertEq(pTotal, total, "total");
        assertEq(pData, keccak256("data"), "dataHash");
        assertEq(validAt, block.timestamp + PERIOD, "validAt");
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
