"""The epoch's Merkle tree, byte for byte as OpenZeppelin's `StandardMerkleTree.of(values,
["address", "uint256"])` (@openzeppelin/merkle-tree 1.0.8) builds, proves and dumps it.

PROTOCOL section 6: the contract, the auditor and any third party with the npm library must
agree on every root, proof and dump byte, so nothing here may drift from OpenZeppelin.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

# tiny-keccak (Rust) costs ~0.4 us a call against ~0.7 us for safe-pysha3 and ~4.3 us for
# pycryptodome; a tree of n leaves needs 3n - 1 calls, and 1,000,000 leaves must build in 3 s.
from tiny_keccak import keccak256 as _keccak

from settlement.errors import InputError

FORMAT = "standard-v1"
LEAF_ENCODING: tuple[str, str] = ("address", "uint256")
UINT256_MAX = (1 << 256) - 1
# PROTOCOL section 6: an epoch where no account has a positive balance proposes this root and
# publishes no dump (OpenZeppelin refuses to build an empty tree, and so do we).
ZERO_ROOT = "0x" + "00" * 32

_ABI_ADDRESS_PAD = bytes(12)
_HEX32 = re.compile(r"0x[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_DUMP_KEYS = {"format", "leafEncoding", "tree", "values"}

# Accounts as 0x-strings or 20 bytes (Mapping is invariant in its key, hence the union).
Balances = Mapping[str, int] | Mapping[bytes, int] | Mapping[str | bytes, int]


def keccak256(data: bytes) -> bytes:
    return _keccak(data)


def encode_leaf(account: str | bytes, amount: int) -> bytes:
    """`abi.encode(address, uint256)`: 12 zero bytes, the 20 address bytes, the amount as 32."""
    return _ABI_ADDRESS_PAD + _address_bytes(account) + _amount(amount).to_bytes(32, "big")


def leaf_hash(account: str | bytes, amount: int) -> bytes:
    # Hashed twice (OpenZeppelin's standardLeafHash) so that no inner node, the hash of 64
    # bytes like an encoded leaf, can be passed off as a leaf: the second-preimage defence.
    return _keccak(_keccak(encode_leaf(account, amount)))


def hash_pair(a: bytes, b: bytes) -> bytes:
    # Sorted pairs make proofs position-free: MerkleProof.sol needs no left/right flags.
    return _keccak(a + b) if a < b else _keccak(b + a)


def process_proof(leaf: bytes | str, proof: Iterable[bytes | str]) -> bytes:
    node = _node_bytes(leaf, "leaf")
    for i, sibling in enumerate(proof):
        node = hash_pair(node, _node_bytes(sibling, f"proof[{i}]"))
    return node


def verify(
    root: bytes | str, account: str | bytes, amount: int, proof: Iterable[bytes | str]
) -> bool:
    """True when `proof` shows leaf (account, amount) under `root`, as MerkleProof.verify would."""
    return process_proof(leaf_hash(account, amount), proof) == _node_bytes(root, "root")


def protocol_values(balances: Balances) -> list[tuple[str, int]]:
    """The tree's values as PROTOCOL section 6 orders them: positive balances only, lowercase
    addresses, ascending address order. Raises on a negative balance (a bug upstream)."""
    if all(type(a) is bytes and len(a) == 20 for a in balances):
        # The close's own balances: one spelling per account, and 20-byte strings sort as
        # their lowercase hex does. Five times faster at 236,000 accounts. (mypy does not
        # narrow through all(): every key was just checked to be bytes.)
        _check_amounts(list(balances.values()))
        return [("0x" + a.hex(), n) for a, n in sorted(balances.items()) if n]  # type: ignore[union-attr]
    out: dict[str, int] = {}
    for account, amount in balances.items():
        address = "0x" + _address_bytes(account).hex()
        if _amount(amount, f"balance of {address}") == 0:
            continue
        if address in out:
            raise InputError(f"account {address} appears twice (differently spelt): merge it first")
        out[address] = amount
    return sorted(out.items())


def tree_for_balances(balances: Balances) -> MerkleTree | None:
    """The epoch's tree, or None when no balance is positive (then the root is ZERO_ROOT)."""
    values = protocol_values(balances)
    return MerkleTree.of(values) if values else None


def root_of(tree: MerkleTree | None) -> str:
    return ZERO_ROOT if tree is None else tree.root


