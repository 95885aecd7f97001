"""Pure parts of access (issue 15 item 2): which keys count, client addresses behind trusted
proxies, the GCRA formula, bounded metric labels and the admin-token settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from settlement.config import Settings
from settlement.domain.access import (
    MAX_KEY_CHARS,
    client_address,
    gcra,
    parse_networks,
    period_us,
    token_hash,
    usable_key,
)

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.1"])


def test_only_key_shaped_headers_of_bounded_length_count() -> None:
    token = "w2e_" + "A" * 43
    assert usable_key(token) == token
    assert usable_key(None) is None and usable_key("") is None
    assert usable_key("client-b") is None  # a name or a made-up label is no key
    assert usable_key("w2e_" + "x" * (MAX_KEY_CHARS - 4)) is not None
    assert usable_key("w2e_" + "x" * (4 * 1024 * 1024)) is None  # never hashed nor stored
    assert token_hash(token) != token_hash(token[:-1]) and len(token_hash(token)) == 32


@pytest.mark.parametrize(
    ("peer", "xff", "want"),
    [
        ("203.0.113.7", None, "addr:203.0.113.7"),
        ("203.0.113.7", "1.2.3.4", "addr:203.0.113.7"),  # not from a proxy: ignored
        ("127.0.0.1", "1.2.3.4", "addr:127.0.0.1"),  # loopback is not trusted by default
        ("10.1.1.1", "1.2.3.4", "addr:1.2.3.4"),
        ("10.1.1.1", "6.6.6.6, 1.2.3.4, 10.9.9.9", "addr:1.2.3.4"),  # rightmost untrusted
        ("10.1.1.1", "10.2.2.2, 10.3.3.3", "addr:10.2.2.2"),  # all proxies: the leftmost
        ("10.1.1.1", "garbage, 1.2.3.4", "addr:1.2.3.4"),
        ("10.1.1.1", "1.2.3.4, garbage", "addr:10.1.1.1"),  # stop at what a proxy vouched for
        ("192.0.2.1", "[2001:db8:1:2:3::9]:443", "addr:2001:db8:1:2::/64"),
        ("2001:db8:ffff::5", "198.51.100.4:5555", "addr:198.51.100.4"),
        ("::ffff:10.1.1.1", "1.2.3.4", "addr:1.2.3.4"),  # v4-mapped peer
        ("2001:db8:1:2:aaaa::1", None, "addr:2001:db8:1:2::/64"),  # a /64 is one client
        ("testclient", "1.2.3.4", "addr:unknown"),
        (None, None, "addr:unknown"),
    ],
)
def test_client_address(peer: str | None, xff: str | None, want: str) -> None:
    assert client_address(peer, xff, PROXIES) == want


def test_without_proxies_forwarded_for_never_counts() -> None:
    assert client_address("10.1.1.1", "1.2.3.4", ()) == "addr:10.1.1.1"


@given(st.lists(st.ip_addresses().map(str), max_size=40))
def test_address_buckets_are_short_whatever_the_header(hops: list[str]) -> None:
    bucket = client_address("10.0.0.1", ", ".join(hops), PROXIES)
    assert bucket.startswith("addr:") and len(bucket) <= 5 + 45


def test_bad_proxy_entries_are_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        parse_networks(["10.0.0.0/8", "proxy.internal"])
    with pytest.raises(ValueError, match="trusted proxy"):
        Settings(_env_file=None, trusted_proxies=["nope"])


def test_gcra_allows_the_burst_then_the_rate() -> None:
    period = period_us(2.0)  # 500 ms a batch
    tat, now, allowed = None, 10**12, []
    for _ in range(5):
        a = gcra(tat, now, period, 3)
        allowed.append(a.allowed)
        tat = a.tat if a.allowed else tat
    assert allowed == [True, True, True, False, False]
    refused = gcra(tat, now, period, 3)
    assert refused.retry_after == 1 and refused.tat == tat
    assert gcra(tat, now + period, period, 3).allowed  # one batch back after one period
    assert not gcra(tat, now + period - 1, period, 3).allowed


@given(
    st.lists(st.integers(0, 3_000_000), min_size=1, max_size=60),
    st.floats(0.5, 100.0),
    st.integers(1, 20),
)
def test_gcra_never_allows_more_than_burst_plus_rate_times_time(
    gaps: list[int], rate: float, burst: int
) -> None:
    period = period_us(rate)
    tat, now, start, allowed = None, 10**12, 10**12, 0
    for gap in gaps:
        now += gap
        a = gcra(tat, now, period, burst)
        if a.allowed:
            allowed += 1
            tat = a.tat
    assert allowed <= burst + (now - start) // period


def test_metric_labels_come_from_closed_sets() -> None:
    from settlement.api.metrics import bounded_labels

    assert bounded_labels("rejected", "UNKNOWN_NODE") == ("rejected", "UNKNOWN_NODE")
    assert bounded_labels("accepted", "") == ("accepted", "")
    assert bounded_labels("x" * 100, "0x" + "ab" * 20) == ("other", "other")


def test_admin_tokens_have_names() -> None:
    s = Settings(_env_file=None, admin_token="t" * 32, admin_tokens={"alice": "u" * 32})
    assert sorted(s.named_admin_tokens()) == ["admin", "alice"]
    with pytest.raises(ValueError, match="W2E_ADMIN_TOKEN's"):
        Settings(_env_file=None, admin_tokens={"admin": "u" * 32})
    with pytest.raises(ValueError, match="admin token name"):
        Settings(_env_file=None, admin_tokens={"has space": "u" * 32})
    with pytest.raises(ValueError, match="empty"):
        Settings(_env_file=None, admin_tokens={"bob": ""})
