// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title Gas baseline: the claim logic of Uniswap's MerkleDistributor, rewritten here
/// @notice Not a product contract. scripts/gas-report measures its steady claim next to the
/// RewardDistributor on the same chain, because that is the leanest public Merkle airdrop:
/// immutable token and root, one bit per index, one-shot (non-cumulative) amounts, a
/// single-hash packed leaf, no pause, no root updates.
contract UniswapLogicDistributor {
    address public immutable token;
    bytes32 public immutable merkleRoot;

    /// @dev Packed array of booleans, one bit per leaf index.
    mapping(uint256 => uint256) private claimedBitMap;

    event Claimed(uint256 index, address account, uint256 amount);

    constructor(address token_, bytes32 merkleRoot_) {
        token = token_;
        merkleRoot = merkleRoot_;
    }

    function isClaimed(uint256 index) public view returns (bool) {
        uint256 word = claimedBitMap[index / 256];
        // The bit for `index` is 1 shifted left by its position: the order is intended.
        // forge-lint: disable-next-line(incorrect-shift)
        uint256 mask = 1 << (index % 256);
        return word & mask == mask;
    }

    function _setClaimed(uint256 index) private {
        // forge-lint: disable-next-line(incorrect-shift)
        claimedBitMap[index / 256] = claimedBitMap[index / 256] | (1 << (index % 256));
    }

    function claim(uint256 index, address account, uint256 amount, bytes32[] calldata merkleProof) external {
        require(!isClaimed(index), "MerkleDistributor: Drop already claimed.");

        bytes32 node = keccak256(abi.encodePacked(index, account, amount));
        require(MerkleProof.verify(merkleProof, merkleRoot, node), "MerkleDistributor: Invalid proof.");

        _setClaimed(index);
        require(IERC20(token).transfer(account, amount), "MerkleDistributor: Transfer failed.");

        emit Claimed(index, account, amount);
    }
}
