"""Step 1, ``load-window``: the trigger's window manifest to a stratified train/test split.

A window route (``mode: window``) starts one run per batch of objects and passes the run the URI
of a JSON manifest listing every object of the batch at its generation
(``schemas/window-manifest.schema.json``). This step reads the manifest, reads each object at
exactly the listed generation (so an object overwritten since the window closed fails the run
instead of training on other data), validates the CSV rows and splits them.

CSV shards: a header; one ``target_column`` of 0/1 labels; an optional ``id_column`` that is
ignored; every other column a finite number (a feature). Every shard has the same columns.
Anything else fails the run with a ``ValueError`` naming the manifest field, or the file, line
and column.
"""

from collections.abc import Callable
from typing import NamedTuple

from kfp.dsl import Dataset, Metrics, Output

from examples.churn._split import write_split
from pipeline_specs import storage
from pipeline_specs.storage import read_bytes


def read_window_manifest(manifest_uri: str) -> dict:
    """Read the trigger's window manifest and check what this pipeline relies on.

    Returns the manifest; raises ``ValueError`` naming the manifest and the field at fault.
    """
    import json
    import re

    if not manifest_uri:
        raise ValueError(
            'manifest_uri is empty: set the route\'s parameter manifest_uri: "{manifest_uri}" '
            "(a window route fills it)"
        )
    where = f"manifest {manifest_uri}"
    try:
        raw, _ = read_bytes(manifest_uri)
    except FileNotFoundError as exc:
        raise ValueError(f"{where} does not exist") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a JSON object, found {type(doc).__name__}")
    kind = "retrain-trigger.window-manifest/v1"
    if doc.get("kind") != kind:
        raise ValueError(
            f"{where}: kind is {doc.get('kind')!r}, expected {kind!r} (a window manifest the "
            "trigger writes; is the route's data mode 'window'?)"
        )
    opened_at = doc.get("opened_at")
    if isinstance(opened_at, bool) or not isinstance(opened_at, int | float) or opened_at < 0:
        raise ValueError(f"{where}: opened_at must be a time in seconds, got {opened_at!r}")
    objects = doc.get("objects")
    if not isinstance(objects, list) or not objects:
        raise ValueError(f"{where}: 'objects' must be a non-empty list")
    if doc.get("count") != len(objects):
        raise ValueError(f"{where}: count is {doc.get('count')!r} but objects lists {len(objects)}")
    seen = set()
    for index, obj in enumerate(objects):
        at = f"{where}: objects[{index}]"
        if not isinstance(obj, dict):
            raise ValueError(f"{at} must be a JSON object, found {type(obj).__name__}")
        bucket, name = obj.get("bucket"), obj.get("name")
        if not isinstance(bucket, str) or not re.fullmatch(
            r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", bucket
        ):
            raise ValueError(f"{at}.bucket is not a bucket name: {bucket!r}")
        if not isinstance(name, str) or not name or "\n" in name or "\r" in name:
            raise ValueError(f"{at}.name is not an object name: {name!r}")
        if obj.get("uri") != f"gs://{bucket}/{name}":
            raise ValueError(f"{at}.uri is {obj.get('uri')!r}, expected 'gs://{bucket}/{name}'")
        generation = obj.get("generation")
        if not isinstance(generation, str) or not re.fullmatch(r"[1-9][0-9]{0,19}", generation):
            raise ValueError(
                f"{at}.generation must be a positive whole number written as a string, "
                f"got {generation!r}"
            )
        if (bucket, name, generation) in seen:
            raise ValueError(f"{at} repeats gs://{bucket}/{name}#{generation}")
        seen.add((bucket, name, generation))
    return doc


