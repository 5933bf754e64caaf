"""Step 1, ``load-and-validate``: read the CSV shards, validate them, split them.

``data_uri`` is a CSV file, a folder or ``gs://`` prefix (every ``*.csv`` below it), or a
``*.json`` manifest ``{"objects": [{"uri": "gs://...", "generation": "..."}]}`` (the trigger's
window manifest, whose objects are read at exactly the listed generation). Each shard has an
optional ``label`` header, then rows of ``label`` 0..9 and 64 pixels valued 0..16 (8x8 digits) or
784 pixels valued 0..255 (28x28 images). Bad data fails the run with a ``ValueError`` naming the
file, line and column. Outputs a stratified train/test split and the data lineage (every URI read,
with its GCS generation).
"""

from collections.abc import Callable
from typing import NamedTuple

from kfp.dsl import Dataset, Metrics, Output

from pipeline_specs import storage
from pipeline_specs.mnist._split import save_split
from pipeline_specs.storage import gcs_client, local_path, read_bytes, split_gcs_uri


def list_data_objects(data_uri: str) -> list[tuple[str, str]]:
    """Resolve ``data_uri`` to the shards to read, as ``(uri, generation)`` pairs.

    ``data_uri`` is a CSV file, a folder or ``gs://`` prefix (every ``*.csv`` below it, sorted),
    or a ``*.json`` manifest ``{"objects": [{"uri": ..., "generation": ...}, ...]}`` whose
    objects are read at exactly the listed generation.
    """
    import json
    import os

    if not data_uri:
        raise ValueError("data_uri is empty")
    found: list[tuple[str, str]] = []
    if data_uri.lower().endswith(".json"):
        try:
            raw, _ = read_bytes(data_uri)
        except FileNotFoundError as exc:
            raise ValueError(f"manifest {data_uri} does not exist") from exc
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"manifest {data_uri} is not valid JSON: {exc}") from exc
        objects = doc.get("objects") if isinstance(doc, dict) else None
        if not isinstance(objects, list):
            raise ValueError(f"manifest {data_uri} must be a JSON object with an 'objects' list")
        for index, obj in enumerate(objects):
            if isinstance(obj, str):
                uri, generation = obj, ""
            elif isinstance(obj, dict):
                uri = obj.get("uri") or ""
                if not uri and obj.get("bucket") and obj.get("name"):
                    uri = f"gs://{obj['bucket']}/{obj['name']}"
                generation = str(obj.get("generation") or "")
            else:
                uri, generation = "", ""
            if not uri:
                raise ValueError(f"manifest {data_uri}: objects[{index}] has no 'uri'")
            if (uri, generation) not in found:
                found.append((uri, generation))
        if not found:
            raise ValueError(f"manifest {data_uri} lists no objects")
        return found
    if data_uri.startswith("gs://"):
        bucket_name, name = split_gcs_uri(data_uri)
        client = gcs_client()
        if name.lower().endswith(".csv"):
            blob = client.bucket(bucket_name).get_blob(name)
            if blob is None:
                raise ValueError(f"{data_uri} does not exist")
            return [(data_uri, str(blob.generation))]
        prefix = name.rstrip("/") + "/" if name.strip("/") else ""
        for blob in client.list_blobs(bucket_name, prefix=prefix):
            if blob.name.lower().endswith(".csv"):
                found.append((f"gs://{bucket_name}/{blob.name}", str(blob.generation)))
        found.sort()
    else:
        path = local_path(data_uri)
        if os.path.isfile(path):
            return [(path, "")]
        if not os.path.isdir(path):
            raise ValueError(f"{data_uri} does not exist")
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            found.extend(
                (os.path.join(folder, f), "") for f in sorted(files) if f.lower().endswith(".csv")
            )
    if not found:
        raise ValueError(f"no CSV shards (*.csv) found under {data_uri}")
    return found


def parse_shard(uri: str, data: bytes):
    """Parse and validate one CSV shard; returns an int64 array ``(rows, 1 + pixels)``.

    The header is optional; when present its first column must be ``label``. Every row must have
    65 columns (label + 8x8 pixels valued 0..16) or 785 (label + 28x28 pixels valued 0..255).
    Raises ``ValueError`` naming the file, line and column of the first problem.
    """
    import csv
    import io

    import numpy as np

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{uri}: not UTF-8 text ({exc})") from exc
    reader = csv.reader(io.StringIO(text))
    header = None
    rows = []
    lines = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if header is None and not rows and not row[0].strip().lstrip("+-").isdigit():
                if row[0].strip().lower() != "label":
                    raise ValueError(
                        f"{uri} line {reader.line_num} column 1: expected a 'label' header or an "
                        f"integer label, found {row[0]!r}"
                    )
                header = [cell.strip() for cell in row]
                continue
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise ValueError(f"{uri} line {reader.line_num}: malformed CSV ({exc})") from exc

    def column(index: int) -> str:
        if header is not None:
            return repr(header[index])
        return "'label'" if index == 0 else f"'p{index - 1}' (#{index + 1})"

    if header is None and not rows:
        return np.empty((0, 0), dtype=np.int64)  # an empty file: no width to check
    width = len(header) if header is not None else len(rows[0])
    if width not in (65, 785):
        where = "header" if header is not None else f"line {lines[0]}"
        raise ValueError(
            f"{uri} {where}: {width} columns; expected 65 (label + 64 pixels of 8x8 digits) "
            f"or 785 (label + 784 pixels of 28x28 images)"
        )
    for line, row in zip(lines, rows, strict=True):
        if len(row) != width:
            raise ValueError(
                f"{uri} line {line}: {len(row)} columns, expected {width} like the "
                f"{'header' if header is not None else 'first row'}"
            )
    if not rows:
        return np.empty((0, width), dtype=np.int64)
    try:
        values = np.array(rows, dtype=np.int64)
    except (ValueError, OverflowError):
        for line, row in zip(lines, rows, strict=True):
            for index, cell in enumerate(row):
                try:
                    valid = -(2**63) <= int(cell) < 2**63
                except ValueError:
                    valid = False
                if not valid:
                    raise ValueError(
                        f"{uri} line {line} column {column(index)}: {cell!r} is not an integer"
                    ) from None
        raise
    labels = values[:, 0]
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{uri} line {lines[i]} column {column(0)}: label {int(labels[i])} is outside 0..9"
        )
    pixel_max = 16 if width == 65 else 255
    pixels = values[:, 1:]
    bad_cells = np.argwhere((pixels < 0) | (pixels > pixel_max))
    if bad_cells.size:
        i, j = (int(v) for v in bad_cells[0])
        raise ValueError(
            f"{uri} line {lines[i]} column {column(j + 1)}: pixel value {int(pixels[i, j])} is "
            f"outside 0..{pixel_max} (the range for {width - 1} pixel columns)"
        )
    return values


