// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {DistributorFixture} from "../base/DistributorFixture.sol";
import {Merkle} from "../base/Merkle.sol";

/// @notice The shared vectors (tests/vectors/merkle.json, built by OpenZeppelin's
/// StandardMerkleTree) claim on the contract: the leaf encoding and proofs the Python service
/// produces are the ones the contract accepts.
contract MerkleVectorsTest is DistributorFixture {
    string internal json;

    function setUp() public override {
        super.setUp();
        json = vm.readFile(string.concat(vm.projectRoot(), "/tests/vectors/merkle.json"));
    }

    function _uint(string memory key) internal view returns (uint256) {
        return vm.parseUint(vm.parseJsonString(json, key));
    }

    function test_Vectors_everyProofClaims() public {
        bytes32 root = vm.parseJsonBytes32(json, ".root");
        uint256 total = _uint(".cumulativeTotal");
        _fund(total);
        vm.prank(poster);
        rd.proposeRoot(1, root, total, bytes32(0), "");
        _acceptWhenValid();

        uint256 count;
        uint256 sum;
        for (;; ++count) {
            string memory at = string.concat(".leaves[", vm.toString(count), "]");
            if (!vm.keyExistsJson(json, at)) break;
            address account = vm.parseJsonAddress(json, string.concat(at, ".account"));
            uint256 amount = _uint(string.concat(at, ".amount"));
            bytes32[] memory proof = vm.parseJsonBytes32Array(json, string.concat(at, ".proof"));
            assertEq(
                Merkle.leaf(account, amount), vm.parseJsonBytes32(json, string.concat(at, ".leaf")), "leaf"
            );
            vm.prank(relayer);
            rd.claim(account, amount, proof);
            assertEq(token.balanceOf(account), amount, "paid the leaf amount");
            assertEq(rd.claimed(account), amount, "claimed");
            sum += amount;
        }
        assertEq(count, 32, "leaves read");
        assertEq(sum, total, "every leaf claimed");
        assertEq(token.balanceOf(address(rd)), 0, "distributor emptied");
    }

    function test_Vectors_singleLeafTreeClaimsWithEmptyProof() public {
        address account = vm.parseJsonAddress(json, ".single.account");
        uint256 amount = _uint(".single.amount");
        bytes32 root = vm.parseJsonBytes32(json, ".single.root");
        assertEq(Merkle.leaf(account, amount), root, "single leaf is the root");
        _fund(amount);
        vm.prank(poster);
        rd.proposeRoot(1, root, amount, bytes32(0), "");
        _acceptWhenValid();
        rd.claim(account, amount, new bytes32[](0));
        assertEq(token.balanceOf(account), amount, "paid");
    }
}
