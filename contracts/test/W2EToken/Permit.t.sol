// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {W2ETokenFixture} from "../base/W2ETokenFixture.sol";

/// @notice `permit`: an EIP-2612 signature sets the allowance.
contract W2ETokenPermitTest is W2ETokenFixture {
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
