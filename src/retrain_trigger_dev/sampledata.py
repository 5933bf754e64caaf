"""Sample training data: scikit-learn's 8x8 digits written as CSV shards.

The digits data set ships inside scikit-learn, so nothing is downloaded. Each shard has the header
``label,p0,...,p63`` and integer values (labels 0..9, pixels 0..16), the input format of the
``mnist-training`` pipeline. ``dest`` is a local folder or ``gs://bucket/prefix``; against a
storage emulator (``STORAGE_EMULATOR_HOST`` set) anonymous credentials are used.

    python -m retrain_trigger_dev.sampledata DEST [--shards N] [--broken]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence

PIXELS = 64
BROKEN_SHARD = "digits-broken.csv"


def shard_name(index: int, shards: int) -> str:
    return f"digits-{index:05d}-of-{shards:05d}.csv"


def _csv(rows: Sequence[Sequence[int]]) -> bytes:
    out = io.StringIO()
    out.write(",".join(["label", *(f"p{i}" for i in range(PIXELS))]) + "\n")
    for row in rows:
        out.write(",".join(str(int(v)) for v in row) + "\n")
    return out.getvalue().encode()


def _digits_rows() -> list[list[int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return [
        [int(label), *(int(v) for v in pixels)]
        for label, pixels in zip(digits.target, digits.data, strict=True)
    ]


def _broken_rows(rows: list[list[int]]) -> list[list[int]]:
    """A few valid rows, then one with label 11 (outside 0..9) on line 4 of the file."""
    bad = list(rows[2])
    bad[0] = 11
    return [rows[0], rows[1], bad, rows[3]]


def write_shards(dest: str, shards: int = 4, *, broken: bool = False) -> list[str]:
    """Write the digits data set (1797 rows) as ``shards`` CSV files under ``dest``.

    Rows are dealt out in order, so the shards differ in size by at most one row. With
    ``broken=True`` a further shard, ``digits-broken.csv``, holds a row whose label is 11, which
    the pipeline's validation rejects. Returns the URIs (or paths) written, in order.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    rows = _digits_rows()
    if shards > len(rows):
        raise ValueError(f"shards must be at most {len(rows)}, got {shards}")
    bounds = [len(rows) * i // shards for i in range(shards + 1)]
    files = [(shard_name(i, shards), _csv(rows[bounds[i] : bounds[i + 1]])) for i in range(shards)]
    if broken:
        files.append((BROKEN_SHARD, _csv(_broken_rows(rows))))

    written: list[str] = []
    if dest.startswith("gs://"):
        from google.cloud import storage

        bucket_name, _, prefix = dest[len("gs://") :].partition("/")
        if not bucket_name:
            raise ValueError(f"{dest!r} is not a valid gs:// URI: no bucket")
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "local-emulator"
            client = storage.Client(project=project, credentials=AnonymousCredentials())
        else:
            client = storage.Client()
        bucket = client.bucket(bucket_name)
        prefix = prefix.strip("/")
        for name, data in files:
            object_name = f"{prefix}/{name}" if prefix else name
            bucket.blob(object_name).upload_from_string(data, content_type="text/csv")
            written.append(f"gs://{bucket_name}/{object_name}")
        return written

    os.makedirs(dest, exist_ok=True)
    for name, data in files:
        path = os.path.join(dest, name)
        with open(path, "wb") as handle:
            handle.write(data)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retrain_trigger_dev.sampledata",
        description="Write scikit-learn's digits data set as CSV shards (local folder or gs://).",
    )
    parser.add_argument("dest", help="local folder or gs://bucket/prefix")
    parser.add_argument("--shards", type=int, default=4, help="number of shards (default: 4)")
    parser.add_argument(
        "--broken",
        action="store_true",
        help=f"also write {BROKEN_SHARD}, which fails validation (a label of 11)",
    )
    args = parser.parse_args(argv)
    try:
        written = write_shards(args.dest, args.shards, broken=args.broken)
    except ValueError as exc:
        parser.error(str(exc))
    for uri in written:
        print(uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
