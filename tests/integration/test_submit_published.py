"""A root goes on chain only once its dataset is where its dataURI serves it.

Found by `scripts/chaos crash`: the scheduler SIGKILLed between a close's commit and its
manifest's rename left epoch 81 committed without manifest.json; the submitter proposed its
root at once, and the watchtower, unable to read the dataset inside a 3 s challenge window,
revoked the service's honest root. The submitter now puts the manifest back from the stored
bytes first, and proposes nothing while a data file the manifest names is missing.
"""

from __future__ import annotations

from pathlib import Path

from test_submitter_anvil import Net, make_net

from settlement.adapters import files as publish
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import EpochStore
from settlement.services.submit import DATA_MISSING


def _net(tmp_path: Path) -> Net:
    return make_net(tmp_path, "", funded_epochs=3)  # "": the embedded py-evm chain


def test_a_manifest_lost_to_a_crash_is_published_before_the_root(tmp_path: Path) -> None:
    n = _net(tmp_path)
    try:
        n.close(1)
        directory = publish.epoch_dir(n.settings.data_dir, 1)
        manifest = directory / "manifest.json"
        stored = EpochStore(n.store).get(1)
        assert stored is not None and manifest.read_bytes() == stored.manifest
        manifest.unlink()  # as a SIGKILL between the commit and the rename leaves it

        said: list[str] = []
        sub = n.submitter(say=said.append)
        (row,) = sub.step()
        assert row.status == sdb.MINED and row.epoch == 1
        assert manifest.read_bytes() == stored.manifest
        assert "published the manifest of epoch 1, missing after its close" in said
        assert n.distributor.pending_root() is not None
    finally:
        n.store.close()


def test_no_root_while_a_data_file_is_missing(tmp_path: Path) -> None:
    n = _net(tmp_path)
    try:
        n.close(1)
        directory = publish.epoch_dir(n.settings.data_dir, 1)
        data = sorted(p for p in directory.iterdir() if p.name != "manifest.json")
        assert len(data) >= 5
        moved = data[0].rename(tmp_path / data[0].name)

        said: list[str] = []
        sub = n.submitter(say=said.append)
        assert sub.step() == []
        assert n.distributor.pending_root() is None
        assert sub.rows.count(sdb.MINED) == 0
        (alert,) = [s for s in said if s.startswith("ALERT: not proposing epoch 1")]
        assert data[0].name.split(".")[0][:16] in alert and str(directory) in alert
        assert DATA_MISSING._value.get() == 1

        moved.rename(data[0])  # restored from a backup: proposed on the next tick
        (row,) = sub.step()
        assert row.status == sdb.MINED and row.epoch == 1
        assert DATA_MISSING._value.get() == 0
    finally:
        n.store.close()
