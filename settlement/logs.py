"""Log lines of every long-running command: one line per event, as text or JSON
(`W2E_LOG_FORMAT`), with the same fields in both and every URL cut to scheme://host:port.

Fields, in this order: `time` (UTC, ISO 8601, milliseconds), `level`, `component` (api,
scheduler, submitter, watchtower, serve, or the command), `logger`, `message`, and `exc`
(the traceback) when there is one. Text puts them on one line as
`TIME LEVEL COMPONENT LOGGER: MESSAGE [exc=...]`; JSON as one object. A newline inside a
message or traceback is written as the two characters `\\n`, so one event is always one
line: a value a client sent can never forge a line of its own.

Imports nothing heavy: `settlement serve` and the CLI's entry point load it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")

# Libraries that log a line per request, tick or migration at INFO: only their warnings are
# news. APScheduler warns at every tick skipped while a long close runs, which is by design
# (max_instances=1): only its errors.
_QUIET = {
    "httpx": "WARNING",
    "httpcore": "WARNING",
    "urllib3": "WARNING",
    "web3": "WARNING",
    "asyncio": "WARNING",
    "alembic": "WARNING",
    "apscheduler": "ERROR",
}


current_format: str | None = None  # what setup_logging installed last (None: not yet)
_level_before = logging.WARNING  # the root logger's level before setup_logging


class LineFormatter(logging.Formatter):
    """One record -> one line of text or JSON, with the fields of the module docstring."""

    def __init__(self, fmt: str = "text", component: str = "settlement") -> None:
        super().__init__()
        if fmt not in FORMATS:
            raise ValueError(f"log format {fmt!r}: use text or json")
        self.json = fmt == "json"
        self.component = component

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        seconds = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z"
        out = {
            "time": stamp,
            "level": record.levelname,
            "component": getattr(record, "component", None) or self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return out

    def format(self, record: logging.LogRecord) -> str:
        f = self.fields(record)
        if self.json:
            return json.dumps(f, ensure_ascii=False)
        line = f"{f['time']} {f['level']} {f['component']} {f['logger']}: {f['message']}"
        if "exc" in f:
            line += f" exc={f['exc']}"
        return _one_line(line)


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so a second setup replaces it, never adds.

    Made for stderr (no stream given), it writes to `sys.stderr` as it is at each event, not
    as it was at setup: a command run in-process (Typer's CliRunner, a test) swaps stderr for
    a buffer and closes it afterwards, and an event logged before the next setup would go to
    that closed buffer ("--- Logging error ---" in the next command's output)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream or sys.stderr)
        self._follows_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follows_stderr:
            self.stream = sys.stderr  # under the handler's lock (Handler.handle holds it)
        super().emit(record)


def setup_logging(
    fmt: str = "text",
    *,
    component: str = "settlement",
    level: int = logging.INFO,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every logger to one stderr handler in `fmt`, with URLs redacted. Idempotent:
    calling it again (a command run twice in one process, a test) swaps the handler, and the
    handlers other code put on the root logger (logging.basicConfig) are removed, so no
    event is printed twice."""
    from settlement.errors import RedactUrls

    global current_format, _level_before
    current_format = fmt
    root = logging.getLogger()
    if not any(isinstance(h, _OurHandler) for h in root.handlers):
        _level_before = root.level
    handler = _OurHandler(stream)
    handler.setFormatter(LineFormatter(fmt, component))
    handler.addFilter(RedactUrls())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    return handler


def reset_logging() -> None:
    """Undo `setup_logging`: the root logger's handler and level as they were before it. The
    CLI calls it as each command starts, so a command run in-process after another (Typer's
    CliRunner, an embedding program) logs as it would in a fresh process."""
    global current_format
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _OurHandler)]
    for h in ours:
        root.removeHandler(h)
    if ours:
        root.setLevel(_level_before)
    current_format = None


def dict_config(fmt: str = "text", component: str = "api") -> dict[str, Any]:
    """The same setup as a logging.config dict, for uvicorn: each of its worker processes
    configures logging from it anew. Its own loggers (uvicorn, uvicorn.error,
    uvicorn.access) and the root logger write through one handler of this format; the
    redacting filter sits on the handler (a logger's filters skip records propagated from
    its children) and on the loggers."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "line",
        "filters": ["redact_urls"],
        "stream": "ext://sys.stderr",
    }
    logger = {"handlers": ["line"], "level": "INFO", "propagate": False, "filters": ["redact_urls"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact_urls": {"()": "settlement.errors.RedactUrls"}},
        "formatters": {
            "line": {"()": "settlement.logs.LineFormatter", "fmt": fmt, "component": component}
        },
        "handlers": {"line": handler},
        "loggers": {
            "uvicorn": dict(logger),
            "uvicorn.error": {"level": "INFO", "filters": ["redact_urls"]},
            "uvicorn.access": dict(logger),
            **{name: {"level": quiet} for name, quiet in _QUIET.items()},
        },
        "root": {"handlers": ["line"], "level": "INFO"},
    }