class MerkleTree:
    """An OpenZeppelin StandardMerkleTree of (address, uint256) values.

    Values keep the order they were given in (as OpenZeppelin's `values` do); value `i`'s leaf
    sits at `tree_index(i)` in the node array, whose layout (root first, children of node `k`
    at `2k + 1` and `2k + 2`, leaves sorted by hash from the end) is OpenZeppelin's.
    """

    __slots__ = ("_accounts", "_amounts", "_by_account", "_nodes", "_tree_index")

    def __init__(
        self, accounts: list[str], amounts: list[int], nodes: list[bytes], tree_index: list[int]
    ) -> None:
        # Private: use MerkleTree.of or MerkleTree.load, which validate.
        self._accounts = accounts
        self._amounts = amounts
        self._nodes = nodes
        self._tree_index = tree_index  # by value index, as OpenZeppelin's treeIndex
        self._by_account: dict[str, int] | None = None

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def of(cls, values: Sequence[tuple[str | bytes, int]]) -> MerkleTree:
        """Build the tree of `values` [(address, amount), ...]: at least one, one per account.

        Addresses are hex strings (any case, kept lowercase) or 20 bytes; amounts are ints in
        the uint256 range. PROTOCOL wants `values` in ascending address order (see
        `protocol_values`); the order changes the dump and the value indices, never the root.
        """
        if len(values) == 0:
            raise InputError(
                "cannot build a Merkle tree without values: with no positive balance the epoch "
                f"root is ZERO_ROOT ({ZERO_ROOT}) and no dump is published (tree_for_balances)"
            )
        try:
            given = [a for a, _ in values]
            amounts = [n for _, n in values]
        except (TypeError, ValueError):
            bad = next(i for i, v in enumerate(values) if not _is_pair(v))
            raise InputError(
                f"values[{bad}] is not an (address, amount) pair: {values[bad]!r}"
            ) from None
        accounts = _normalise_addresses(given)
        _check_amounts(amounts)
        _check_unique(accounts)
        return cls(accounts, amounts, *_build(_leaf_hashes(accounts, amounts)))

    @classmethod
    def load(cls, data: bytes | str) -> MerkleTree:
        """Read a "standard-v1" dump and check it as OpenZeppelin's `StandardMerkleTree.load`
        does (format, leaf encoding, every value at its leaf, every node the hash of its
        children). Stricter where OpenZeppelin's own `of` could not have written the input:
        the layout must be the sorted one, amounts decimal strings, one leaf per account."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"tree dump is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise InputError("tree dump must be a JSON object")
        if doc.get("format") != FORMAT:
            raise InputError(f"unknown tree dump format {doc.get('format')!r}: expected {FORMAT!r}")
        if "leafEncoding" not in doc:
            raise InputError('tree dump has no leafEncoding: expected ["address","uint256"]')
        if doc["leafEncoding"] != list(LEAF_ENCODING):
            raise InputError(
                f'unsupported leafEncoding {doc["leafEncoding"]!r}: expected ["address","uint256"]'
            )
        if set(doc) != _DUMP_KEYS:
            raise InputError(f"tree dump has unexpected keys {sorted(set(doc) - _DUMP_KEYS)}")
        nodes = _parse_nodes(doc["tree"])
        accounts, amounts, given_index = _parse_values(doc["values"], len(nodes))
        accounts = _normalise_addresses(accounts)
        _check_unique(accounts)

        leaves = _leaf_hashes(accounts, amounts)
        for i, (leaf, t) in enumerate(zip(leaves, given_index, strict=True)):
            if nodes[t] != leaf:
                raise InputError(
                    f"tree dump: values[{i}] ({accounts[i]}, {amounts[i]}) hashes to "
                    f"0x{leaf.hex()}, but its tree[{t}] is 0x{nodes[t].hex()}"
                )
        tree = cls(accounts, amounts, *_build(leaves))
        tree_index = tree._tree_index
        if tree_index != given_index:
            i = next(
                i for i, (a, b) in enumerate(zip(tree_index, given_index, strict=True)) if a != b
            )
            raise InputError(
                f"tree dump: values[{i}] has treeIndex {given_index[i]} but OpenZeppelin's sorted "
                f"layout puts it at {tree_index[i]} (leaves not sorted by hash)"
            )
        if tree._nodes != nodes:
            # The deepest wrong node is the one whose children are right: name that one.
            k = max(k for k, (a, b) in enumerate(zip(tree._nodes, nodes, strict=True)) if a != b)
            raise InputError(f"tree dump: tree[{k}] is not the hash of its children")
        return tree

    # -- reading ----------------------------------------------------------------------------

    @property
    def root(self) -> str:
        return "0x" + self._nodes[0].hex()

    @property
    def root_bytes(self) -> bytes:
        return self._nodes[0]

    def __len__(self) -> int:
        return len(self._accounts)

    @property
    def values(self) -> list[tuple[str, int]]:
        return list(zip(self._accounts, self._amounts, strict=True))

    @property
    def nodes(self) -> list[str]:
        """The node array in OpenZeppelin's layout, as hex (the dump's `tree`)."""
        return ["0x" + h.hex() for h in self._nodes]

    @property
    def cumulative_total(self) -> int:
        return sum(self._amounts)

    def tree_index(self, index: int) -> int:
        """Where value `index`'s leaf sits in the node array (its dump `treeIndex`)."""
        return self._tree_index[self._check_index(index)]

    def leaf(self, index: int) -> str:
        return "0x" + self._nodes[self.tree_index(index)].hex()

    def index_of(self, account: str | bytes) -> int:
        if self._by_account is None:
            self._by_account = {a: i for i, a in enumerate(self._accounts)}
        address = "0x" + _address_bytes(account).hex()
        try:
            return self._by_account[address]
        except KeyError:
            raise InputError(f"account {address} has no leaf in this tree") from None

    def proof(self, index: int) -> list[str]:
        """The proof of value `index` (OpenZeppelin's `getProof(index)`): siblings, leaf up."""
        k = self.tree_index(index)
        nodes = self._nodes
        out = []
        while k > 0:
            # Odd positions are left children; their sibling is the next node.
            out.append("0x" + nodes[k + 1 if k % 2 else k - 1].hex())
            k = (k - 1) // 2
        return out

    def proof_for(self, account: str | bytes) -> list[str]:
        return self.proof(self.index_of(account))

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.dump_json())
        return out

    def dump_json(self) -> bytes:
        """Exactly the bytes of OpenZeppelin's `JSON.stringify(tree.dump())`."""
        # One C-level hex pass with a separator every 32 bytes instead of 2n - 1 hex() calls.
        tree = b"".join(self._nodes).hex(",", 32).replace(",", '","0x')
        values = ",".join(
            [
                f'{{"value":["{a}","{n}"],"treeIndex":{t}}}'
                for a, n, t in zip(self._accounts, self._amounts, self._tree_index, strict=True)
            ]
        )
        return (
            f'{{"format":"{FORMAT}","leafEncoding":["address","uint256"],'
            f'"tree":["0x{tree}"],"values":[{values}]}}'
        ).encode("ascii")

    def tree_indices(self) -> list[int]:
        """Every value's position in the node array (the dump's `treeIndex`s), by value index.

        Filled by `of` and `load`, as OpenZeppelin's `of` fills them; this is a copy, so the
        caller may change it without moving any leaf.
        """
        return list(self._tree_index)

    def _check_index(self, index: int) -> int:
        if type(index) is not int or not 0 <= index < len(self._accounts):
            raise InputError(f"value index {index!r} out of range 0..{len(self._accounts) - 1}")
        return index


