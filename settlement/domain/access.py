"""Who a request counts against and how much it may send: API key hashes, client addresses
behind trusted proxies, and the GCRA rate formula the store runs in one SQL statement."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A token `settlement keys create` makes is 4 + 43 characters. Anything longer is no key of
# ours: it is ignored without being hashed or stored (a 4 MiB header costs nothing).
MAX_KEY_CHARS: Final = 128
KEY_PREFIX: Final = "w2e_"
# Key names are shown in `keys list` and written in the admin log: short, printable, no spaces.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
# Bounds that keep the GCRA arithmetic inside a signed 64-bit microsecond count.
MIN_RATE: Final = 0.001  # batches/s: one per 1,000 s
MAX_BURST: Final = 1_000_000
_MAX_PERIOD_US: Final = 10**12
# Every IPv6 host gets at least a /64: counting per address would give one client 2**64
# buckets, so keyless IPv6 clients are counted per /64.
_IPV6_PREFIX: Final = 64


def token_hash(token: str) -> bytes:
    """What the store keeps of an API key: its SHA-256. The token is 32 random bytes, so a
    plain hash is enough (no salt or slow KDF: there is nothing to guess)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def usable_key(header: str | None) -> str | None:
    """The X-API-Key header when it can be one of our keys; else None (treated as no key)."""
    if not header or len(header) > MAX_KEY_CHARS or not header.startswith(KEY_PREFIX):
        return None
    return header


def check_name(name: str, what: str = "name") -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"{what} must be 1 to 64 characters: letters, digits and _ . : @ - "
            f"(starting with a letter or digit), got {name!r:.80}"
        )
    return name


def check_rate(rate: float, burst: int) -> None:
    if not (math.isfinite(rate) and rate >= MIN_RATE):
        raise ValueError(f"rate must be at least {MIN_RATE} batches/s, got {rate}")
    if not 1 <= burst <= MAX_BURST:
        raise ValueError(f"burst must be 1 to {MAX_BURST:,} batches, got {burst}")


def period_us(rate: float) -> int:
    """Microseconds one batch costs at `rate` batches/s (clamped to what fits int64 math)."""
    return max(1, min(_MAX_PERIOD_US, round(1_000_000 / max(rate, MIN_RATE))))


# --- client addresses ---------------------------------------------------------------------


def parse_networks(entries: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Addresses and CIDRs of trusted proxies; ValueError names the one that is not."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"trusted proxy {entry!r:.80} is not an IP address or CIDR (e.g. 10.0.0.0/8)"
            ) from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[IpNetwork]
) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def client_address(
    peer: str | None, forwarded_for: str | None, proxies: Sequence[IpNetwork]
) -> str:
    """The address a keyless request is counted against, as a bucket name.

    X-Forwarded-For counts only when the socket peer is a trusted proxy; then the header is
    read from the right (the entries our proxies appended) and the first untrusted address
    is the client. Anything a client could have written further left is ignored. IPv6
    clients are counted per /64.
    """
    ip = _ip(peer) if peer else None
    if ip is None:
        return "addr:unknown"
    if forwarded_for and proxies and _trusted(ip, proxies):
        for hop in reversed(forwarded_for.split(",")[-32:]):
            hop_ip = _ip(hop)
            if hop_ip is None:
                break  # garbage from a client: stop at the last hop our proxies vouched for
            ip = hop_ip
            if not _trusted(hop_ip, proxies):
                break
    if isinstance(ip, ipaddress.IPv6Address):
        net = ipaddress.IPv6Network((ip, _IPV6_PREFIX), strict=False)
        return f"addr:{net.network_address}/{_IPV6_PREFIX}"
    return f"addr:{ip}"


# --- GCRA (generic cell rate algorithm) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    tat: int  # theoretical arrival time after this request, microseconds
    retry_after: int  # seconds until one batch is allowed again (0 when allowed)


def gcra(tat: int | None, now: int, period: int, burst: int) -> Admission:
    """One request at `now` (microseconds) against a bucket whose theoretical arrival time is
    `tat` (None: a new bucket). Allowed while the bucket is at most `burst` batches ahead.

    The store's SQL (adapters/db/access.py) is this formula; a test checks they agree.
    """
    base = now if tat is None or tat < now else tat
    ahead = base + period - now
    if ahead <= burst * period:
        return Admission(True, base + period, 0)
    return Admission(False, base if tat is not None else now, retry_after(ahead, period, burst))


def retry_after(ahead: int, period: int, burst: int) -> int:
    """Whole seconds until a bucket `ahead` microseconds in front of now takes one more."""
    return max(1, math.ceil((ahead - burst * period) / 1_000_000))
