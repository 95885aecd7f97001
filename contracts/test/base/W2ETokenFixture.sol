// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Test} from "./Test.sol";
import {W2EToken} from "../../src/W2EToken.sol";

/// @notice The shared base of the W2EToken tests: a fresh token whose admin is also its first minter.
abstract contract W2ETokenFixture is Test {
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
}
