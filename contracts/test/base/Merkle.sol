// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice Test-side Merkle trees with sorted-pair hashing, as OpenZeppelin MerkleProof verifies
/// them. An odd node is carried up unchanged, so proofs may be shorter than the tree is deep.
library Merkle {
    /// @dev OpenZeppelin StandardMerkleTree leaf for ("address", "uint256").
    function leaf(address account, uint256 amount) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, amount))));
    }

    function hashPair(bytes32 a, bytes32 b) internal pure returns (bytes32) {
        return a < b ? keccak256(abi.encode(a, b)) : keccak256(abi.encode(b, a));
    }

    function leaves(address[] memory accounts, uint256[] memory amounts)
        internal
        pure
        returns (bytes32[] memory out)
    {
        require(accounts.length == amounts.length, "Merkle: lengths");
        out = new bytes32[](accounts.length);
        for (uint256 i; i < accounts.length; ++i) {
            out[i] = leaf(accounts[i], amounts[i]);
        }
    }

    function root(bytes32[] memory nodes) internal pure returns (bytes32) {
        require(nodes.length > 0, "Merkle: empty");
        bytes32[] memory layer = _copy(nodes);
        uint256 n = layer.length;
        while (n > 1) {
            for (uint256 i; i < n / 2; ++i) {
                layer[i] = hashPair(layer[2 * i], layer[2 * i + 1]);
            }
            if (n % 2 == 1) layer[n / 2] = layer[n - 1];
            n = (n + 1) / 2;
        }
        return layer[0];
    }

    function proof(bytes32[] memory nodes, uint256 index) internal pure returns (bytes32[] memory out) {
        require(index < nodes.length, "Merkle: index");
        bytes32[] memory layer = _copy(nodes);
        out = new bytes32[](256);
        uint256 len;
        uint256 n = layer.length;
        while (n > 1) {
            uint256 sibling = index ^ 1;
            if (sibling < n) out[len++] = layer[sibling];
            for (uint256 i; i < n / 2; ++i) {
                layer[i] = hashPair(layer[2 * i], layer[2 * i + 1]);
            }
            if (n % 2 == 1) layer[n / 2] = layer[n - 1];
            n = (n + 1) / 2;
            index /= 2;
        }
        assembly ("memory-safe") {
            mstore(out, len)
        }
    }

    function _copy(bytes32[] memory nodes) private pure returns (bytes32[] memory out) {
        out = new bytes32[](nodes.length);
        for (uint256 i; i < nodes.length; ++i) {
            out[i] = nodes[i];
        }
    }
}
