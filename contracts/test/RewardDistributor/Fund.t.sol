// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice `fund`: pulls tokens and counts them; direct transfers do not count.
contract FundTest is DistributorFixture {
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

    function testFuzz_Fund_accumulates(uint256 a, uint256 b) public {
        a = bound(a, 0, MAX_AMOUNT);
        b = bound(b, 0, MAX_AMOUNT);
        _fund(a);
        _fund(b);
        assertEq(rd.totalFunded(), a + b, "totalFunded");
        assertEq(token.balanceOf(address(rd)), a + b, "balance");
    }
}
