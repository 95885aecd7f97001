"""SettlementClient against an in-process fake of the ingest API (issue 5, item 1).

The fake follows the contract: POST /v1/receipts with {"receipts": [...]} of at most
max_batch items, verdicts per item in order plus a summary; 413 / 422 / 429 / 503 with
Retry-After. It keeps the receipts it stored, so a resent receipt comes back `duplicate`,
and it can be told to fail the next requests in given ways.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest
from eth_utils import to_checksum_address
from fastapi import FastAPI, Request, Response
from hypothesis import given
from hypothesis import strategies as st

from settlement.client import (
    AsyncSettlementClient,
    ClaimInfo,
    ReceiptSigner,
    RetriesExhausted,
    SettlementClient,
    SubmitError,
)
from settlement.client.http import parse_verdicts, retry_after_seconds
from settlement.domain.receipts import Domain, MalformedReceipt
from settlement.domain.wire import dumps_wire, parse_wire
from settlement.errors import InputError

DOMAIN = Domain(31337, bytes(19) + b"\x01")
T0 = 1_767_230_000


@dataclass
class FakeIngest:
    max_batch: int = 10_000
    faults: list[tuple] = field(default_factory=list)  # consumed one per request
    stored: set[bytes] = field(default_factory=set)
    requests: list[int] = field(default_factory=list)  # batch size of each request seen
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        with self.lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault and fault[0] == "drop":
            return None  # close the connection: nothing processed
        if fault and fault[0] == "status":
            _, status, retry_after = fault
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return status, headers, orjson.dumps({"detail": "busy"})
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 422, {}, orjson.dumps({"detail": "body is not JSON"})
        if not isinstance(doc, dict) or not isinstance(doc.get("receipts"), list):
            return 422, {}, orjson.dumps({"detail": 'send {"receipts": [...]}'})
        items = doc["receipts"]
        if len(items) > self.max_batch:
            return 413, {}, orjson.dumps({"detail": f"at most {self.max_batch} receipts"})
        results = []
        with self.lock:
            self.requests.append(len(items))
            for item in items:
                try:
                    key = dumps_wire(parse_wire(item))
                except MalformedReceipt:
                    results.append({"verdict": "rejected", "reason": "MALFORMED"})
                    continue
                results.append({"verdict": "duplicate" if key in self.stored else "accepted"})
                self.stored.add(key)
        summary = Counter(r.get("reason") or r["verdict"] for r in results)
        payload = {"results": results, "summary": dict(summary)}
        if fault and fault[0] == "commit_then_drop":
            return None  # stored, but the answer never arrives
        return 200, {}, orjson.dumps(payload)


@pytest.fixture
def fake() -> Iterator[tuple[FakeIngest, str]]:
    state = FakeIngest()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/v1/receipts":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            answer = state.answer(body)
            if answer is None:
                self.close_connection = True
                return
            status, headers, payload = answer
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def receipts(n: int, seed: int = 1) -> list:
    rng = random.Random(seed)
    signer = ReceiptSigner(rng.randbytes(32), DOMAIN)
    session = signer.start_session(rng.randbytes(32), T0)
    node = rng.randbytes(20)
    return [session.delivery(node, 1000 * i, i, issued_at=T0 + 4 * i) for i in range(1, n + 1)]


def client_for(url: str, sleeps: list[float], **kwargs) -> SettlementClient:
    return SettlementClient(url, sleep=sleeps.append, rng=random.Random(7), **kwargs)


def test_batches_are_split_and_verdicts_come_back_in_input_order(fake):
    state, url = fake
    items = receipts(25)
    items.insert(3, {"kind": "delivery", "sessionId": "0x00"})  # not a receipt: judged, in place
    with client_for(url, [], max_batch=10) as client:
        result = client.submit(items)
    assert state.requests == [10, 10, 6]
    assert [v.index for v in result.verdicts] == list(range(26))
    assert result.verdicts[3].verdict == "rejected" and result.verdicts[3].reason == "MALFORMED"
    assert result.summary == {"accepted": 25, "MALFORMED": 1}
    assert (result.batches, result.attempts, result.stored, len(result)) == (3, 3, 25, 26)
    assert [v.index for v in result.rejected] == [3]


def test_resubmission_is_idempotent(fake):
    _, url = fake
    items = receipts(5)
    with client_for(url, []) as client:
        first = client.submit(items)
        again = client.submit(items)
    assert first.summary == {"accepted": 5}
    assert again.summary == {"duplicate": 5}
    assert all(v.stored for v in again.verdicts)


def test_503_and_429_are_retried_honouring_retry_after(fake):
    state, url = fake
    state.faults = [("status", 503, "7"), ("status", 429, "2"), ("status", 502, None)]
    sleeps: list[float] = []
    with client_for(url, sleeps, backoff_base=0.5) as client:
        result = client.submit(receipts(3))
    assert result.summary == {"accepted": 3}
    assert result.attempts == 4
    assert sleeps[0] >= 7 and sleeps[1] >= 2  # at least what the server asked
    assert 1.0 <= sleeps[2] <= 2.0  # third retry: backoff 0.5 * 2**2 with jitter in [1/2, 1]


def test_a_lost_answer_is_resent_and_reported_as_duplicate(fake):
    state, url = fake
    state.faults = [("commit_then_drop",), ("drop",)]
    sleeps: list[float] = []
    with client_for(url, sleeps) as client:
        result = client.submit(receipts(4))
    # The first attempt was stored though its answer was lost: the retry says duplicate.
    assert result.summary == {"duplicate": 4}
    assert result.stored == 4 and result.attempts == 3 and len(sleeps) == 2
    assert len(state.stored) == 4


def test_413_halves_the_batch_until_the_server_takes_it(fake):
    state, url = fake
    state.max_batch = 3
    with client_for(url, [], max_batch=10) as client:
        result = client.submit(receipts(10))
        assert client.max_batch == 2  # remembered for the next batches
    assert [v.index for v in result.verdicts] == list(range(10))
    assert result.summary == {"accepted": 10}
    assert sum(state.requests) == 10 and max(state.requests) <= 3


def test_422_is_not_retried(fake):
    state, url = fake
    state.faults = [("status", 422, None)]
    sleeps: list[float] = []
    with client_for(url, sleeps) as client, pytest.raises(SubmitError) as info:
        client.submit(receipts(2))
    assert info.value.status == 422 and "busy" in info.value.body
    assert sleeps == []


def test_retries_are_bounded(fake):
    state, url = fake
    state.faults = [("status", 503, "1")] * 10
    sleeps: list[float] = []
    with client_for(url, sleeps, max_attempts=4) as client, pytest.raises(RetriesExhausted) as info:
        client.submit(receipts(2))
    assert len(sleeps) == 3
    assert "HTTP 503" in str(info.value) and "safe to resend" in str(info.value)


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nobody listens there
    sleeps: list[float] = []
    client = client_for(f"http://127.0.0.1:{port}", sleeps, max_attempts=3)
    with client, pytest.raises(RetriesExhausted, match="ConnectError"):
        client.submit(receipts(1))
    assert len(sleeps) == 2


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling():
    client = SettlementClient(
        "http://127.0.0.1:9", backoff_base=1.0, backoff_max=8.0, rng=random.Random(3)
    )
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [client.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert client.backoff(1, retry_after=30) == 30
    assert client.backoff(1, retry_after=10_000) == client.max_retry_after
    client.close()


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    when = "Thu, 01 Jan 2026 00:00:30 GMT"
    assert retry_after_seconds(when, now=1_767_225_600) == 30


def test_answers_are_read_strictly():
    with pytest.raises(SubmitError, match="2 verdicts for 3"):
        parse_verdicts(b'{"results": ["accepted", "accepted"]}', 0, 3)
    with pytest.raises(SubmitError, match="results"):
        parse_verdicts(b'{"summary": {}}', 0, 0)
    verdicts = parse_verdicts(
        b'{"results": [{"verdict": "stale"}, "SELF_DEALING", '
        b'{"verdict": "rejected", "reason": "CONFLICT"}]}',
        5,
        3,
    )
    assert [(v.index, v.label, v.stored) for v in verdicts] == [
        (5, "stale", False),
        (6, "SELF_DEALING", False),
        (7, "CONFLICT", False),
    ]


def test_nothing_to_send_sends_nothing(fake):
    state, url = fake
    with client_for(url, []) as client:
        assert client.submit([]).verdicts == ()
    assert state.requests == []


def test_simulate_posts_its_receipts_through_the_client(fake, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from settlement.cli.main import app

    monkeypatch.delenv("W2E_ADMIN_TOKEN", raising=False)  # the fake has no admin endpoints
    state, url = fake
    state.faults = [("status", 503, "0"), ("drop",)]  # the run survives a busy, flaky service
    args = ["simulate", "--out", str(tmp_path), "--seed", "2", "--receipts", "400"]
    args += ["--viewers", "50", "--nodes", "5", "--creators", "5", "--contents", "20"]
    args += ["--bad-fraction", "0", "--bad-fraction", "replay=0.05"]
    args += ["--bad-fraction", "malformed=0.05", "--workers", "1"]
    args += ["--url", url, "--max-batch", "150"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    # The fake judges only shape and repetition: replays are its duplicates.
    assert summary["posted"] == {"MALFORMED": 20, "accepted": 360, "duplicate": 20}
    assert state.requests == [150, 150, 100]


def test_async_client_follows_the_same_contract():
    state = FakeIngest(max_batch=4, faults=[("status", 503, "3"), ("status", 429, None)])
    api = FastAPI()

    @api.post("/v1/receipts")
    async def ingest(request: Request) -> Response:
        status, headers, payload = state.answer(await request.body())
        return Response(payload, status, headers, media_type="application/json")

    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def scenario() -> tuple:
        transport = httpx.ASGITransport(app=api)
        async with AsyncSettlementClient(
            "http://ingest", transport=transport, sleep=fake_sleep, max_batch=6
        ) as client:
            items = receipts(9)
            return await client.submit(items), await client.submit(items[:2])

    first, again = asyncio.run(scenario())
    assert [v.index for v in first.verdicts] == list(range(9))
    assert first.summary == {"accepted": 9} and again.summary == {"duplicate": 2}
    assert sleeps[0] >= 3 and len(sleeps) == 2
    assert max(state.requests) <= 4  # 413 taught the client the server's limit


_hex32 = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
_address = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


@given(
    account=_address,
    amount=st.integers(0, 2**256 - 1),
    claimed=st.integers(0, 2**256 - 1),
    proof=st.lists(_hex32, max_size=5),
    root=_hex32,
    contract=_address,
    chain_id=st.integers(1, 2**64 - 1),
)
def test_claim_document_round_trips(account, amount, claimed, proof, root, contract, chain_id):
    """GET .../claim's body parses back into the same ClaimInfo (amounts as decimal strings,
    any uint256), and claimable never goes below zero."""
    info = ClaimInfo(
        account=account,
        cumulative_amount=amount,
        claimed=claimed,
        proof=tuple(proof),
        root=root,
        distributor=to_checksum_address(contract),
        chain_id=chain_id,
        calldata="0x",
    )
    doc = orjson.loads(orjson.dumps(info.to_json()))
    assert ClaimInfo.from_json(doc) == info
    assert int(doc["claimable"]) == max(amount - claimed, 0)


def test_claim_document_missing_a_field_is_input_error() -> None:
    with pytest.raises(InputError, match="lacks or garbles"):
        ClaimInfo.from_json({"account": "0x" + "11" * 20})
