"""The fork helpers of `settlement.parallel` and the export workers of `adapters.files` built on
them: a child's report or its error comes back, a killed child leaves nothing behind, and both
export strategies publish the same files."""

from __future__ import annotations

import pytest

from settlement import parallel
from settlement.adapters import files as publish
from settlement.errors import SettlementError

pytestmark = pytest.mark.skipif(not parallel.can_fork(), reason="no fork on this platform")


def test_a_child_reports_what_its_work_returns():
    pid, fd = parallel.fork_child(lambda: {"seconds": 1.5, "files": [[1, "a"]]}, nice=1)
    report, status = parallel.join_child(pid, fd)
    assert status == 0 and report == {"seconds": 1.5, "files": [[1, "a"]]}


def test_a_child_reports_its_error():
    def fails() -> None:
        raise OSError("no space left on device")

    report, status = parallel.join_child(*parallel.fork_child(fails))
    assert status != 0 and report == {"error": "OSError: no space left on device"}


def test_a_killed_child_is_reaped():
    import time

    pid, fd = parallel.fork_child(lambda: time.sleep(60))
    parallel.kill_child(pid, fd)
    with pytest.raises(ChildProcessError):
        parallel.os.waitpid(pid, 0)


def _write(writer: publish.DatasetWriter, names: tuple[str, ...]) -> None:
    for name in names:
        writer.sink(name, direct=True).write_raw(f'{{"file":"{name}"}}\n'.encode() * 3, 3)
        writer.finish(name)


@pytest.mark.parametrize("strategy", [publish.FORK, publish.THREAD])
def test_both_export_strategies_publish_the_same_files(tmp_path, strategy):
    writer = publish.DatasetWriter(tmp_path)
    workers = publish.ExportWorkers.start(writer, (("a",), ("b", "c")), _write, strategy)
    assert workers.forked == (strategy == publish.FORK)
    assert workers.join() >= 0
    files = writer.finish_all()
    assert [(f.name, f.rows, f.size) for f in files] == [(n, 3, 3 * 13) for n in "abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.filename for f in files)


def test_a_failing_child_fails_the_export_and_abort_cleans_up(tmp_path):
    def half(writer: publish.DatasetWriter, names: tuple[str, ...]) -> None:
        writer.sink(names[0]).write_raw(b"{}\n", 1)
        raise OSError("no space left on device")

    writer = publish.DatasetWriter(tmp_path)
    workers = publish.ExportWorkers.start(writer, (("a",),), half, publish.FORK)
    with pytest.raises(SettlementError, match="no space left"):
        workers.join()
    workers.abort()
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_unknown_strategy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fork"):
        publish.ExportWorkers.start(publish.DatasetWriter(tmp_path), (("a",),), _write, "spawn")
