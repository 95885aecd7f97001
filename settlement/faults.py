"""Fault points for crash and outage testing (`scripts/chaos`, tests/integration/test_outages.py).

A fault point is one line, `faults.point("close.commit")`, at a moment worth crashing or
failing in. It does nothing unless the variable W2E_FAULTS is set (read once, by
settlement.config, at import): then each point whose name matches a rule announces itself
and applies the rule's actions. Unset, a point costs one function call and one test.

W2E_FAULTS is a `;`-separated list:

    log=PATH                     append "unix_time pid name" to PATH at every matching point
    PATTERN                      match (fnmatch) point names; no action but the log line
    PATTERN:sleep=S              sleep S seconds there (widens the window a kill can land in)
    PATTERN:raise=ENOSPC         raise OSError(ENOSPC) there (or EROFS, EIO, ...: any errno)

e.g. `log=/tmp/faults.log;close.*:sleep=0.5;ingest.commit` (the chaos harness's kind) or
`files.finish:raise=ENOSPC` (a disk full during a close, in a test). Points in the code:

    ingest.commit, ingest.done       a batch about to be committed, and committed (API worker)
    close.begin, close.commit, close.committed, close.done
                                     a close: lock held, files written (not committed),
                                     committed (manifest.json not yet written), complete
    files.finish                     a dataset file about to be fsynced and renamed (a close)
    propose.prepared, propose.sent, propose.mined
                                     a proposal signed and stored, broadcast, its receipt
    correct.published                a correction's files published, not yet proposed

Tests may also call `configure(spec)` in-process (and `configure(None)` to switch off).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import time

from settlement.config import FAULTS_SPEC

__all__ = ["configure", "point"]

_rules: list[tuple[str, list[tuple[str, str]]]] = []
_log: str | None = None


def configure(spec: str | None) -> None:
    """Parse a W2E_FAULTS value; None or "" switches every point off."""
    global _log
    rules: list[tuple[str, list[tuple[str, str]]]] = []
    log = None
    for part in (spec or "").split(";"):
        part = part.strip()
        if not part:
            continue
        if part.startswith("log="):
            log = part[4:]
            continue
        pattern, _, actions = part.partition(":")
        parsed = []
        for action in filter(None, actions.split(",")):
            kind, _, value = action.partition("=")
            if kind == "sleep":
                try:
                    float(value)  # a bad number fails here, at start-up
                except ValueError:
                    raise ValueError(f"W2E_FAULTS: sleep takes seconds, got {value!r}") from None
            elif kind == "raise":
                if not isinstance(getattr(errno, value, None), int):
                    raise ValueError(f"W2E_FAULTS: {value!r} is no errno name (e.g. ENOSPC)")
            else:
                raise ValueError(f"W2E_FAULTS: unknown action {action!r} (sleep=S or raise=ERRNO)")
            parsed.append((kind, value))
        rules.append((pattern, parsed))
    if log is not None and not rules:
        rules.append(("*", []))
    _rules[:] = rules
    _log = log


def point(name: str) -> None:
    """A fault point: nothing unless W2E_FAULTS names it (see the module's docstring)."""
    if not _rules:
        return
    _hit(name)


def _hit(name: str) -> None:
    matched = [actions for pattern, actions in _rules if fnmatch.fnmatchcase(name, pattern)]
    if not matched:
        return
    if _log is not None:
        line = f"{time.time():.3f} {os.getpid()} {name}\n".encode()
        fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of a short line with O_APPEND: never interleaved
        finally:
            os.close(fd)
    for actions in matched:
        for kind, value in actions:
            if kind == "sleep":
                time.sleep(float(value))
            else:
                code = getattr(errno, value)
                raise OSError(code, f"{os.strerror(code)} (fault point {name})")


configure(FAULTS_SPEC)
