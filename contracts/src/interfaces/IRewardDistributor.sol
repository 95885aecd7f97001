// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @title RewardDistributor interface (W2E settlement protocol v2, section 7)
/// @notice Pays `cumulativeAmount - claimed[account]` against an accepted Merkle root of
/// OpenZeppelin StandardMerkleTree leaves `(address account, uint256 cumulativeAmount)`.
/// Roots are posted with a challenge window in which the guardian can revoke them.
interface IRewardDistributor {
    /// @notice A root was staged; it can be accepted once `block.timestamp >= validAt`.
    event RootProposed(
        uint64 indexed epoch,
        bytes32 indexed root,
        uint256 cumulativeTotal,
        bytes32 dataHash,
        uint64 validAt,
        string dataURI
    );
    /// @notice A correction was staged under pause (`proposeCorrection`); it can be accepted, still
    /// under that pause, once `block.timestamp >= validAt`.
    event CorrectionProposed(
        uint64 indexed epoch,
        bytes32 indexed root,
        uint256 cumulativeTotal,
        bytes32 dataHash,
        uint64 validAt,
        string dataURI
    );
    /// @notice The pending root became the claimable root.
    event RootAccepted(uint64 indexed epoch, bytes32 indexed root, uint256 cumulativeTotal);
    /// @notice The guardian dropped the pending root.
    event RootRevoked(uint64 indexed epoch, bytes32 indexed root);
    /// @notice `amount` tokens were pulled from `from` and count towards solvency.
    event Funded(address indexed from, uint256 amount);
    /// @notice `amount` tokens were paid to `account`, whose claimed total is now `cumulative`.
    event Claimed(address indexed account, uint256 amount, uint256 cumulative);
    /// @notice Claims and ordinary acceptance were stopped by `account`.
    event Paused(address account);
    /// @notice Claims and ordinary acceptance were restarted by `account`.
    event Unpaused(address account);

    /// @notice The call needs the contract unpaused (same selector as OpenZeppelin Pausable).
    error EnforcedPause();
    /// @notice The call needs the contract paused (same selector as OpenZeppelin Pausable).
    error ExpectedPause();
    /// @notice A zero root was proposed.
    error InvalidRoot();
    /// @notice A root is already pending (or, for `unpause`, a correction): accept or revoke it first.
    error RootPending();
    /// @notice There is no pending root to accept or revoke.
    error NoPendingRoot();
    /// @notice The proposed epoch is not after the current one (or is 0 for a correction).
    error EpochNotAfter();
    /// @notice The proposed cumulative total is below the accepted one.
    error TotalDecreased();
    /// @notice The proposed cumulative total exceeds what was funded.
    error Insolvent();
    /// @notice The pending root's challenge window has not passed.
    error TooEarly();
    /// @notice The proof matches neither the current nor the previous root.
    error InvalidProof();
    /// @notice The account already claimed at least this cumulative amount.
    error NothingToClaim();
    /// @notice `claimMany` arrays differ in length.
    error LengthMismatch();
    /// @notice A correction's `claimedAtBlock` is not a mined block of the current pause: the
    /// claimed amounts it was built on may have changed since. Read them again and re-propose.
    error StaleClaims();

    /// @notice The reward token paid out.
    function token() external view returns (IERC20);

    /// @notice Seconds between a proposal and the earliest acceptance; fixed at deployment.
    function challengePeriod() external view returns (uint64);

    /// @notice The accepted root (also while paused); zero before the first acceptance.
    function root() external view returns (bytes32);

    /// @notice The root accepted before `root()`, still claimable; cleared by a correction.
    function previousRoot() external view returns (bytes32);

    /// @notice Epoch of the accepted root; 0 before the first acceptance.
    function currentEpoch() external view returns (uint64);

    /// @notice Sum of all leaves of the accepted root.
    function cumulativeTotal() external view returns (uint256);