# -- internals -------------------------------------------------------------------------------


def _leaf_hashes(accounts: list[str], amounts: list[int]) -> list[bytes]:
    k = _keccak
    # abi.encode(address, uint256) is (address << 256 | amount) as 64 big-endian bytes; one
    # int parse (which takes the 0x) is cheaper than slicing and joining three byte strings.
    # Callers have checked the hex digits and the amount range.
    return [
        k(k(((int(a, 16) << 256) | n).to_bytes(64, "big")))
        for a, n in zip(accounts, amounts, strict=True)
    ]


def _build(leaves: list[bytes]) -> tuple[list[bytes], list[int]]:
    """The node array of OpenZeppelin's makeMerkleTree over the leaves sorted by hash, and
    each leaf's position in it (OpenZeppelin's treeIndex), by leaf index."""
    n = len(leaves)
    joined = b"".join(leaves)
    order = _ascending(joined, n)
    # OpenZeppelin puts the k-th smallest leaf at tree[2n - 2 - k]: the leaf row descends.
    tree_index = np.empty(n, np.int64)
    tree_index[order] = np.arange(2 * n - 2, n - 2, -1)
    # The leaves in ascending order as one buffer, then sliced into new objects: those lie in
    # memory in row order, where the hashes' own objects in sorted order would be scattered
    # (picking them costs twice the slicing, and every later pass over the row pays again).
    ascending = np.frombuffer(joined, "V32").take(order).tobytes()
    # Nodes from `leaf_parents` on have two leaves as children, and the leaf row descends, so
    # node n - 2 - i hashes leaves 2i and 2i + 1 of the ascending buffer: the sorted pair is
    # already one 64-byte slice, with no comparison and no concatenation. That is half of all
    # inner nodes.
    leaf_parents = (n - 1) // 2
    nodes: list[bytes] = [b""] * leaf_parents
    nodes += [_keccak(ascending[o : o + 64]) for o in range(64 * (n - 2 - leaf_parents), -1, -64)]
    nodes += [ascending[o : o + 32] for o in range(32 * (n - 1), -1, -32)]
    # Fill the other inner nodes one depth at a time, deepest first: the children of the
    # contiguous run lo..hi are the contiguous run 2lo+1..2hi+2, so each depth is two slices
    # and one comprehension instead of a Python-level index walk.
    hi = leaf_parents - 1
    while hi >= 0:
        lo = (1 << ((hi + 1).bit_length() - 1)) - 1
        left = nodes[2 * lo + 1 : 2 * hi + 2 : 2]
        right = nodes[2 * lo + 2 : 2 * hi + 3 : 2]
        nodes[lo : hi + 1] = [
            _keccak(a + b) if a < b else _keccak(b + a) for a, b in zip(left, right, strict=True)
        ]
        hi = lo - 1
    return nodes, tree_index.tolist()


