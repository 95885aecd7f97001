// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @notice `claim`: pays the cumulative leaf minus what was claimed, against the current or previous root.
contract ClaimTest is DistributorFixture {
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
        Tree memory older = _tree3(first, 1, 1);
        _post(1, older);
        _claim(older, 0);
        Tree memory newer = _tree3(first + growth, 1, 1);
        _post(2, newer);
        bytes32[] memory proof = _proof(newer, 0);
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
}
