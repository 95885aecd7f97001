// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {Merkle} from "../base/Merkle.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @notice Attacks: what a thief or a stolen poster key would try, and the guardian's pause-and-correct
/// answer, each scenario end to end across the functions it abuses (kept together: the threat model).
contract AttacksTest is DistributorFixture {
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
}
