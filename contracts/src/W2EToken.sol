// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title W2E reward token
/// @notice ERC-20 "Watch To Earn" (W2E), 18 decimals, with ERC-2612 permit. Supply is minted by
/// `MINTER_ROLE` holders (the treasury that funds the RewardDistributor); there is no cap, since
/// emission is a settlement parameter, not a token property.
contract W2EToken is ERC20, ERC20Permit, AccessControl {
    /// @notice Role allowed to mint; `keccak256("MINTER_ROLE")`.
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    /// @param admin Receives `DEFAULT_ADMIN_ROLE` and the first `MINTER_ROLE`.
    constructor(address admin) ERC20("Watch To Earn", "W2E") ERC20Permit("Watch To Earn") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(MINTER_ROLE, admin);
    }

    /// @notice Mints `amount` base units to `to`.
    function mint(address to, uint256 amount) external onlyRole(MINTER_ROLE) {
        _mint(to, amount);
    }
}