def parse_table(uri: str, data: bytes, target_column: str, id_column: str):
    """Parse and validate one CSV shard: ``(feature names, feature rows, labels)``."""
    import csv
    import io
    import math

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{uri}: not UTF-8 text ({exc})") from exc
    reader = csv.reader(io.StringIO(text))
    try:
        header = [cell.strip() for cell in next(reader, [])]
        if not any(header):
            raise ValueError(f"{uri}: no header line (the first line names the columns)")
        if target_column not in header:
            raise ValueError(
                f"{uri} header: no target column {target_column!r} (columns: {', '.join(header)})"
            )
        keep = [i for i, col in enumerate(header) if col not in (target_column, id_column)]
        if not keep:
            raise ValueError(f"{uri} header: no feature column besides {target_column!r}")
        target = header.index(target_column)
        rows, labels = [], []
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{uri} line {line}: {len(row)} columns, expected {len(header)}")
            label = row[target].strip()
            if label not in ("0", "1"):
                raise ValueError(
                    f"{uri} line {line} column {target_column!r}: {label!r} is not 0 or 1"
                )
            values = []
            for i in keep:
                try:
                    value = float(row[i])
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise ValueError(
                        f"{uri} line {line} column {header[i]!r}: {row[i]!r} is not a finite number"
                    )
                values.append(value)
            rows.append(values)
            labels.append(int(label))
    except csv.Error as exc:
        raise ValueError(f"{uri} line {reader.line_num}: malformed CSV ({exc})") from exc
    return [header[i] for i in keep], rows, labels


def load_window(
    manifest_uri: str,
    target_column: str,
    id_column: str,
    test_fraction: float,
    seed: int,
    train: Output[Dataset],
    test: Output[Dataset],
    stats: Output[Metrics],
) -> NamedTuple(
    "LoadOutputs",
    [("rows", int), ("window_id", str), ("window_opened_at", float), ("data_sources", str)],
):
    """Read every object of the window at its generation, validate it, split it (stratified)."""
    import hashlib
    import json
    import math
    from collections import namedtuple

    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    manifest = read_window_manifest(manifest_uri)
    names, first_uri = None, ""
    rows, labels, sources = [], [], []
    for obj in manifest["objects"]:
        uri, generation = obj["uri"], obj["generation"]
        try:
            data, _ = read_bytes(uri, generation)
        except FileNotFoundError as exc:
            raise ValueError(f"{exc} (overwritten or deleted since the window closed)") from exc
        shard_names, shard_rows, shard_labels = parse_table(uri, data, target_column, id_column)
        if names is None:
            names, first_uri = shard_names, uri
        elif shard_names != names:
            raise ValueError(
                f"{uri} has feature columns {shard_names} but {first_uri} has {names}; every "
                "shard of a window must have the same columns"
            )
        rows += shard_rows
        labels += shard_labels
        sources.append(
            {
                "uri": uri,
                "generation": generation,
                "rows": len(shard_rows),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        print(f"read {uri} generation={generation} rows={len(shard_rows)}")
    positives = sum(labels)
    counts = {0: len(labels) - positives, 1: positives}
    if min(counts.values()) < 2:
        raise ValueError(
            f"the window has {counts[0]} rows of {target_column}=0 and {counts[1]} of "
            f"{target_column}=1; training needs at least 2 of each"
        )
    test_rows = math.ceil(test_fraction * len(labels))
    if test_rows < 2 or len(labels) - test_rows < 2:
        raise ValueError(
            f"test_fraction {test_fraction} splits {len(labels)} rows into "
            f"{len(labels) - test_rows} train and {test_rows} test rows; each needs at least 2"
        )
    x_train, x_test, y_train, y_test = train_test_split(
        rows, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    for artifact, x, y in ((train, x_train, y_train), (test, x_test, y_test)):
        write_split(artifact.path, names, x, y, target_column)
        artifact.metadata.update(
            {"format": "csv", "rows": len(y), "features": names, "target_column": target_column}
        )
    stats.log_metric("rows", len(labels))
    stats.log_metric("train_rows", len(y_train))
    stats.log_metric("test_rows", len(y_test))
    stats.log_metric("shards", len(sources))
    stats.log_metric("features", len(names))
    stats.log_metric("positive_rate", positives / len(labels))
    stats.metadata["manifest_uri"] = manifest_uri
    stats.metadata["window_id"] = str(manifest.get("window_id", ""))
    stats.metadata["sources"] = sources
    print(
        f"validated {len(labels)} rows ({positives} positive) of {len(names)} features from "
        f"{len(sources)} shard(s); train={len(y_train)} test={len(y_test)}"
    )
    outputs = namedtuple("LoadOutputs", ["rows", "window_id", "window_opened_at", "data_sources"])
    return outputs(
        len(labels),
        str(manifest.get("window_id", "")),
        float(manifest["opened_at"]),
        json.dumps(sources, sort_keys=True),
    )


HELPERS: tuple[Callable, ...] = (
    *storage.READ_HELPERS,
    read_window_manifest,
    parse_table,
    write_split,
)
