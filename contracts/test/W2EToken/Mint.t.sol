// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {W2ETokenFixture} from "../base/W2ETokenFixture.sol";

/// @notice `mint`: minters only; the admin grants and revokes them.
contract W2ETokenMintTest is W2ETokenFixture {
    function test_Mint_byMinter() public {
        vm.prank(admin);
        token.mint(mallory, 5e18);
        assertEq(token.balanceOf(mallory), 5e18, "balance");
        assertEq(token.totalSupply(), 5e18, "supply");
    }

    function test_Mint_revertsForNonMinter() public {
        bytes32 role = token.MINTER_ROLE();
        vm.prank(mallory);
        vm.expectRevert(
            abi.encodeWithSignature("AccessControlUnauthorizedAccount(address,bytes32)", mallory, role)
        );
        token.mint(mallory, 1);
    }

    function test_Mint_adminGrantsAndRevokesMinter() public {
        bytes32 role = token.MINTER_ROLE();
        vm.prank(admin);
        token.grantRole(role, minter);
        vm.prank(minter);
        token.mint(minter, 1);
        vm.prank(admin);
        token.revokeRole(role, minter);
        vm.prank(minter);
        vm.expectRevert(
            abi.encodeWithSignature("AccessControlUnauthorizedAccount(address,bytes32)", minter, role)
        );
        token.mint(minter, 1);
    }
}
