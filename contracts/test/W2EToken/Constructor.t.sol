// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {W2ETokenFixture} from "../base/W2ETokenFixture.sol";

/// @notice `constructor`: metadata and roles.
contract W2ETokenConstructorTest is W2ETokenFixture {
    function test_Constructor_metadataAndRoles() public view {
        assertEq(token.name(), "Watch To Earn", "name");
        assertEq(token.symbol(), "W2E", "symbol");
        assertEq(token.decimals(), 18, "decimals");
        assertEq(token.totalSupply(), 0, "supply");
        assertEq(token.MINTER_ROLE(), keccak256("MINTER_ROLE"), "role id");
        assertTrue(token.hasRole(0x00, admin), "admin");
        assertTrue(token.hasRole(keccak256("MINTER_ROLE"), admin), "first minter");
    }
}
