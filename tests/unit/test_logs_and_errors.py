"""Log lines (settlement/logs.py), the CLI's last-resort error line (cli/errors.py) and the
serve supervisor (cli/supervise.py) on plain child processes."""

from __future__ import annotations

import io
import json
import logging
import sys
import time

import pytest

from settlement.cli.errors import describe
from settlement.cli.supervise import Child, Supervisor
from settlement.errors import ChainError, ConfigError
from settlement.logs import setup_logging

FIELDS = ["time", "level", "component", "logger", "message"]


@pytest.fixture
def restore_root() -> object:
    from settlement import logs

    root = logging.getLogger()
    handlers, level, fmt = list(root.handlers), root.level, logs.current_format
    yield
    logs.current_format = fmt
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _emit(fmt: str) -> list[str]:
    stream = io.StringIO()
    setup_logging(fmt, component="submitter", stream=stream)
    setup_logging(fmt, component="submitter", stream=stream)  # a second setup: no second line
    log = logging.getLogger("settlement.test")
    log.info("proposing root %s\nforged line", "0xab")
    log.warning("rpc at %s is down", "http://user:pw@rpc.example:8545/secretkey")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("tick failed")
    return stream.getvalue().splitlines()


def test_json_lines_parse_with_the_same_fields_and_no_duplicates(restore_root: object) -> None:
    lines = _emit("json")
    assert len(lines) == 3, lines
    events = [json.loads(line) for line in lines]
    for e in events:
        assert list(e)[:5] == FIELDS
        assert e["component"] == "submitter" and e["logger"] == "settlement.test"
    assert events[0]["message"] == "proposing root 0xab\nforged line"
    assert events[1]["message"] == "rpc at http://rpc.example:8545 is down"
    assert "pw" not in lines[1] and "secretkey" not in lines[1]
    assert events[2]["level"] == "ERROR" and "ValueError: boom" in events[2]["exc"]


def test_text_lines_are_one_line_per_event_with_the_same_fields(restore_root: object) -> None:
    lines = _emit("text")
    assert len(lines) == 3, lines
    stamp, level, component, logger_colon, *rest = lines[0].split(" ")
    assert stamp.endswith("Z") and "T" in stamp
    assert (level, component, logger_colon) == ("INFO", "submitter", "settlement.test:")
    assert " ".join(rest) == "proposing root 0xab\\nforged line"  # a newline cannot forge a line
    assert lines[1].endswith("rpc at http://rpc.example:8545 is down")
    assert " exc=Traceback" in lines[2] and "ValueError: boom" in lines[2]


def test_a_format_string_holding_a_url_with_a_placeholder_still_logs(restore_root: object) -> None:
    stream = io.StringIO()
    setup_logging("text", stream=stream)
    logging.getLogger("x").info("metrics on http://%s:%d/metrics", "127.0.0.1", 9464)
    assert stream.getvalue().rstrip().endswith("metrics on http://127.0.0.1:9464")


def test_the_stderr_handler_writes_to_stderr_as_it_is_now(
    restore_root: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command run in-process (CliRunner) set up logging on a stderr buffer it then closed;
    the next event goes to the stderr of now, not to the closed buffer."""
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("text", component="cli")
    logging.getLogger("settlement.x").warning("while the first command runs")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("settlement.x").warning("database migrated")
    out = second.getvalue()
    assert "Logging error" not in out
    assert out.count("\n") == 1 and out.rstrip().endswith("database migrated"), out


def test_errors_become_one_line_and_the_documented_exit_code() -> None:
    import requests

    assert describe(ConfigError("bad W2E_PORT")) == ("bad W2E_PORT", 2)
    assert describe(ChainError("reverted")) == ("reverted", 3)
    error = requests.exceptions.ConnectionError("refused")
    error.request = requests.Request("POST", "http://user:pw@10.0.0.5:8545/key").prepare()
    line, code = describe(error)
    assert code == 3
    assert line.startswith("chain unreachable at http://10.0.0.5:8545 (ConnectionError)"), line
    assert "pw" not in line and "key" not in line.split("(")[0]
    line, code = describe(RuntimeError("see postgresql://a:secret@db:5432/x"))
    assert code == 4 and "secret" not in line and "--debug" in line


def _child(name: str, code: str) -> Child:
    return Child(name, [sys.executable, "-c", code], {})


def test_supervisor_restarts_a_dead_child_and_stops_all() -> None:
    import threading

    sup = Supervisor(
        [_child("steady", "import time; time.sleep(60)"), _child("flaky", "raise SystemExit(1)")],
        first_backoff=0.1,
        max_backoff=0.4,
        stop_timeout=10,
    )
    starts: list[str] = []
    original = sup._start

    def counting(child: Child) -> None:
        starts.append(child.name)
        original(child)

    sup._start = counting  # type: ignore[method-assign]
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(sup._run_without_signals()))
    thread.start()
    deadline = time.monotonic() + 30
    while starts.count("flaky") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    steady = sup.children[0].process
    sup.request_stop()
    thread.join(30)
    assert starts.count("flaky") >= 4 and starts.count("steady") == 1
    assert done == [0]
    assert steady is not None and steady.returncode == -15  # SIGTERM, then reaped
    assert sup.children[1].failures >= 3  # backoff grew while it kept dying


def test_a_child_with_bad_settings_stops_serve_with_exit_2() -> None:
    sup = Supervisor(
        [
            _child("steady", "import time; time.sleep(60)"),
            _child("misconfigured", "raise SystemExit(2)"),
        ],
        first_backoff=0.1,
        stop_timeout=10,
    )
    assert sup._run_without_signals() == 2
    assert all(c.process is None for c in sup.children)


def test_a_taken_metrics_port_is_a_config_error() -> None:
    import socket

    from settlement.cli.options import serve_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            serve_metrics(port, "127.0.0.1")


def test_the_last_error_line_is_json_when_the_command_logs_json(
    restore_root: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from settlement import logs
    from settlement.cli.errors import report

    stream = io.StringIO()
    setup_logging("json", component="scheduler", stream=stream)
    try:
        assert report(ConfigError("W2E_PORT: not a number")) == 2
    finally:
        logs.current_format = None
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["message"] == "error: W2E_PORT: not a number" and event["level"] == "ERROR"
    assert capsys.readouterr().err == ""


def test_invalid_settings_are_one_line_naming_each_variable_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from settlement.config import load_settings

    monkeypatch.setenv("W2E_PORT", "abc")
    monkeypatch.setenv("W2E_LOG_FORMAT", "yaml-secret-value")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "W2E_PORT: Input should be a valid integer" in message
    assert "W2E_LOG_FORMAT: " in message and "yaml-secret-value" not in message
