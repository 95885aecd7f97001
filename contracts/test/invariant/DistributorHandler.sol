// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Vm} from "../base/Vm.sol";
import {Merkle} from "../base/Merkle.sol";
import {W2EToken} from "../../src/W2EToken.sol";
import {RewardDistributor} from "../../src/RewardDistributor.sol";
import {IRewardDistributor} from "../../src/interfaces/IRewardDistributor.sol";

/// @notice Drives a RewardDistributor through random funding, honest proposals (growing
/// balances), corrections (leaves max(recomputed, claimed) with the claimed amounts read at some
/// block: fresh in the pause, or an older reading that may be stale), acceptance, revocation,
/// pause cycles, time and blocks, and claims against the current or previous root, plus forged
/// claims. It holds every role, keeps a model of the contract and records the first action whose
/// outcome differed from the model. A stale reading the contract wrongly accepted would give an
/// account a leaf below what it was paid, which the invariants catch.
contract DistributorHandler {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint256 public constant N = 6;
    uint64 public constant PERIOD = 1 hours;
    uint256 internal constant MAX_STEP = 1_000e18;

    W2EToken public immutable token;
    RewardDistributor public immutable rd;
    address[N] internal accounts;

    // ---- model of the contract
    uint256[N] internal cur; // leaves of the accepted root
    uint256[N] internal prev; // leaves of the previous root
    uint256[N] internal pend; // leaves of the pending root
    bool internal hasCur;
    bool internal hasPrev;
    bool internal hasPend;
    bool internal pendIsCorrection;
    uint64 internal pendEpoch;
    uint64 internal pendValidAt;
    uint64 internal epoch;
    bool internal isPaused;
    uint64 internal pausedAt; // block of the latest pause
    uint256[N] internal modelClaimed;
    uint256[N] internal reading; // claimed() as read at block `readAt` (end of that block)
    uint64 internal readAt;
    bool internal hasReading;
    uint256[N] internal lastSeen; // claimed() as read after the previous action

    // ---- ghosts read by the invariants
    uint256 public totalPaid;
    bool public claimedDecreased;
    string public unexpected;

    constructor(W2EToken token_) {
        token = token_;
        rd = new RewardDistributor(token_, PERIOD, address(this));
        for (uint256 i; i < N; ++i) {
            accounts[i] = address(uint160(uint256(keccak256(abi.encode("invariant account", i)))));
        }
    }

    // ================================================================ views for the invariants

    function account(uint256 i) external view returns (address) {
        return accounts[i];
    }

    /// @notice The account's leaf in the accepted root (0 when none).
    function currentLeaf(uint256 i) external view returns (uint256) {
        return cur[i];
    }

    // ================================================================ actions

    function fund(uint256 amount) external {
        amount = _bound(amount, 0, 10 * MAX_STEP);
        _fund(amount);
        _after();
    }

    /// @notice Tokens sent straight to the distributor: must not count towards solvency.
    function donate(uint256 amount) external {
        amount = _bound(amount, 0, 10 * MAX_STEP);
        token.mint(address(rd), amount);
        _after();
    }

    /// @notice An ordinary proposal: growing balances. Under pause it must revert and stage nothing.
    function propose(uint256 seed) external {
        uint256[N] memory next;
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 e = epoch + 1 + uint64(seed % 3); // 0 to 2
        for (uint256 i; i < N; ++i) {
            uint256 r = _rand(seed, "grow", i);
            next[i] = cur[i] + (r % 3 == 0 ? 0 : r % MAX_STEP);
        }
        (uint256 total, uint256 funded) = _maybeFund(next, seed);

        bytes4 expected;
        if (isPaused) expected = IRewardDistributor.EnforcedPause.selector;
        else if (hasPend) expected = IRewardDistributor.RootPending.selector;
        else if (total > funded) expected = IRewardDistributor.Insolvent.selector;

        bytes32 root = Merkle.root(_leaves(next));
        (bool ok, bytes memory ret) = address(rd)
            .call(
                abi.encodeCall(
                    rd.proposeRoot, (e, root, total, keccak256(abi.encode(e, root)), "ipfs://handler")
                )
            );
        if (_check(ok, ret, expected, "propose") && ok) _staged(next, e, false);
        _after();
    }

    /// @notice Reads every claimed amount as of the end of a block, as the service reads them
    /// (eth_call at a mined block) and keeps the reading for a later correction.
    function readClaimed() external {
        _read();
        _after();
    }

    /// @param seed Picks the reading: a fresh one (at the latest mined block), the kept one (maybe
    /// from before the pause in force: stale), or the current, unmined block.
    function proposeCorrection(uint256 seed) external {
        uint256 pick = seed % 4;
        if (pick == 0 || !hasReading) _read();
        uint256[N] memory claimedAsRead = reading;
        uint64 claimedAt = readAt;
        if (pick == 3) {
            claimedAt = uint64(block.number);
            for (uint256 i; i < N; ++i) {
                claimedAsRead[i] = rd.claimed(accounts[i]);
            }
        }

        // Recomputed balances may be lower than the accepted ones, but leaves never go below the
        // claimed amounts as read.
        uint256[N] memory next;
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 e = uint64(1 + seed % (uint256(epoch) + 2)); // at most epoch + 2
        for (uint256 i; i < N; ++i) {
            uint256 recomputed = cur[i] * (_rand(seed, "fix", i) % 101) / 100;
            next[i] = recomputed > claimedAsRead[i] ? recomputed : claimedAsRead[i];
        }
        (uint256 total, uint256 funded) = _maybeFund(next, seed);

        bytes4 expected;
        if (!isPaused) {
            expected = IRewardDistributor.ExpectedPause.selector;
        } else if (hasPend) {
            expected = IRewardDistributor.RootPending.selector;
        } else if (total > funded) {
            expected = IRewardDistributor.Insolvent.selector;
        } else if (claimedAt < pausedAt || claimedAt >= block.number) {
            expected = IRewardDistributor.StaleClaims.selector;
        }

        bytes32 root = Merkle.root(_leaves(next));
        (bool ok, bytes memory ret) = address(rd)
            .call(
                abi.encodeCall(
                    rd.proposeCorrection,
                    (e, root, total, keccak256(abi.encode(e, root)), "ipfs://handler-fix", claimedAt)
                )
            );
        if (_check(ok, ret, expected, "proposeCorrection") && ok) _staged(next, e, true);
        _after();
    }

    function accept(uint256 wait) external {
        vm.warp(block.timestamp + _bound(wait, 0, 2 * PERIOD));
        bytes4 expected;
        if (!hasPend) expected = IRewardDistributor.NoPendingRoot.selector;
        else if (!pendIsCorrection && isPaused) expected = IRewardDistributor.EnforcedPause.selector;
        // forge-lint: disable-next-line(block-timestamp)
        else if (block.timestamp < pendValidAt) expected = IRewardDistributor.TooEarly.selector;

        (bool ok, bytes memory ret) = address(rd).call(abi.encodeCall(rd.acceptRoot, ()));
        if (_check(ok, ret, expected, "accept") && ok) {
            if (pendIsCorrection) {
                hasPrev = false;
            } else {
                prev = cur;
                hasPrev = hasCur;
            }
            cur = pend;
            hasCur = true;
            hasPend = false;
            epoch = pendEpoch;
        }
        _after();
    }

    function revoke() external {
        bytes4 expected = hasPend ? bytes4(0) : IRewardDistributor.NoPendingRoot.selector;
        (bool ok, bytes memory ret) = address(rd).call(abi.encodeCall(rd.revokeRoot, ()));
        if (_check(ok, ret, expected, "revoke") && ok) hasPend = false;
        _after();
    }

    /// @param seed Pauses one call in two: a paused contract makes most other actions revert.
    function pause(uint256 seed) external {
        if (seed % 2 == 1) return;
        bytes4 expected = isPaused ? IRewardDistributor.EnforcedPause.selector : bytes4(0);
        (bool ok, bytes memory ret) = address(rd).call(abi.encodeCall(rd.pause, ()));
        if (_check(ok, ret, expected, "pause") && ok) {
            isPaused = true;
            pausedAt = uint64(block.number);
        }
        _after();
    }

    function unpause() external {
        bytes4 expected;
        if (!isPaused) expected = IRewardDistributor.ExpectedPause.selector;
        else if (hasPend && pendIsCorrection) expected = IRewardDistributor.RootPending.selector;
        (bool ok, bytes memory ret) = address(rd).call(abi.encodeCall(rd.unpause, ()));
        if (_check(ok, ret, expected, "unpause") && ok) isPaused = false;
        _after();
    }

    function warp(uint256 seconds_) external {
        seconds_ = _bound(seconds_, 0, 3 * PERIOD);
        vm.warp(block.timestamp + seconds_);
        vm.roll(block.number + seconds_ / 12);
        _after();
    }

    function claim(uint256 who, bool usePrevious) external {
        uint256 i = who % N;
        bool previous = usePrevious && hasPrev;
        uint256[N] memory leaves = previous ? prev : cur;
        uint256 amount = leaves[i];
        bytes32[] memory proof = Merkle.proof(_leaves(leaves), i);

        bytes4 expected;
        if (isPaused) expected = IRewardDistributor.EnforcedPause.selector;
        else if (!hasCur) expected = IRewardDistributor.InvalidProof.selector;
        else if (amount <= modelClaimed[i]) expected = IRewardDistributor.NothingToClaim.selector;

        (bool ok, bytes memory ret) = address(rd).call(abi.encodeCall(rd.claim, (accounts[i], amount, proof)));
        if (_check(ok, ret, expected, "claim") && ok) _paid(i, amount);
        _after();
    }

    function claimMany(uint256 seed) external {
        uint256 size = seed % 5;
        address[] memory batch = new address[](size);
        uint256[] memory amounts = new uint256[](size);
        bytes32[][] memory proofs = new bytes32[][](size);
        uint256[] memory idx = new uint256[](size);
        for (uint256 k; k < size; ++k) {
            uint256 r = _rand(seed, "batch", k);
            idx[k] = r % N;
            uint256[N] memory leaves = (r >> 8) % 2 == 0 && hasPrev ? prev : cur;
            (batch[k], amounts[k], proofs[k]) =
            (accounts[idx[k]], leaves[idx[k]], Merkle.proof(_leaves(leaves), idx[k]));
        }
        bytes4 expected;
        if (isPaused) expected = IRewardDistributor.EnforcedPause.selector;
        else if (!hasCur && size > 0) expected = IRewardDistributor.InvalidProof.selector;

        (bool ok, bytes memory ret) = address(rd).call(abi.encodeCall(rd.claimMany, (batch, amounts, proofs)));
        if (_check(ok, ret, expected, "claimMany") && ok) {
            for (uint256 k; k < size; ++k) {
                if (amounts[k] > modelClaimed[idx[k]]) _paid(idx[k], amounts[k]);
            }
        }
        _after();
    }

    /// @notice An attacker's claim: a real proof with a raised amount, or another account's.
    function forgedClaim(uint256 who, uint256 extra, bool steal) external {
        uint256 i = who % N;
        uint256 j = (i + 1) % N;
        extra = _bound(extra, 1, MAX_STEP);
        bytes32[] memory proof = Merkle.proof(_leaves(cur), i);
        (address target, uint256 amount) = steal ? (accounts[j], cur[i]) : (accounts[i], cur[i] + extra);
        // With identical leaves for i and j the "stolen" proof would be honest; skip that case.
        if (steal && cur[i] == cur[j]) return;
        bytes4 expected =
            isPaused ? IRewardDistributor.EnforcedPause.selector : IRewardDistributor.InvalidProof.selector;
        (bool ok, bytes memory ret) = address(rd).call(abi.encodeCall(rd.claim, (target, amount, proof)));
        _check(ok, ret, expected, "forgedClaim");
        _after();
    }

    // ================================================================ internals

    /// @dev Mostly funds what the root needs; sometimes leaves it short to see `Insolvent`.
    function _maybeFund(uint256[N] memory next, uint256 seed)
        internal
        returns (uint256 total, uint256 funded)
    {
        for (uint256 i; i < N; ++i) {
            total += next[i];
        }
        funded = rd.totalFunded();
        if (total > funded && (seed >> 128) % 4 != 0) {
            _fund(total - funded);
            funded = total;
        }
    }

    /// @dev One block is mined first, so the reading is the whole state at the end of the block it
    /// names: nothing can land after it in that block.
    function _read() internal {
        vm.roll(block.number + 1);
        for (uint256 i; i < N; ++i) {
            reading[i] = rd.claimed(accounts[i]);
        }
        readAt = uint64(block.number - 1);
        hasReading = true;
    }

    function _staged(uint256[N] memory next, uint64 e, bool correction) internal {
        pend = next;
        hasPend = true;
        pendIsCorrection = correction;
        pendEpoch = e;
        pendValidAt = uint64(block.timestamp) + PERIOD;
    }

    function _fund(uint256 amount) internal {
        token.mint(address(this), amount);
        token.approve(address(rd), amount);
        rd.fund(amount);
    }

    function _paid(uint256 i, uint256 amount) internal {
        totalPaid += amount - modelClaimed[i];
        modelClaimed[i] = amount;
    }

    function _leaves(uint256[N] memory amounts) internal view returns (bytes32[] memory out) {
        out = new bytes32[](N);
        for (uint256 i; i < N; ++i) {
            out[i] = Merkle.leaf(accounts[i], amounts[i]);
        }
    }

    /// @dev True when the outcome matches the model; otherwise records the first mismatch.
    function _check(bool ok, bytes memory ret, bytes4 expected, string memory what) internal returns (bool) {
        // forge-lint: disable-next-line(unsafe-typecast)
        bool matches = expected == bytes4(0) ? ok : (!ok && ret.length >= 4 && bytes4(ret) == expected); // selector
        if (!matches && bytes(unexpected).length == 0) {
            unexpected = string.concat(what, ok ? ": succeeded, expected a revert" : ": unexpected revert");
        }
        return matches;
    }

    /// @dev After every action: the contract's claimed amounts never go down and equal the model,
    /// and the pause block is the model's.
    function _after() internal {
        if (rd.pausedAtBlock() != pausedAt && bytes(unexpected).length == 0) {
            unexpected = "pausedAtBlock differs from the model";
        }
        for (uint256 i; i < N; ++i) {
            uint256 onChain = rd.claimed(accounts[i]);
            if (onChain < lastSeen[i]) claimedDecreased = true;
            lastSeen[i] = onChain;
            if (onChain != modelClaimed[i] && bytes(unexpected).length == 0) {
                unexpected = "claimed differs from the model";
            }
        }
    }

    function _rand(uint256 seed, string memory tag, uint256 i) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, tag, i)));
    }

    function _bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        return min + x % (max - min + 1);
    }
}
