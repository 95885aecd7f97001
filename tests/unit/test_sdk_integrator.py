"""What a player integrator meets (issue 16 item 1): the service's domain, parameters and clock
from /v1/info, verdicts with their `detail`, retries that are logged and bounded when the
service is down, and a signer that refuses receipts the service would reject whatever its
state (a view receipt signed at startedAt is IMPLAUSIBLE)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import stat
import time

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from settlement.cli.main import app
from settlement.client import (
    AsyncSettlementClient,
    ReceiptSigner,
    RetriesExhausted,
    ServiceInfo,
    ServiceInfoError,
    ServiceUnreachable,
    SettlementClient,
    UnacceptableReceipt,
)
from settlement.client.http import parse_verdicts
from settlement.domain.receipts import ACCEPTED, Domain, Params, Reason, verify

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
T0 = 1_767_230_000
NODE = bytes.fromhex("aa" * 20)
CONTENT = bytes.fromhex("cc" * 32)
INFO = {
    "protocol_version": "2",
    "service_version": "0.1.0",
    "eip712_name": "W2E Settlement",
    "eip712_version": "1",
    "chain_id": 31337,
    "distributor": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "genesis": 1_767_225_600,
    "epoch_seconds": 3600,
    "grace_seconds": 300,
    "now": T0,
    "current_epoch": 2,
    "clock_skew": 120,
    "max_age": 604_800,
    "max_session_age": 86_400,
    "segment_seconds": 4,
    "max_bitrate": 50_000_000,
    "max_lead_seconds": 30,
    "min_segment_bytes": 8192,
    "max_batch": 10_000,
    "registry_mode": "approval",
    "viewer_allowlist": False,
}


def info_transport(doc: dict, seen: list[str] | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v1/info":
            return httpx.Response(200, json=doc)
        return httpx.Response(404, json={"error": "NotFound"})

    return httpx.MockTransport(handle)


# --- /v1/info -------------------------------------------------------------------------


def test_info_gives_the_services_domain_params_and_clock():
    seen: list[str] = []
    with SettlementClient("http://svc", transport=info_transport(INFO, seen)) as client:
        info = client.info()
    assert seen == ["GET /v1/info"]
    assert info.domain == Domain.from_hex(31337, INFO["distributor"])
    assert info.params == Params.defaults()
    assert info.epochs.bucket(T0) == 2
    assert (info.current_epoch, info.max_batch, info.registry_mode) == (2, 10_000, "approval")


def test_info_clock_follows_the_service_not_the_player():
    # A player clock 1,000 s behind the service: receipts signed with the service's clock.
    info = ServiceInfo.from_json(INFO, received_at=T0 - 1000 + 0.3)
    assert info.clock_offset == 1000
    assert int(info.clock(lambda: T0 - 1000 + 0.3)()) == T0
    synced = ServiceInfo.from_json(INFO, received_at=T0 + 0.7)
    assert synced.clock_offset == 0
    signer = ReceiptSigner(KEY, info, randbytes=bytes)
    # The default clock is the service's: a session started "now" starts at the service's now.
    assert abs(signer.start_session(CONTENT).started_at - (int(time.time()) + 1000)) <= 2


def test_info_of_something_else_is_a_clear_error():
    broken = {k: v for k, v in INFO.items() if k not in ("genesis", "max_age")}
    with pytest.raises(ServiceInfoError, match="lacks genesis, max_age"):
        ServiceInfo.from_json(broken)
    with pytest.raises(ServiceInfoError, match="chain_id is not an integer"):
        ServiceInfo.from_json({**INFO, "chain_id": "31337"})
    transport = httpx.MockTransport(lambda r: httpx.Response(404, text="no such route"))
    with (
        SettlementClient("http://old", transport=transport) as client,
        pytest.raises(ServiceInfoError, match="HTTP 404"),
    ):
        client.info()


def test_async_info_is_the_same():
    async def main() -> ServiceInfo:
        async with AsyncSettlementClient(
            "http://svc", transport=httpx.MockTransport(lambda r: httpx.Response(200, json=INFO))
        ) as client:
            return await client.info()

    assert asyncio.run(main()).domain.chain_id == 31337


# --- verdicts with detail -------------------------------------------------------------


def test_results_carry_the_services_detail_and_group_by_reason():
    body = orjson.dumps(
        {
            "results": [
                {"index": 0, "verdict": "accepted", "reason": None, "detail": None},
                {
                    "index": 1,
                    "verdict": "rejected",
                    "reason": "IMPLAUSIBLE",
                    "detail": "watchSeconds 16 > elapsed 4 s",
                },
                {"index": 2, "verdict": "rejected", "reason": "UNKNOWN_NODE", "detail": "0xaa"},
                {"index": 3, "verdict": "rejected", "reason": "IMPLAUSIBLE", "detail": "x"},
            ],
            "summary": {},
        }
    )
    verdicts = parse_verdicts(body, 10, 4)
    assert verdicts[1].detail == "watchSeconds 16 > elapsed 4 s"
    assert verdicts[0].detail is None
    assert str(verdicts[1]) == "#11 rejected IMPLAUSIBLE: watchSeconds 16 > elapsed 4 s"

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with SettlementClient("http://svc", transport=httpx.MockTransport(handle)) as client:
        result = client.submit([{"kind": "view"}] * 4)
    assert result.summary == {"accepted": 1, "IMPLAUSIBLE": 2, "UNKNOWN_NODE": 1}
    assert {k: [v.index for v in vs] for k, vs in result.by_reason.items()} == {
        "IMPLAUSIBLE": [1, 3],
        "UNKNOWN_NODE": [2],
    }
    report = result.report(examples=1)
    assert "IMPLAUSIBLE: 2" in report
    assert "#1 rejected IMPLAUSIBLE: watchSeconds 16 > elapsed 4 s" in report
    assert "... and 1 more IMPLAUSIBLE" in report
    with pytest.raises(Exception, match="detail is not a string"):
        parse_verdicts(b'{"results":[{"verdict":"rejected","detail":3}]}', 0, 1)


# --- a service that is down -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once we leave: nobody listens there


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    def __call__(self) -> float:
        return self.t


def test_a_service_that_is_down_is_given_up_on_within_the_budget_and_each_retry_logged(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    clock = FakeClock()
    client = SettlementClient(
        url, sleep=clock.sleep, monotonic=clock, rng=random.Random(1), max_attempts=50
    )
    caplog.set_level(logging.WARNING, logger="settlement.client")
    with client, pytest.raises(ServiceUnreachable) as info:
        client.info()
    message = str(info.value)
    assert f"service unreachable at {url}/v1/info" in message
    assert "ConnectError" in message
    tries = len(clock.sleeps) + 1
    assert f"after {tries} tries" in message
    # bounded by the 5 s default, far below max_attempts' backoff (minutes)
    assert sum(clock.sleeps) <= 5.0
    assert 3 <= tries < 10
    retries = [r for r in caplog.records if r.name == "settlement.client"]
    assert len(retries) == len(clock.sleeps)
    assert all(r.levelno == logging.WARNING and "ConnectError" in r.getMessage() for r in retries)
    assert isinstance(info.value, RetriesExhausted)  # callers catching the old error still do


def test_the_unreachable_budget_is_a_setting():
    url = f"http://127.0.0.1:{free_port()}"
    short, long = FakeClock(), FakeClock()
    for clock, budget in ((short, 0.3), (long, 20.0)):
        client = SettlementClient(
            url,
            sleep=clock.sleep,
            monotonic=clock,
            rng=random.Random(1),
            max_attempts=50,
            unreachable_timeout=budget,
        )
        with client, pytest.raises(ServiceUnreachable):
            client.submit([{"kind": "view"}])
        assert sum(clock.sleeps) <= budget
    assert len(short.sleeps) < len(long.sleeps)


def test_an_overloaded_service_is_retried_and_logged_not_called_unreachable(caplog):
    answers = iter([503, 429, 200])

    def handle(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status != 200:
            return httpx.Response(status, headers={"Retry-After": "2"}, text="busy")
        return httpx.Response(200, json={"results": [{"verdict": "accepted"}], "summary": {}})

    sleeps: list[float] = []
    caplog.set_level(logging.WARNING, logger="settlement.client")
    with SettlementClient(
        "http://svc", transport=httpx.MockTransport(handle), sleep=sleeps.append
    ) as client:
        result = client.submit([{"kind": "view"}])
    assert result.summary == {"accepted": 1} and result.attempts == 3
    assert len(sleeps) == 2 and all(s >= 2 for s in sleeps)  # Retry-After honoured
    logged = [r.getMessage() for r in caplog.records if r.name == "settlement.client"]
    assert len(logged) == 2 and "HTTP 503" in logged[0] and "HTTP 429" in logged[1]


# --- receipts the service would reject whatever its state -----------------------------


def session_domain() -> Domain:
    return Domain.from_hex(31337, INFO["distributor"])


def checked_signer(clock: float = T0) -> ReceiptSigner:
    info = ServiceInfo.from_json({**INFO, "now": int(clock)}, received_at=clock)
    return ReceiptSigner(KEY, info, clock=lambda: clock)


def test_a_view_receipt_at_started_at_is_refused_with_when_it_can_be_signed():
    signer = checked_signer()
    session = signer.start_session(CONTENT, T0)
    with pytest.raises(UnacceptableReceipt) as info:
        session.view(watch_seconds=16)  # issuedAt = startedAt = now: elapsed is 4 s
    error = info.value
    assert error.reason == "IMPLAUSIBLE"
    assert "watchSeconds 16 > elapsed 4 s" in str(error)
    assert error.signable_at == T0 + 12 and "from issuedAt 1767230012 (12 s from now)" in str(error)
    assert session.watch_seconds is None  # nothing recorded
    receipt = session.view(watch_seconds=16, issued_at=error.signable_at)
    assert verify(receipt, signer.domain, Params.defaults(), T0 + 12) is ACCEPTED
    # the README's way: a session that started when playback did, signed as time passes
    later = checked_signer(T0 + 60).start_session(CONTENT, T0)
    assert verify(later.view(16), signer.domain, Params.defaults(), T0 + 60) is ACCEPTED


def test_delivery_totals_that_outrun_time_are_refused():
    session = checked_signer().start_session(CONTENT, T0)
    # 8 * 26,000,000 bits > 50 Mbit/s * (0 + 4) s at startedAt; fits from 5 s elapsed
    with pytest.raises(UnacceptableReceipt) as info:
        session.delivery(NODE, bytes_served=26_000_000, segments_served=4)
    assert info.value.reason == "IMPLAUSIBLE" and info.value.signable_at == T0 + 1
    with pytest.raises(UnacceptableReceipt) as info:
        session.delivery(NODE, bytes_served=8192 * 20, segments_served=20)  # 80 s ahead
    assert info.value.signable_at == T0 + 80 - 4 - 30
    with pytest.raises(UnacceptableReceipt) as info:
        session.delivery(NODE, bytes_served=100, segments_served=1, issued_at=T0 + 8)
    assert info.value.signable_at is None  # under min_segment_bytes: waiting does not help
    assert session.delivery_counters() == {}
    ok = session.delivery(NODE, bytes_served=26_000_000, segments_served=4, issued_at=T0 + 1)
    assert verify(ok, session_domain(), Params.defaults(), T0 + 1) is ACCEPTED


def test_self_dealing_and_old_sessions_are_refused_too():
    signer = checked_signer()
    session = signer.start_session(CONTENT, T0 - 86_401)
    with pytest.raises(UnacceptableReceipt, match="TOO_OLD"):
        session.view(1)
    own = signer.start_session(CONTENT, T0 - 60)
    with pytest.raises(UnacceptableReceipt) as info:
        own.delivery(signer.address, 1_000_000, 2)
    assert info.value.reason == Reason.SELF_DEALING


def test_without_params_the_signer_signs_what_it_is_given():
    plain = ReceiptSigner(KEY, Domain.from_hex(31337, INFO["distributor"]), clock=lambda: T0)
    assert plain.params is None
    receipt = plain.start_session(CONTENT, T0).view(16)
    assert verify(receipt, plain.domain, Params.defaults(), T0).reason == Reason.IMPLAUSIBLE


# --- a keystore for the player --------------------------------------------------------


def test_keystore_new_writes_0600_prints_only_the_address(tmp_path, monkeypatch):
    from eth_account import Account

    monkeypatch.setenv("VIEWER_PASSWORD", "correct horse")
    path = tmp_path / "viewer.json"
    runner = CliRunner()
    done = runner.invoke(app, ["keystore", "new", str(path), "--password-env", "VIEWER_PASSWORD"])
    assert done.exit_code == 0, done.output
    address = done.stdout.strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = bytes(Account.decrypt(path.read_text(), "correct horse"))
    assert Account.from_key(secret).address == address
    assert secret.hex() not in done.output and secret.hex() not in path.read_text()
    signer = ReceiptSigner.from_keystore(path, "correct horse", ServiceInfo.from_json(INFO))
    assert signer.address_hex == address
    assert json.loads(path.read_text())["address"].lower() == address[2:].lower()

    again = runner.invoke(app, ["keystore", "new", str(path), "--password-env", "VIEWER_PASSWORD"])
    assert again.exit_code == 2 and "exists" in again.output
    assert bytes(Account.decrypt(path.read_text(), "correct horse")) == secret  # untouched
    monkeypatch.setenv("SHORT", "abc")
    short = runner.invoke(
        app, ["keystore", "new", str(tmp_path / "s.json"), "--password-env", "SHORT"]
    )
    assert short.exit_code == 2 and "at least 8" in short.output
    assert not (tmp_path / "s.json").exists()
    unset = runner.invoke(
        app, ["keystore", "new", str(tmp_path / "u.json"), "--password-env", "NOPE_X"]
    )
    assert unset.exit_code == 2 and "NOPE_X is not set" in unset.output
