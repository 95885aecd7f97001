// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IRewardDistributor} from "./interfaces/IRewardDistributor.sol";

/// @title RewardDistributor
/// @notice Holds W2E and pays cumulative rewards against Merkle roots posted by the settlement
/// service (protocol section 7). A root waits `challengePeriod` seconds before it can be
/// accepted, so a watchtower can have the guardian revoke a root that fails the audit.
/// @dev Storage is laid out so that the common claim touches two slots only: it reads
/// `_claimRoot` and reads/writes `claimed[account]`. Everything else (pause flag, previous
/// root, challenge window, solvency) is kept off that path:
/// - pausing moves the accepted root aside into `_pausedRoot` and zeroes `_claimRoot`, so no
///   proof can verify and the pause flag is only read once a proof has failed;
/// - the previous root is only read when the proof fails against the current one;
/// - solvency is checked once per root at proposal, against `totalFunded`, not per claim;
/// - the block of the latest pause (`pausedAtBlock`) is packed with the pause flag, so
///   recording it costs `pause` nothing extra and no claim reads it.
contract RewardDistributor is IRewardDistributor, AccessControl {
    using SafeERC20 for IERC20;

    /// @notice Role allowed to propose roots; `keccak256("POSTER_ROLE")`.
    bytes32 public constant POSTER_ROLE = keccak256("POSTER_ROLE");
    /// @notice Role allowed to revoke, pause and unpause; `keccak256("GUARDIAN_ROLE")`.
    /// It administers itself, so a compromised admin key cannot remove the guardian.
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    /// @inheritdoc IRewardDistributor
    IERC20 public immutable token;
    /// @inheritdoc IRewardDistributor
    uint64 public immutable challengePeriod;

    /// @dev The root claims verify against: the accepted root, or zero while paused.
    bytes32 private _claimRoot;
    /// @dev The accepted root while paused (zero otherwise); `root()` reports it.
    bytes32 private _pausedRoot;
    /// @inheritdoc IRewardDistributor
    bytes32 public previousRoot;

    /// @dev Packed in one slot, none of it read by a good claim: the epoch changes on acceptance,
    /// the flag and the pause block change together in `pause`.
    struct State {
        uint64 currentEpoch;
        bool paused;
        uint64 pausedAtBlock;
    }

    State private _state;
    /// @inheritdoc IRewardDistributor
    uint256 public cumulativeTotal;
    /// @inheritdoc IRewardDistributor
    uint256 public totalFunded;

    /// @dev `claimed(account)` in a one-word struct: a claim takes a storage pointer and hashes
    /// the account's slot once for its read and its write (a plain mapping hashes it twice).
    /// Same slot as a `mapping(address => uint256)` here would have.
    struct Account {
        uint256 claimed;
    }

    mapping(address account => Account) private _accounts;

    /// @dev The staged root. Acceptance and revocation only clear `pending` and leave the other
    /// words in place, so the next proposal rewrites non-zero slots (5,000 gas each) instead of
    /// filling zero slots (22,100 gas each).
    struct Pending {
        uint64 epoch;
        uint64 validAt;
        bool pending;
        bool correction;
        bytes32 root;
        uint256 cumulativeTotal;
        bytes32 dataHash;
    }

    Pending private _pending;

    /// @param token_ The reward token.
    /// @param challengePeriod_ Seconds a proposed root waits before it can be accepted.
    /// @param admin Receives `DEFAULT_ADMIN_ROLE`, `POSTER_ROLE` and `GUARDIAN_ROLE`; a production
    /// deployment hands poster and guardian to separate keys and renounces them here.
    constructor(IERC20 token_, uint64 challengePeriod_, address admin) {
        token = token_;
        challengePeriod = challengePeriod_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(POSTER_ROLE, admin);
        _grantRole(GUARDIAN_ROLE, admin);
        _setRoleAdmin(GUARDIAN_ROLE, GUARDIAN_ROLE);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IRewardDistributor
    function root() external view returns (bytes32) {
        return _state.paused ? _pausedRoot : _claimRoot;
    }

    /// @inheritdoc IRewardDistributor
    function currentEpoch() external view returns (uint64) {
        return _state.currentEpoch;
    }

    /// @inheritdoc IRewardDistributor
    function paused() external view returns (bool) {
        return _state.paused;
    }

    /// @inheritdoc IRewardDistributor
    function claimed(address account) external view returns (uint256) {
        return _accounts[account].claimed;
    }

    /// @inheritdoc IRewardDistributor
    function pausedAtBlock() external view returns (uint64) {
        return _state.pausedAtBlock;
    }

    /// @inheritdoc IRewardDistributor
    function pendingRoot()
        external
        view
        returns (uint64 epoch, bytes32 root_, uint256 cumulativeTotal_, bytes32 dataHash, uint64 validAt)
    {
        Pending storage p = _pending;
        if (p.pending) return (p.epoch, p.root, p.cumulativeTotal, p.dataHash, p.validAt);
    }

    // ---------------------------------------------------------------- funding and roots

    /// @inheritdoc IRewardDistributor
    function fund(uint256 amount) external {
        // Counted before the pull; the pull reverts the whole call if it fails. The token is
        // W2E (no fee on transfer), so the amount received is the amount requested.
        totalFunded += amount;
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Funded(msg.sender, amount);
    }

    /// @inheritdoc IRewardDistributor
    function proposeRoot(
        uint64 epoch,
        bytes32 root_,
        uint256 cumulativeTotal_,
        bytes32 dataHash,
        string calldata dataURI
    ) external onlyRole(POSTER_ROLE) {
        State memory state = _state;
        // A pause that lands before this proposal must not turn it into a correction: those
        // have their own entry point, which names the block their claimed amounts were read at.
        if (state.paused) revert EnforcedPause();
        if (root_ == bytes32(0)) revert InvalidRoot();
        if (_pending.pending) revert RootPending();
        // Solvency is checked here, once per root, so claims never read the funding state.
        if (cumulativeTotal_ > totalFunded) revert Insolvent();
        if (epoch <= state.currentEpoch) revert EpochNotAfter();
        if (cumulativeTotal_ < cumulativeTotal) revert TotalDecreased();

        uint64 validAt = uint64(block.timestamp) + challengePeriod;
        emit RootProposed(epoch, root_, cumulativeTotal_, dataHash, validAt, dataURI);

        if (challengePeriod == 0) {
            // Nothing to wait for: skip the staging writes.
            _accept(epoch, root_, cumulativeTotal_, false);
            return;
        }
        _stage(epoch, validAt, false, root_, cumulativeTotal_, dataHash);
    }

    /// @inheritdoc IRewardDistributor
    function proposeCorrection(
        uint64 epoch,
        bytes32 root_,
        uint256 cumulativeTotal_,
        bytes32 dataHash,
        string calldata dataURI,
        uint64 claimedAtBlock
    ) external onlyRole(POSTER_ROLE) {
        State memory state = _state;
        if (!state.paused) revert ExpectedPause();
        if (root_ == bytes32(0)) revert InvalidRoot();
        if (_pending.pending) revert RootPending();
        // Any total: the leaves are max(recomputed, claimed), but it must still be funded.
        if (cumulativeTotal_ > totalFunded) revert Insolvent();
        // Any epoch: a correction may replace an older root than the latest.
        if (epoch == 0) revert EpochNotAfter();
        // The claimed amounts the leaves were raised to must be read at a mined block of this
        // pause (its own block counts: the pause ends that block's claims). Read earlier, a claim
        // may have landed since above the account's leaf, and what was paid could exceed the
        // correction's total.
        if (claimedAtBlock < state.pausedAtBlock || claimedAtBlock >= block.number) revert StaleClaims();

        uint64 validAt = uint64(block.timestamp) + challengePeriod;
        emit CorrectionProposed(epoch, root_, cumulativeTotal_, dataHash, validAt, dataURI);
        // Staged even with a zero challenge period: `acceptRoot` accepts it under the pause.
        _stage(epoch, validAt, true, root_, cumulativeTotal_, dataHash);
    }

    /// @inheritdoc IRewardDistributor
    function acceptRoot() external {
        Pending storage p = _pending;
        // One read of the packed word for all the checks.
        (uint64 epoch, uint64 validAt, bool isPending, bool correction) =
            (p.epoch, p.validAt, p.pending, p.correction);
        if (!isPending) revert NoPendingRoot();
        // A correction is always accepted under the pause it was proposed in: it can only be
        // proposed while paused, and `unpause` refuses while it is pending.
        if (!correction && _state.paused) revert EnforcedPause();
        // Validators can skew the timestamp by seconds; challenge periods are hours.
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < validAt) revert TooEarly();

        p.pending = false;
        _accept(epoch, p.root, p.cumulativeTotal, correction);
    }

    /// @inheritdoc IRewardDistributor
    function revokeRoot() external onlyRole(GUARDIAN_ROLE) {
        Pending storage p = _pending;
        if (!p.pending) revert NoPendingRoot();
        p.pending = false;
        emit RootRevoked(p.epoch, p.root);
    }

    /// @inheritdoc IRewardDistributor
    function pause() external onlyRole(GUARDIAN_ROLE) {
        State memory state = _state;
        if (state.paused) revert EnforcedPause();
        // Setting the root aside is what stops claims: no proof verifies against zero.
        _pausedRoot = _claimRoot;
        _claimRoot = bytes32(0);
        // One write of the packed slot: the flag and the block a correction's claims date from.
        _state = State({currentEpoch: state.currentEpoch, paused: true, pausedAtBlock: uint64(block.number)});
        emit Paused(msg.sender);
    }

    /// @inheritdoc IRewardDistributor
    function unpause() external onlyRole(GUARDIAN_ROLE) {
        if (!_state.paused) revert ExpectedPause();
        // A correction's leaves are max(recomputed, claimed) as of a block of this pause; claims
        // after an unpause would make it stale. Accept or revoke it first.
        if (_pending.pending && _pending.correction) revert RootPending();
        _claimRoot = _pausedRoot;
        _pausedRoot = bytes32(0);
        _state.paused = false;
        emit Unpaused(msg.sender);
    }

    // ---------------------------------------------------------------- claims

    /// @inheritdoc IRewardDistributor
    function claim(address account, uint256 cumulativeAmount, bytes32[] calldata proof) external {
        bytes32 leaf = _leaf(account, cumulativeAmount);
        if (!MerkleProof.verifyCalldata(proof, _claimRoot, leaf)) _verifyOffPath(proof, leaf);

        Account storage a = _accounts[account];
        uint256 already = a.claimed;
        if (cumulativeAmount <= already) revert NothingToClaim();
        _pay(a, account, cumulativeAmount, already);
    }

    /// @inheritdoc IRewardDistributor
    function claimMany(
        address[] calldata accounts,
        uint256[] calldata cumulativeAmounts,
        bytes32[][] calldata proofs
    ) external {
        uint256 n = accounts.length;
        if (cumulativeAmounts.length != n || proofs.length != n) revert LengthMismatch();
        bytes32 activeRoot = _claimRoot;
        // An empty or all-skipped batch must still not succeed while paused.
        if (activeRoot == bytes32(0) && _state.paused) revert EnforcedPause();

        for (uint256 i; i < n; ++i) {
            address account = accounts[i];
            uint256 cumulativeAmount = cumulativeAmounts[i];
            bytes32 leaf = _leaf(account, cumulativeAmount);
            bytes32[] calldata proof = proofs[i];
            if (!MerkleProof.verifyCalldata(proof, activeRoot, leaf)) _verifyOffPath(proof, leaf);

            Account storage a = _accounts[account];
            uint256 already = a.claimed;
            if (cumulativeAmount > already) _pay(a, account, cumulativeAmount, already);
        }
    }

    // ---------------------------------------------------------------- internals

    /// @dev See `Pending`: after the first proposal these writes rewrite non-zero words.
    function _stage(
        uint64 epoch,
        uint64 validAt,
        bool correction,
        bytes32 root_,
        uint256 cumulativeTotal_,
        bytes32 dataHash
    ) private {
        _pending = Pending({
            epoch: epoch,
            validAt: validAt,
            pending: true,
            correction: correction,
            root: root_,
            cumulativeTotal: cumulativeTotal_,
            dataHash: dataHash
        });
    }

    function _accept(uint64 epoch, bytes32 root_, uint256 cumulativeTotal_, bool correction) private {
        if (correction) {
            // Accepted under pause into the set-aside slot; the bad root must never be
            // claimable again, so it does not become the previous root.
            _pausedRoot = root_;
            previousRoot = bytes32(0);
        } else {
            previousRoot = _claimRoot;
            _claimRoot = root_;
        }
        _state.currentEpoch = epoch;
        cumulativeTotal = cumulativeTotal_;
        emit RootAccepted(epoch, root_, cumulativeTotal_);
    }

    function _pay(Account storage a, address account, uint256 cumulativeAmount, uint256 already) private {
        a.claimed = cumulativeAmount;
        uint256 amount;
        unchecked {
            amount = cumulativeAmount - already; // caller checked cumulativeAmount > already
        }
        emit Claimed(account, amount, cumulativeAmount);
        token.safeTransfer(account, amount);
    }

    /// @dev Reached only when the proof fails against the claimable root: tells a pause apart
    /// from a bad proof and tries the previous root, so neither costs a good claim anything.
    function _verifyOffPath(bytes32[] calldata proof, bytes32 leaf) private view {
        if (_state.paused) revert EnforcedPause();
        bytes32 prev = previousRoot;
        if (prev == bytes32(0) || !MerkleProof.verifyCalldata(proof, prev, leaf)) revert InvalidProof();
    }

    /// @dev OpenZeppelin StandardMerkleTree leaf: keccak256(bytes.concat(keccak256(abi.encode(
    /// account, amount)))). The outer hash has a 32-byte preimage while inner nodes hash 64
    /// bytes, so no inner node can be passed off as a leaf (second preimage).
    function _leaf(address account, uint256 amount) private pure returns (bytes32 leaf) {
        assembly ("memory-safe") {
            mstore(0x00, and(account, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(0x20, amount)
            mstore(0x00, keccak256(0x00, 0x40))
            leaf := keccak256(0x00, 0x20)
        }
    }
}