def load_and_validate(
    data_uri: str,
    test_fraction: float,
    seed: int,
    train: Output[Dataset],
    test: Output[Dataset],
    stats: Output[Metrics],
) -> NamedTuple("LoadOutputs", [("rows", int), ("features", int), ("data_sources", str)]):
    """Read and validate every shard of ``data_uri``, then split it (stratified, by ``seed``)."""
    import hashlib
    import json
    import math
    from collections import namedtuple

    import numpy as np
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    objects = list_data_objects(data_uri)
    parts, sources = [], []
    width, width_uri = 0, ""
    for uri, generation in objects:
        try:
            data, read_generation = read_bytes(uri, generation)
        except FileNotFoundError as exc:
            hint = " (overwritten or deleted since it was listed)" if generation else ""
            raise ValueError(f"{exc}{hint}") from exc
        values = parse_shard(uri, data)
        if values.shape[1]:
            if not width:
                width, width_uri = values.shape[1], uri
            elif values.shape[1] != width:
                raise ValueError(
                    f"mixed widths: {uri} has {values.shape[1] - 1} pixel columns but "
                    f"{width_uri} has {width - 1}; all shards must have the same image size"
                )
        if len(values):
            parts.append(values)
        sources.append(
            {
                "uri": uri,
                "generation": read_generation,
                "rows": len(values),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        print(f"read {uri} generation={read_generation or '-'} rows={len(values)}")
    if not parts:
        raise ValueError(f"empty data: no data rows in the {len(objects)} shard(s) of {data_uri}")
    values = np.concatenate(parts)
    features, labels = values[:, 1:], values[:, 0]
    classes, counts = np.unique(labels, return_counts=True)
    rows = len(labels)
    if len(classes) < 2:
        raise ValueError(
            f"single class: all {rows} rows of {data_uri} have label {int(classes[0])}; "
            "training needs at least 2 classes"
        )
    if counts.min() < 2:
        rare = [int(k) for k, n in zip(classes, counts, strict=True) if n < 2]
        raise ValueError(
            f"class(es) {rare} of {data_uri} have a single row; a stratified split needs at "
            "least 2 rows per class"
        )
    test_rows = math.ceil(test_fraction * rows)
    if test_rows < len(classes) or rows - test_rows < len(classes):
        raise ValueError(
            f"test_fraction {test_fraction} splits {rows} rows into {rows - test_rows} train and "
            f"{test_rows} test rows; each side needs at least one row per class ({len(classes)})"
        )
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    pixel_max = 16 if width == 65 else 255
    for artifact, x, y in ((train, x_train, y_train), (test, x_test, y_test)):
        save_split(artifact.path, x, y, pixel_max)
        artifact.metadata.update(
            {"format": "npz", "rows": len(y), "features": width - 1, "pixel_max": pixel_max}
        )

    stats.log_metric("rows", rows)
    stats.log_metric("train_rows", len(y_train))
    stats.log_metric("test_rows", len(y_test))
    stats.log_metric("shards", len(objects))
    stats.log_metric("empty_shards", sum(1 for s in sources if not s["rows"]))
    stats.log_metric("classes", len(classes))
    stats.log_metric("features", width - 1)
    stats.log_metric("class_fraction_min", float(counts.min() / rows))
    stats.log_metric("class_fraction_max", float(counts.max() / rows))
    for k, n in zip(classes, counts, strict=True):
        stats.log_metric(f"class_{int(k)}_rows", int(n))
    stats.metadata["data_uri"] = data_uri
    stats.metadata["sources"] = sources
    print(
        f"validated {rows} rows, {len(classes)} classes, {width - 1} pixels from "
        f"{len(objects)} shard(s); train={len(y_train)} test={len(y_test)}"
    )
    outputs = namedtuple("LoadOutputs", ["rows", "features", "data_sources"])
    return outputs(rows, width - 1, json.dumps(sources, sort_keys=True))


HELPERS: tuple[Callable, ...] = (*storage.READ_HELPERS, list_data_objects, parse_shard, save_split)
