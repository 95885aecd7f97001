// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Test} from "./base/Test.sol";
import {W2EToken} from "../src/W2EToken.sol";

contract W2ETokenTest is Test {
    W2EToken internal token;
    address internal admin;
    address internal minter;
    address internal mallory;

    function setUp() public {
        admin = makeAddr("admin");
        minter = makeAddr("minter");
        mallory = makeAddr("mallory");
        token = new W2EToken(admin);
    }

    function test_Constructor_metadataAndRoles() public view {
        assertEq(token.name(), "Watch To Earn", "name");
        assertEq(token.symbol(), "W2E", "symbol");
        assertEq(token.decimals(), 18, "decimals");
        assertEq(token.totalSupply(), 0, "supply");
        assertEq(token.MINTER_ROLE(), keccak256("MINTER_ROLE"), "role id");
        assertTrue(token.hasRole(0x00, admin), "admin");
        assertTrue(token.hasRole(keccak256("MINTER_ROLE"), admin), "first minter");
    }

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

    function testFuzz_Permit_setsAllowance(uint256 ownerKey, uint256 value, uint256 deadlineOffset) public {
        ownerKey = bound(ownerKey, 1, 2 ** 128);
        deadlineOffset = bound(deadlineOffset, 0, 365 days);
        address owner = vm.addr(ownerKey);
        uint256 deadline = block.timestamp + deadlineOffset;
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
                ),
                owner,
                minter,
                value,
                token.nonces(owner),
                deadline
            )
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ownerKey, digest);
        token.permit(owner, minter, value, deadline, v, r, s);
        assertEq(token.allowance(owner, minter), value, "allowance");
        assertEq(token.nonces(owner), 1, "nonce");
        // The same signature cannot be replayed.
        vm.expectRevert();
        token.permit(owner, minter, value, deadline, v, r, s);
    }
}
