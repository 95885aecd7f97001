// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Test} from "./Test.sol";
import {Merkle} from "./Merkle.sol";
import {W2EToken} from "../../src/W2EToken.sol";
import {RewardDistributor} from "../../src/RewardDistributor.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice The shared base of the RewardDistributor tests: a production-shaped deployment (poster and
/// guardian are separate keys and the admin renounced both), a default tree and the helpers to build
/// trees, post roots and check what is staged.
abstract contract DistributorFixture is Test {
    uint64 internal constant PERIOD = 1 days;
    uint256 internal constant START = 1_767_225_600;
    /// @dev The fuzz tests' ceiling for one amount: far above any real total, far from overflow.
    uint256 internal constant MAX_AMOUNT = 1e36;

    W2EToken internal token;
    RewardDistributor internal rd;

    address internal admin;
    address internal poster;
    address internal guardian;
    address internal funder;
    address internal relayer;
    address internal alice;
    address internal bob;
    address internal carol;
    address internal mallory;

    struct Tree {
        address[] accounts;
        uint256[] amounts;
        bytes32[] leaves;
        bytes32 root;
        uint256 total;
    }

    /// @dev The default tree of the unit tests: alice 100, bob 50, carol 25 tokens.
    Tree internal t1;

    function setUp() public virtual {
        vm.warp(START);
        admin = makeAddr("admin");
        poster = makeAddr("poster");
        guardian = makeAddr("guardian");
        funder = makeAddr("funder");
        relayer = makeAddr("relayer");
        alice = makeAddr("alice");
        bob = makeAddr("bob");
        carol = makeAddr("carol");
        mallory = makeAddr("mallory");

        token = new W2EToken(admin);
        rd = new RewardDistributor(token, PERIOD, admin);

        vm.startPrank(admin);
        token.grantRole(token.MINTER_ROLE(), address(this));
        rd.grantRole(rd.POSTER_ROLE(), poster);
        rd.grantRole(rd.GUARDIAN_ROLE(), guardian);
        rd.renounceRole(rd.POSTER_ROLE(), admin);
        rd.renounceRole(rd.GUARDIAN_ROLE(), admin);
        vm.stopPrank();

        t1 = _tree3(100e18, 50e18, 25e18);
    }

    // ------------------------------------------------------------ trees

    function _tree(address[] memory accounts, uint256[] memory amounts)
        internal
        pure
        returns (Tree memory t)
    {
        t.accounts = accounts;
        t.amounts = amounts;
        t.leaves = Merkle.leaves(accounts, amounts);
        t.root = Merkle.root(t.leaves);
        for (uint256 i; i < amounts.length; ++i) {
            t.total += amounts[i];
        }
    }

    function _tree3(uint256 a, uint256 b, uint256 c) internal view returns (Tree memory) {
        address[] memory accounts = new address[](3);
        (accounts[0], accounts[1], accounts[2]) = (alice, bob, carol);
        uint256[] memory amounts = new uint256[](3);
        (amounts[0], amounts[1], amounts[2]) = (a, b, c);
        return _tree(accounts, amounts);
    }

    function _proof(Tree memory t, uint256 i) internal pure returns (bytes32[] memory) {
        return Merkle.proof(t.leaves, i);
    }

    /// @dev `n` accounts distinct from the named ones, for trees of any size.
    function _accounts(uint256 n) internal pure returns (address[] memory accounts) {
        accounts = new address[](n);
        for (uint256 i; i < n; ++i) {
            accounts[i] = address(uint160(uint256(keccak256(abi.encode("fuzz account", i)))));
        }
    }

    // ------------------------------------------------------------ actions

    function _fund(uint256 amount) internal {
        token.mint(funder, amount);
        vm.startPrank(funder);
        token.approve(address(rd), amount);
        rd.fund(amount);
        vm.stopPrank();
    }

    function _propose(uint64 epoch, Tree memory t) internal {
        vm.prank(poster);
        rd.proposeRoot(epoch, t.root, t.total, keccak256(abi.encode("manifest", epoch)), "ipfs://dataset");
    }

    /// @dev A correction whose claimed amounts were read at the latest mined block, as the service
    /// reads them: one block is mined first, so that block lies inside the pause in force.
    function _proposeCorrection(uint64 epoch, Tree memory t) internal {
        vm.roll(block.number + 1);
        vm.prank(poster);
        rd.proposeCorrection(
            epoch,
            t.root,
            t.total,
            keccak256(abi.encode("correction", epoch)),
            "ipfs://correction",
            uint64(block.number - 1)
        );
    }

    function _acceptWhenValid() internal {
        (,,,, uint64 validAt) = rd.pendingRoot();
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < validAt) vm.warp(validAt);
        vm.prank(relayer);
        rd.acceptRoot();
    }

    /// @dev Funds what the tree needs beyond the current funding, proposes and accepts it.
    function _post(uint64 epoch, Tree memory t) internal {
        if (t.total > rd.totalFunded()) _fund(t.total - rd.totalFunded());
        _propose(epoch, t);
        _acceptWhenValid();
    }

    function _claim(Tree memory t, uint256 i) internal {
        bytes32[] memory proof = _proof(t, i);
        vm.prank(relayer);
        rd.claim(t.accounts[i], t.amounts[i], proof);
    }

    function _pause() internal {
        vm.prank(guardian);
        rd.pause();
    }

    function _unpause() internal {
        vm.prank(guardian);
        rd.unpause();
    }

    // ------------------------------------------------------------ checks

    function _assertNothingPending() internal view {
        (, bytes32 pRoot,,,) = rd.pendingRoot();
        assertEq(pRoot, bytes32(0), "nothing staged");
    }

    /// @dev What the fuzz model checks propose: dataHash keccak256("data"), staged just now.
    function _assertPending(uint64 epoch, bytes32 root, uint256 total) internal view {
        (uint64 pEpoch, bytes32 pRoot, uint256 pTotal, bytes32 pData, uint64 validAt) = rd.pendingRoot();
        assertEq(pEpoch, epoch, "epoch");
        assertEq(pRoot, root, "root");
        assertEq(pTotal, total, "total");
        assertEq(pData, keccak256("data"), "dataHash");
        assertEq(validAt, block.timestamp + PERIOD, "validAt");
    }

    function _unauthorized(address account, bytes32 role) internal pure returns (bytes memory) {
        return abi.encodeWithSignature("AccessControlUnauthorizedAccount(address,bytes32)", account, role);
    }
}