    /// @notice Tokens received through `fund`; tokens sent directly do not count.
    function totalFunded() external view returns (uint256);

    /// @notice Cumulative amount already paid to `account`.
    function claimed(address account) external view returns (uint256);

    /// @notice The staged root; all zero when nothing is pending.
    function pendingRoot()
        external
        view
        returns (uint64 epoch, bytes32 root, uint256 cumulativeTotal, bytes32 dataHash, uint64 validAt);

    /// @notice Whether claims and ordinary acceptance are stopped.
    function paused() external view returns (bool);

    /// @notice Block number of the latest `pause` (0 before the first); kept after `unpause`.
    /// A correction's claimed amounts must be read at or after it, while still paused.
    function pausedAtBlock() external view returns (uint64);

    /// @notice Pulls `amount` tokens from the caller (approval needed) and adds them to `totalFunded`.
    function fund(uint256 amount) external;

    /// @notice Stages an ordinary root (poster only, not while paused: `EnforcedPause`, so a pause
    /// racing a proposal never turns it into a correction). The epoch must be after the current
    /// one and the total not below it. With a zero challenge period it is accepted at once.
    /// @param epoch Last epoch folded into the root.
    /// @param root Root of the StandardMerkleTree of cumulative balances.
    /// @param cumulativeTotal Sum of all leaves; must be covered by `totalFunded`.
    /// @param dataHash keccak256 of the epoch manifest's bytes.
    /// @param dataURI Where the dataset is published (only logged).
    function proposeRoot(
        uint64 epoch,
        bytes32 root,
        uint256 cumulativeTotal,
        bytes32 dataHash,
        string calldata dataURI
    ) external;

    /// @notice Stages a correction (poster only, only while paused: `ExpectedPause`) that replaces
    /// the accepted root: any epoch >= 1 and any total, waits for `validAt` like any root (also
    /// with a zero challenge period) and is accepted under the pause; `unpause` refuses until it
    /// is accepted or revoked.
    /// @param epoch Epoch the correction stands for (>= 1, any relation to `currentEpoch()`).
    /// @param root Root of the corrected tree; leaves are max(recomputed, claimed).
    /// @param cumulativeTotal Sum of all leaves; must be covered by `totalFunded`.
    /// @param dataHash keccak256 of the correction's manifest bytes.
    /// @param dataURI Where the correction's dataset is published (only logged).
    /// @param claimedAtBlock Block at which the claimed amounts in the leaves were read:
    /// `pausedAtBlock() <= claimedAtBlock < block.number`, else `StaleClaims`.
    function proposeCorrection(
        uint64 epoch,
        bytes32 root,
        uint256 cumulativeTotal,
        bytes32 dataHash,
        string calldata dataURI,
        uint64 claimedAtBlock
    ) external;

    /// @notice Makes the pending root claimable once its challenge window passed (anyone).
    function acceptRoot() external;

    /// @notice Drops the pending root (guardian only), also after `validAt`.
    function revokeRoot() external;

    /// @notice Stops every claim, ordinary proposal and ordinary acceptance (guardian only) and
    /// records `pausedAtBlock()`.
    function pause() external;

    /// @notice Restarts claims and acceptance (guardian only); refuses while a correction is
    /// pending, whose leaves assume no claim since its `claimedAtBlock`.
    function unpause() external;

    /// @notice Pays `cumulativeAmount - claimed(account)` to `account` (anyone may call).
    /// @param proof Proof against `root()` or `previousRoot()`.
    function claim(address account, uint256 cumulativeAmount, bytes32[] calldata proof) external;

    /// @notice Batch of `claim`: any invalid proof reverts the whole call; entries with nothing
    /// left are skipped. While paused it reverts `EnforcedPause`, even when empty.
    function claimMany(
        address[] calldata accounts,
        uint256[] calldata cumulativeAmounts,
        bytes32[][] calldata proofs
    ) external;
}
