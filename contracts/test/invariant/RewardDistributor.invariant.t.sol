// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Test} from "../base/Test.sol";
import {W2EToken} from "../../src/W2EToken.sol";
import {RewardDistributor} from "../../src/RewardDistributor.sol";
import {DistributorHandler} from "./DistributorHandler.sol";

/// @notice Invariants over random action sequences of DistributorHandler (honest trees only).
contract RewardDistributorInvariantTest is Test {
    W2EToken internal token;
    RewardDistributor internal rd;
    DistributorHandler internal handler;

    function setUp() public {
        vm.warp(1_767_225_600);
        token = new W2EToken(address(this));
        handler = new DistributorHandler(token);
        token.grantRole(token.MINTER_ROLE(), address(handler));
        rd = handler.rd();

        targetContract(address(handler));
        // Repeats weigh an action up: claims, acceptance and unpausing come often enough that
        // runs spend most of their calls with a claimable root.
        bytes4[] memory selectors = new bytes4[](23);
        uint256 n;
        selectors[n++] = handler.fund.selector;
        selectors[n++] = handler.donate.selector;
        selectors[n++] = handler.revoke.selector;
        selectors[n++] = handler.pause.selector;
        selectors[n++] = handler.warp.selector;
        selectors[n++] = handler.forgedClaim.selector;
        selectors[n++] = handler.readClaimed.selector;
        for (uint256 k; k < 2; ++k) {
            selectors[n++] = handler.propose.selector;
            selectors[n++] = handler.proposeCorrection.selector;
            selectors[n++] = handler.claimMany.selector;
        }
        for (uint256 k; k < 3; ++k) {
            selectors[n++] = handler.accept.selector;
            selectors[n++] = handler.unpause.selector;
        }
        for (uint256 k; k < 4; ++k) {
            selectors[n++] = handler.claim.selector;
        }
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    function _sumClaimed() internal view returns (uint256 sum) {
        for (uint256 i; i < handler.N(); ++i) {
            sum += rd.claimed(handler.account(i));
        }
    }

    function invariant_totalPaidNeverExceedsActiveCumulativeTotal() public view {
        assertEq(_sumClaimed(), handler.totalPaid(), "claimed == paid");
        assertLe(handler.totalPaid(), rd.cumulativeTotal(), "paid > active cumulative total");
    }

    function invariant_totalPaidNeverExceedsFunded() public view {
        assertLe(handler.totalPaid(), rd.totalFunded(), "paid > funded");
        // Only claims take tokens out: what is held covers what was funded and not yet paid.
        assertGe(token.balanceOf(address(rd)) + handler.totalPaid(), rd.totalFunded(), "tokens leaked");
    }

    function invariant_claimedNeverDecreases() public view {
        assertFalse(handler.claimedDecreased(), "claimed[a] decreased");
    }

    function invariant_noAccountReceivesMoreThanItsLeaf() public view {
        for (uint256 i; i < handler.N(); ++i) {
            address account = handler.account(i);
            assertEq(token.balanceOf(account), rd.claimed(account), "received != claimed");
            assertLe(token.balanceOf(account), handler.currentLeaf(i), "received more than its leaf");
        }
    }

    function invariant_everyOutcomeMatchesTheModel() public view {
        assertEq(handler.unexpected(), "", "handler saw an unexpected outcome");
    }
}
