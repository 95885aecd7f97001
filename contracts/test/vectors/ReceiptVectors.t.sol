// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Test} from "../base/Test.sol";

/// @notice Cheatcodes beyond the base's Vm, declared here so base/Vm.sol stays as it is.
interface VmJson {
    function parseJsonBytes(string calldata json, string calldata key) external pure returns (bytes memory);
    function parseJsonBool(string calldata json, string calldata key) external pure returns (bool);
    function parseJsonUint(string calldata json, string calldata key) external pure returns (uint256);
}

/// @notice The receipt vectors (tests/vectors/receipts.json, digests and signers from
/// eth-account) against Solidity's own EIP-712 encoding and ecrecover: what players sign and
/// the service verifies is what a contract would verify, to the bit.
contract ReceiptVectorsTest is Test {
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant DELIVERY_TYPEHASH = keccak256(
        "DeliveryReceipt(bytes32 sessionId,address viewer,address node,bytes32 contentId,uint64 startedAt,uint64 bytesServed,uint32 segmentsServed,uint64 issuedAt)"
    );
    bytes32 internal constant VIEW_TYPEHASH = keccak256(
        "ViewReceipt(bytes32 sessionId,address viewer,bytes32 contentId,uint64 startedAt,uint32 watchSeconds,uint64 issuedAt)"
    );
    VmJson internal constant vmJson = VmJson(address(uint160(uint256(keccak256("hevm cheat code")))));

    string internal json;
    bytes32 internal separator;

    function setUp() public {
        json = vm.readFile(string.concat(vm.projectRoot(), "/tests/vectors/receipts.json"));
        separator = keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256("W2E Settlement"),
                keccak256("1"),
                vmJson.parseJsonUint(json, ".domain.chainId"),
                vm.parseJsonAddress(json, ".domain.verifyingContract")
            )
        );
    }

    function test_Vectors_typeHashesAndDomainSeparator() public view {
        assertEq(vm.parseJsonString(json, ".domain.name"), "W2E Settlement", "domain name");
        assertEq(vm.parseJsonString(json, ".domain.version"), "1", "domain version");
        assertEq(DOMAIN_TYPEHASH, vm.parseJsonBytes32(json, ".typeHashes.EIP712Domain"), "domain typehash");
        assertEq(
            DELIVERY_TYPEHASH, vm.parseJsonBytes32(json, ".typeHashes.DeliveryReceipt"), "delivery typehash"
        );
        assertEq(VIEW_TYPEHASH, vm.parseJsonBytes32(json, ".typeHashes.ViewReceipt"), "view typehash");
        assertEq(separator, vm.parseJsonBytes32(json, ".domain.separator"), "separator");
    }

    function test_Vectors_digestAndSignerOfEverySignedCase() public view {
        uint256 signed;
        uint256 matches;
        uint256 deliveries;
        for (uint256 i;; ++i) {
            string memory at = string.concat(".cases[", vm.toString(i), "]");
            if (!vm.keyExistsJson(json, at)) break;
            // Only cases that parse and are canonical carry a digest (the others never reach it).
            if (!vm.keyExistsJson(json, string.concat(at, ".digest"))) continue;
            string memory m = string.concat(at, ".message");
            bool delivery = keccak256(bytes(vm.parseJsonString(json, string.concat(m, ".kind"))))
                == keccak256("delivery");
            bytes32 digest =
                keccak256(abi.encodePacked("\x19\x01", separator, delivery ? _delivery(m) : _view(m)));
            assertEq(
                digest, vm.parseJsonBytes32(json, string.concat(at, ".digest")), string.concat("digest", at)
            );

            address recovered = _recover(digest, vmJson.parseJsonBytes(json, string.concat(m, ".signature")));
            address viewer = vm.parseJsonAddress(json, string.concat(m, ".viewer"));
            bool expected = vmJson.parseJsonBool(json, string.concat(at, ".signerMatches"));
            assertEq(recovered == viewer, expected, string.concat("signer matches", at));
            ++signed;
            if (expected) ++matches;
            if (delivery) ++deliveries;
        }
        // Not vacuous: the vectors hold both outcomes and both receipt types.
        assertGe(signed, 30, "signed cases read");
        assertGe(matches, 20, "cases signed by the viewer");
        assertGe(signed - matches, 5, "cases signed by someone else or for another domain");
        assertGe(signed - deliveries, 3, "view receipts");
    }

    function _delivery(string memory m) internal view returns (bytes32) {
        return keccak256(
            abi.encode(
                DELIVERY_TYPEHASH,
                vm.parseJsonBytes32(json, string.concat(m, ".sessionId")),
                vm.parseJsonAddress(json, string.concat(m, ".viewer")),
                vm.parseJsonAddress(json, string.concat(m, ".node")),
                vm.parseJsonBytes32(json, string.concat(m, ".contentId")),
                uint64(_uint(string.concat(m, ".startedAt"), type(uint64).max)),
                uint64(_uint(string.concat(m, ".bytesServed"), type(uint64).max)),
                uint32(_uint(string.concat(m, ".segmentsServed"), type(uint32).max)),
                uint64(_uint(string.concat(m, ".issuedAt"), type(uint64).max))
            )
        );
    }

    function _view(string memory m) internal view returns (bytes32) {
        return keccak256(
            abi.encode(
                VIEW_TYPEHASH,
                vm.parseJsonBytes32(json, string.concat(m, ".sessionId")),
                vm.parseJsonAddress(json, string.concat(m, ".viewer")),
                vm.parseJsonBytes32(json, string.concat(m, ".contentId")),
                uint64(_uint(string.concat(m, ".startedAt"), type(uint64).max)),
                uint32(_uint(string.concat(m, ".watchSeconds"), type(uint32).max)),
                uint64(_uint(string.concat(m, ".issuedAt"), type(uint64).max))
            )
        );
    }

    /// A decimal string of the vectors as an integer, checked to fit its field before the cast.
    function _uint(string memory key, uint256 max) internal view returns (uint256 value) {
        value = vm.parseUint(vm.parseJsonString(json, key));
        require(value <= max, "value out of its field's range");
    }

    function _recover(bytes32 digest, bytes memory sig) internal pure returns (address) {
        require(sig.length == 65, "signature of 65 bytes");
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(sig, 32))
            s := mload(add(sig, 64))
            v := byte(0, mload(add(sig, 96)))
        }
        return ecrecover(digest, v, r, s);
    }
}
