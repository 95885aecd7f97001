"""`settlement receipts`: check files of signed wire receipts (PROTOCOL section 2)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from settlement.cli.common import open_input
from settlement.cli.options import ChainIdOption, DistributorOption

app = typer.Typer(
    help="Receipts of PROTOCOL section 2: check files of signed wire receipts.",
    no_args_is_help=True,
)

_VERIFY_CHUNK = 65_536  # NDJSON lines per batch: bounded memory, big enough for the pool


@app.command("verify")
def receipts_verify(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE", help="NDJSON (one receipt a line) or a JSON array; - for stdin"
        ),
    ],
    chain_id: ChainIdOption = None,
    distributor: DistributorOption = None,
    now: Annotated[
        int | None, typer.Option(help="judge as of this unix time (default: the clock)")
    ] = None,
    genesis: Annotated[int | None, typer.Option(help="default: W2E_GENESIS")] = None,
    clock_skew: Annotated[
        int | None, typer.Option(help="seconds (default: W2E_CLOCK_SKEW)")
    ] = None,
    max_age: Annotated[int | None, typer.Option(help="seconds (default: W2E_MAX_AGE)")] = None,
    max_session_age: Annotated[
        int | None, typer.Option(help="seconds (default: W2E_MAX_SESSION_AGE)")
    ] = None,
    segment_seconds: Annotated[
        int | None, typer.Option(help="default: W2E_SEGMENT_SECONDS")
    ] = None,
    max_bitrate: Annotated[
        int | None, typer.Option(help="bits/s (default: W2E_MAX_BITRATE)")
    ] = None,
    max_lead_seconds: Annotated[
        int | None, typer.Option(min=0, help="seconds (default: W2E_MAX_LEAD_SECONDS)")
    ] = None,
    min_segment_bytes: Annotated[
        int | None, typer.Option(min=0, help="bytes (default: W2E_MIN_SEGMENT_BYTES)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="processes for large files (default: every core)")
    ] = None,
) -> None:
    """Verify wire receipts: one JSON verdict per receipt on stdout, a summary on stderr.

    Stdout, one line per receipt in input order: {"index": i, "verdict": "accepted" or "rejected", "reason": CODE or null, "detail": text or null}. The index counts receipts from 0; blank NDJSON lines are skipped.

    Only the stateless checks of PROTOCOL section 3 run (MALFORMED to SIGNER_MISMATCH, without registries or stored receipts).

    Stderr, last: {"summary": {"total": n, "accepted": n, "rejected": n, "reasons": {CODE: n}}}.

    Exit 0 whatever the verdicts; 2 when the file cannot be read or the options are invalid.
    """
    import dataclasses
    import itertools
    import time
    from collections import Counter

    import orjson

    from settlement.config import load_settings
    from settlement.domain.receipts import Domain, Params
    from settlement.domain.wire import wire_items_from_array
    from settlement.errors import SettlementError
    from settlement.parallel import verify_wire_batch

    try:
        settings = load_settings()
        domain = Domain.from_settings(settings, chain_id, distributor)
        overrides = {
            "genesis": genesis,
            "clock_skew": clock_skew,
            "max_age": max_age,
            "max_session_age": max_session_age,
            "segment_seconds": segment_seconds,
            "max_bitrate": max_bitrate,
            "max_lead_seconds": max_lead_seconds,
            "min_segment_bytes": min_segment_bytes,
        }
        params = dataclasses.replace(
            Params.from_settings(settings), **{k: v for k, v in overrides.items() if v is not None}
        )
        at = int(time.time()) if now is None else now
        out = sys.stdout.buffer
        counts: Counter[str] = Counter()
        index = 0

        def emit(items: list) -> None:
            nonlocal index
            lines = []
            for verdict in verify_wire_batch(items, domain, params, at, workers=workers):
                if verdict.accepted:
                    counts["accepted"] += 1
                    lines.append(
                        b'{"index":%d,"verdict":"accepted","reason":null,"detail":null}\n' % index
                    )
                else:
                    counts[verdict.reason.value] += 1
                    row = {"index": index, "verdict": "rejected", "reason": verdict.reason.value}
                    row["detail"] = verdict.detail
                    lines.append(orjson.dumps(row) + b"\n")
                index += 1
            out.write(b"".join(lines))

        with open_input(file) as stream:
            # The first non-blank line tells a JSON array from NDJSON; stdin cannot rewind.
            head: list[bytes] = []
            for line in stream:
                head.append(line)
                if line.strip():
                    break
            if b"".join(head).lstrip()[:1] == b"[":
                emit(wire_items_from_array(b"".join(head) + stream.read()))
            else:
                chunk: list[bytes] = []
                for line in itertools.chain(head, stream):
                    if line.strip():
                        chunk.append(line)
                        if len(chunk) == _VERIFY_CHUNK:
                            emit(chunk)
                            chunk = []
                emit(chunk)
        out.flush()
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    accepted = counts.pop("accepted", 0)
    summary = {
        "total": index,
        "accepted": accepted,
        "rejected": index - accepted,
        "reasons": dict(sorted(counts.items())),
    }
    typer.echo(orjson.dumps({"summary": summary}).decode(), err=True)
