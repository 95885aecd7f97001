// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {Merkle} from "../base/Merkle.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice `claimMany`: a batch pays as the single claims would, skips what is already paid, and reverts
/// whole on any invalid proof.
contract ClaimManyTest is DistributorFixture {
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
}
