"""settlement/faults.py: fault points do nothing unless configured; configured, they log,
sleep or raise the named errno, only where their pattern matches."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from settlement import faults


@pytest.fixture(autouse=True)
def _off() -> Iterator[None]:
    faults.configure(None)
    yield
    faults.configure(None)


def test_unset_points_do_nothing(tmp_path: Path) -> None:
    faults.point("files.finish")  # no error, no file
    assert list(tmp_path.iterdir()) == []


def test_log_and_raise_only_where_the_pattern_matches(tmp_path: Path) -> None:
    log = tmp_path / "faults.log"
    faults.configure(f"log={log};close.*;files.finish:raise=ENOSPC")
    faults.point("close.begin")
    faults.point("ingest.commit")  # matches nothing: not logged
    with pytest.raises(OSError) as raised:
        faults.point("files.finish")
    assert raised.value.errno == errno.ENOSPC
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [(int(pid), name) for _, pid, name in lines] == [
        (os.getpid(), "close.begin"),
        (os.getpid(), "files.finish"),
    ]


def test_sleep_and_switching_off() -> None:
    faults.configure("propose.sent:sleep=0.2")
    t0 = time.monotonic()
    faults.point("propose.sent")
    assert time.monotonic() - t0 >= 0.2
    faults.configure(None)
    with_raise = "files.finish:raise=EROFS"
    faults.configure(with_raise)
    with pytest.raises(OSError):
        faults.point("files.finish")
    faults.configure("")
    faults.point("files.finish")


@pytest.mark.parametrize("spec", ["x:explode=1", "x:sleep=soon", "x:raise=ENOTANERRNO"])
def test_a_bad_rule_fails_at_configuration(spec: str) -> None:
    with pytest.raises(ValueError, match="W2E_FAULTS"):
        faults.configure(spec)