def _ascending(joined: bytes, n: int) -> npt.NDArray[np.intp]:
    """The indices of the n 32-byte hashes in `joined`, by ascending hash."""
    # numpy sorts the first 8 bytes of each hash as one uint64 key, and the permutation it
    # returns gives the treeIndex table too: 0.2 s at 1,000,000 leaves with the buffers
    # around it, where sorting the bytes objects took 0.3 s and finding each leaf's place in
    # the sorted row again 0.8 s more.
    words = np.frombuffer(joined, ">u8").reshape(n, 4)
    first = words[:, 0].astype(np.uint64)
    order = np.argsort(first)
    ranked = first[order]
    if (ranked[1:] == ranked[:-1]).any():
        # Two hashes share their first 8 bytes (odds about 3e-8 at 1,000,000 leaves): sort on
        # all 32 bytes as four keys instead (lexsort sorts by its last key first). No two
        # leaves are equal: that would need a repeated account, which callers reject.
        order = np.lexsort(words.T[::-1])
    return order


def _normalise_addresses(accounts: list[Any]) -> list[str]:
    """Lowercase 0x-strings of 40 hex digits; errors name the culprit.

    Checked in bulk (one join, a few C-level scans) because a per-item check would cost a
    third of the time of hashing a 1,000,000-leaf tree.
    """
    n = len(accounts)
    try:
        joined = "".join(accounts)
    except TypeError:
        accounts = [_address_str(a, i) for i, a in enumerate(accounts)]
        joined = "".join(accounts)
    if set(map(len, accounts)) != {42} or not joined.isascii():
        _raise_bad_address(accounts)
    if joined[0::42] != "0" * n or joined[1::42] != "x" * n:
        _raise_bad_address(accounts)
    # Deleting the hex digits must leave only the prefixes' x (bytes.translate is one C pass;
    # str.islower and str.lower walk Unicode tables and cost as much as the hashing's tenth).
    ascii_bytes = joined.encode("ascii")
    if ascii_bytes.translate(None, b"0123456789abcdef") != b"x" * n:
        if ascii_bytes.translate(None, b"0123456789abcdefABCDEF") != b"x" * n:
            _raise_bad_address(accounts)
        accounts = [a.lower() for a in accounts]
    return accounts


def _address_str(account: Any, i: int) -> str:
    if isinstance(account, bytes | bytearray):
        if len(account) != 20:
            raise InputError(f"values[{i}]: an address has 20 bytes, got {len(account)}")
        return "0x" + bytes(account).hex()
    if isinstance(account, str):
        return account
    raise InputError(f"values[{i}]: address must be a hex string or 20 bytes, got {account!r}")


def _raise_bad_address(accounts: list[str]) -> None:
    for i, a in enumerate(accounts):
        _address_bytes(a, f"values[{i}]")
    raise AssertionError("unreachable: some address failed the bulk check")


def _address_bytes(account: str | bytes, where: str = "address") -> bytes:
    if isinstance(account, bytes | bytearray):
        if len(account) != 20:
            raise InputError(f"{where}: an address has 20 bytes, got {len(account)}")
        return bytes(account)
    if (
        isinstance(account, str)
        and len(account) == 42
        and account[:2] == "0x"
        and all(c in "0123456789abcdefABCDEF" for c in account[2:])
    ):
        return bytes.fromhex(account[2:])
    raise InputError(f"{where}: not an address (0x and 40 hex digits): {account!r}")


