"""`settlement receipts`: check files of signed wire receipts (PROTOCOL section 2)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from settlement.cli.common import open_input
from settlement.cli.options import ChainIdOption, DistributorOption

app = typer.Typer(
    help="Receipts of PROTOCOL section 2: check files of signed wire receipts.",
    no_args_is_help=True,
)

_VERIFY_CHUNK = 65_536  # NDJSON lines per batch: bounded memory, big enough for the pool
# Exit code of --strict when a receipt is rejected.
EXIT_REJECTED = 1
# The receipt files of a published epoch directory (manifest `files[].name`), in this order.
_PUBLISHED_RECEIPTS = ("delivery_receipts", "view_receipts")
# Manifest `parameters` -> Params field (PROTOCOL 6): what a published epoch was judged by.
_MANIFEST_PARAMS = {
    "genesis": "genesis",
    "clockSkew": "clock_skew",
    "maxAge": "max_age",
    "maxSessionAge": "max_session_age",
    "segmentSeconds": "segment_seconds",
    "maxBitrate": "max_bitrate",
    "maxLeadSeconds": "max_lead_seconds",
    "minSegmentBytes": "min_segment_bytes",
}


def _published_form(line: bytes) -> bool:
    """A line of a published receipts file (PROTOCOL 6): canonical JSON starting with its
    `bucket`, no `kind`, integers as decimal strings."""
    return line.lstrip().startswith(b'{"bucket":') and b'"kind"' not in line


def _as_wire(line: bytes) -> object:
    """A published line as its wire receipt: `bucket` dropped, `kind` from the fields. The
    signed fields are untouched (the wire format takes decimal strings); a line that is not
    in the published form is passed on as it is, to be judged as wire."""
    import orjson

    if not _published_form(line):
        return line
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(doc, dict):
        return line
    doc.pop("bucket", None)
    doc["kind"] = "delivery" if "node" in doc else "view"
    return doc


def _epoch_inputs(directory: str) -> tuple[list[str], dict]:
    """The receipts files of a published epoch directory and its manifest's parameters."""
    import orjson

    from settlement.errors import InputError

    path = Path(directory) / "manifest.json"
    try:
        manifest = orjson.loads(path.read_bytes())
        files = {f["name"]: f["sha256"] for f in manifest["files"]}
        parameters = dict(manifest["parameters"])
    except OSError as error:
        raise InputError(
            f"cannot read {path} ({error.strerror or error}): {directory} is a directory; "
            "give a receipts file or a published epoch directory"
        ) from None
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"{path} is not an epoch manifest: {error}") from None
    names = [
        str(Path(directory) / f"{files[name]}.ndjson")
        for name in _PUBLISHED_RECEIPTS
        if name in files
    ]
    return names, parameters


@app.command("verify")
def receipts_verify(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="NDJSON (one receipt a line) or a JSON array; - for stdin; or a published "
            "epoch directory (its manifest's receipts files and parameters)",
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
    strict: Annotated[
        bool, typer.Option(help="exit 1 when any receipt is rejected (an auditor's check)")
    ] = False,
) -> None:
    """Verify wire receipts: one JSON verdict per receipt on stdout, a summary on stderr.

    Stdout, one line per receipt in input order: {"index": i, "verdict": "accepted" or "rejected", "reason": CODE or null, "detail": text or null}. The index counts receipts from 0; blank NDJSON lines are skipped.

    Only the stateless checks of PROTOCOL section 3 run (MALFORMED to SIGNER_MISMATCH, without registries or stored receipts).

    Stderr, last: {"summary": {"total": n, "accepted": n, "rejected": n, "reasons": {CODE: n}}}.

    Published receipts files (PROTOCOL 6: a `bucket`, no `kind`, as in an epoch directory)
    are read as what they are: each line's wire receipt, judged at now = its issuedAt (the
    arrival time is not published) unless --now is given. For an epoch directory, the
    chain id, distributor and receipt parameters default to its manifest's.

    Exit 0 whatever the verdicts (with --strict: 1 when any is rejected); 2 when the file
    cannot be read or the options are invalid.
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
        inputs, published = [file], {}
        if file != "-" and Path(file).is_dir():
            inputs, published = _epoch_inputs(file)
            chain_id = int(published["chainId"]) if chain_id is None else chain_id
            distributor = str(published["distributor"]) if distributor is None else distributor
        domain = Domain.from_settings(settings, chain_id, distributor)
        from_manifest = {
            field: int(published[key])
            for key, field in _MANIFEST_PARAMS.items()
            if key in published
        }
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
            Params.from_settings(settings),
            **from_manifest,
            **{k: v for k, v in overrides.items() if v is not None},
        )
        # now = issuedAt for published lines: no arrival window, so neither ISSUED_IN_FUTURE
        # nor TOO_OLD by age can apply; genesis and session age still do.
        timeless = dataclasses.replace(params, clock_skew=2**64, max_age=2**64)
        at = int(time.time()) if now is None else now
        out = sys.stdout.buffer
        counts: Counter[str] = Counter()
        index = 0
        formats: Counter[str] = Counter()

        def emit(items: list, published_lines: bool = False) -> None:
            nonlocal index
            lines = []
            judged_by = timeless if published_lines and now is None else params
            if published_lines:
                items = [_as_wire(item) for item in items]
            for verdict in verify_wire_batch(items, domain, judged_by, at, workers=workers):
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

        for name in inputs:
            with open_input(name) as stream:
                # The first non-blank line tells a JSON array from NDJSON, and a published
                # file from wire receipts; stdin cannot rewind.
                head: list[bytes] = []
                for line in stream:
                    head.append(line)
                    if line.strip():
                        break
                if b"".join(head).lstrip()[:1] == b"[":
                    formats["wire"] += 1
                    emit(wire_items_from_array(b"".join(head) + stream.read()))
                    continue
                published_file = bool(head) and _published_form(head[-1])
                formats["published" if published_file else "wire"] += 1
                chunk: list[bytes] = []
                for line in itertools.chain(head, stream):
                    if line.strip():
                        chunk.append(line)
                        if len(chunk) == _VERIFY_CHUNK:
                            emit(chunk, published_file)
                            chunk = []
                emit(chunk, published_file)
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
    if formats["published"]:
        summary["published_files"] = formats["published"]
        if now is None:
            summary["judged_at"] = "issuedAt"  # arrival times are not published
    typer.echo(orjson.dumps({"summary": summary}).decode(), err=True)
    if strict and index - accepted:
        raise typer.Exit(EXIT_REJECTED)
