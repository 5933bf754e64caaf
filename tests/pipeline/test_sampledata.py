"""retrain_trigger_dev.sampledata: the digits data set as CSV shards."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from retrain_trigger_dev import sampledata


def _read(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_write_shards_local(tmp_path: Path) -> None:
    written = sampledata.write_shards(str(tmp_path / "out"), 3)
    assert [Path(p).name for p in written] == [
        "digits-00000-of-00003.csv",
        "digits-00001-of-00003.csv",
        "digits-00002-of-00003.csv",
    ]
    rows = []
    for path in written:
        header, *body = _read(Path(path))
        assert header == ["label", *(f"p{i}" for i in range(64))]
        rows += body
    assert len(rows) == 1797
    values = [int(v) for row in rows for v in row[1:]]
    assert min(values) == 0
    assert max(values) == 16
    assert {int(row[0]) for row in rows} == set(range(10))


def test_write_shards_broken(tmp_path: Path) -> None:
    written = sampledata.write_shards(str(tmp_path), 1, broken=True)
    assert Path(written[-1]).name == sampledata.BROKEN_SHARD
    broken = _read(Path(written[-1]))
    assert broken[3][0] == "11"  # line 4 of the file
    assert all(len(row) == 65 for row in broken)


def test_write_shards_rejects_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        sampledata.write_shards(str(tmp_path), 0)
    with pytest.raises(ValueError, match="at most 1797"):
        sampledata.write_shards(str(tmp_path), 5000)


def test_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sampledata.main([str(tmp_path), "--shards", "2", "--broken"]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == [
        "digits-00000-of-00002.csv",
        "digits-00001-of-00002.csv",
        "digits-broken.csv",
    ]
    with pytest.raises(SystemExit):
        sampledata.main([str(tmp_path), "--shards", "0"])


@pytest.mark.emulator
def test_write_shards_to_gcs(gcs_bucket) -> None:
    written = sampledata.write_shards(f"gs://{gcs_bucket.name}/raw/", 2, broken=True)
    assert written == [
        f"gs://{gcs_bucket.name}/raw/digits-00000-of-00002.csv",
        f"gs://{gcs_bucket.name}/raw/digits-00001-of-00002.csv",
        f"gs://{gcs_bucket.name}/raw/digits-broken.csv",
    ]
    blob = gcs_bucket.get_blob("raw/digits-00000-of-00002.csv")
    assert blob.content_type == "text/csv"
    assert blob.download_as_text().startswith("label,p0,p1,")