def _amount(amount: Any, where: str = "amount") -> int:
    if type(amount) is not int:
        raise InputError(
            f"{where}: must be an int of base units, got {type(amount).__name__} {amount!r}"
        )
    if not 0 <= amount <= UINT256_MAX:
        raise InputError(f"{where}: {amount} is outside the uint256 range")
    return amount


def _check_amounts(amounts: list[Any]) -> None:
    # Bulk first: exact ints only (no bool, no float), then the range via min/max.
    if set(map(type, amounts)) != {int} or min(amounts) < 0 or max(amounts) > UINT256_MAX:
        for i, n in enumerate(amounts):
            _amount(n, f"values[{i}] amount")


def _check_unique(accounts: list[str]) -> None:
    # PROTOCOL order (ascending) proves uniqueness in one pass; otherwise fall back to a set.
    if all(map(operator.lt, accounts, accounts[1:])) or len(set(accounts)) == len(accounts):
        return
    seen: set[str] = set()
    for i, a in enumerate(accounts):
        if a in seen:
            raise InputError(
                f"values[{i}]: account {a} has a leaf already; the contract keeps one "
                "cumulative amount per account, so merge its amounts first"
            )
        seen.add(a)


def _node_bytes(node: bytes | str, where: str) -> bytes:
    if isinstance(node, bytes | bytearray) and len(node) == 32:
        return bytes(node)
    if isinstance(node, str) and len(node) == 66 and _HEX32.fullmatch(node.lower()):
        return bytes.fromhex(node[2:])
    raise InputError(f"{where}: expected 32 bytes or 0x and 64 hex digits, got {node!r}")


def _parse_nodes(tree: Any) -> list[bytes]:
    if not isinstance(tree, list) or not tree or len(tree) % 2 == 0:
        raise InputError("tree dump: tree must be a non-empty list of odd length (2n - 1 nodes)")
    n = len(tree)
    if set(map(type, tree)) == {str} and set(map(len, tree)) == {66}:
        joined = "".join(tree)
        if joined[0::66] == "0" * n and joined[1::66] == "x" * n and joined.count("x") == n:
            hex_digits = joined.replace("0x", "")
            # Lowercase only: OpenZeppelin compares leaves to its lowercase hashes as strings.
            if hex_digits == hex_digits.lower():
                try:
                    raw = bytes.fromhex(hex_digits)
                except ValueError:
                    raw = b""
                if len(raw) == 32 * n:
                    return [raw[o : o + 32] for o in range(0, 32 * n, 32)]
    for k, node in enumerate(tree):
        if not (isinstance(node, str) and _HEX32.fullmatch(node)):
            raise InputError(
                f"tree dump: tree[{k}] is not 0x and 64 lowercase hex digits: {node!r}"
            )
    raise AssertionError("unreachable: some node failed the bulk check")


def _parse_values(values: Any, size: int) -> tuple[list[Any], list[int], list[int]]:
    n = (size + 1) // 2
    if not isinstance(values, list) or len(values) != n:
        raise InputError(f"tree dump: a tree of {size} nodes needs a list of {n} values")
    accounts: list[Any] = []
    amounts: list[int] = []
    tree_index: list[int] = []
    for i, entry in enumerate(values):
        if not (isinstance(entry, dict) and entry.keys() == {"value", "treeIndex"}):
            raise InputError(f'tree dump: values[{i}] must be {{"value": [...], "treeIndex": k}}')
        value, t = entry["value"], entry["treeIndex"]
        if not (isinstance(value, list) and len(value) == 2):
            raise InputError(f"tree dump: values[{i}].value must be [address, amount]")
        account, amount = value
        # 78 digits hold any uint256; the bound also keeps int() away from huge strings.
        if not (isinstance(amount, str) and len(amount) <= 78 and _DECIMAL.fullmatch(amount)):
            raise InputError(
                f"tree dump: values[{i}] amount must be a decimal string of a uint256, got {amount!r:.90}"
            )
        if type(t) is not int or not n - 1 <= t < size:
            raise InputError(f"tree dump: values[{i}].treeIndex {t!r} is not a leaf position")
        accounts.append(account)
        amounts.append(_amount(int(amount), f"tree dump: values[{i}] amount"))
        tree_index.append(t)
    return accounts, amounts, tree_index


def _is_pair(v: Any) -> bool:
    try:
        _a, _n = v
    except (TypeError, ValueError):
        return False
    return True
