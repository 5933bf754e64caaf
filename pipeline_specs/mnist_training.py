"""The ``mnist-training`` pipeline: validate CSV shards, train, evaluate, gate, register.

Steps (each a lightweight KFP v2 component with typed artifacts):

1. ``load-and-validate`` reads CSV shards (``label`` 0..9, then 64 pixel columns valued 0..16 for
   8x8 digits or 784 pixel columns valued 0..255 for 28x28 images) from ``gs://`` or local disk:
   a file, a folder/prefix of ``*.csv`` objects, or a ``*.json`` manifest
   ``{"objects": [{"uri": "gs://...", "generation": "..."}]}``. Bad data fails the run with a
   ``ValueError`` naming the file, line and column. Outputs a stratified train/test split and the
   data lineage (every URI read, with its GCS generation).
2. ``train-model`` fits a scikit-learn estimator (``svc`` or ``logistic_regression``) behind a
   fixed pixel scaling step and saves it as ``model.joblib`` with ``metadata.json`` (framework,
   versions, hyperparameters, commit, image, data generations).
3. ``evaluate-model`` scores the model on the held-out split (accuracy, per-class precision and
   recall, confusion matrix) and scores the current champion, if any, on the same split.
4. ``gate-and-register`` registers the model only when its accuracy is at least ``min_accuracy``
   and not below the champion's on the same split: it copies the model to
   ``<model_registry_uri>/<version>/`` and moves ``champion.json`` with a compare-and-swap (a GCS
   generation precondition, or a lock plus ``os.replace`` on local disk), re-reading and
   re-comparing when another run moved the pointer first. A model that is not better is not an
   error: the run succeeds and the gate's outputs say why nothing was registered.

Parameters (defaults in brackets):

- ``data_uri``: CSV file, folder, ``gs://`` prefix, or ``*.json`` manifest (required)
- ``model_registry_uri``: ``gs://`` or local folder of versions and ``champion.json`` (required)
- ``min_accuracy`` [0.9]: the least held-out accuracy a model needs to be registered
- ``commit_sha`` [""], ``image_uri`` [""]: recorded in the model metadata (lineage)
- ``test_fraction`` [0.2], ``seed`` [42]: the stratified split, and the estimators' seed
- ``model_type`` ["svc"] or "logistic_regression"; ``c`` [10.0]: inverse regularisation;
  ``gamma`` [0.0]: RBF kernel width for ``svc``, ``<= 0`` meaning sklearn's ``"scale"``;
  ``max_iter`` [1000]: iteration cap for ``logistic_regression``

Outputs: ``registered`` (bool), ``version`` ("" unless registered), ``reason``, ``accuracy``.

Registry layout::

    <model_registry_uri>/champion.json              pointer to the current best version
    <model_registry_uri>/<version>/model.joblib     e.g. 20261127T163000Z-ab12cd34
    <model_registry_uri>/<version>/metadata.json
    <model_registry_uri>/champion.json.lock         local registries only (the swap's lock)

Base image and dependencies
---------------------------
Every component is built with ``packages_to_install=[]`` and ``install_kfp_package=False``:
nothing is installed when a step starts. Steps start in seconds, a run never depends on a package
index being reachable, and every step runs exactly the library versions that were tested and that
the model metadata records. The base image must therefore already contain Python 3, ``kfp``,
``scikit-learn``, ``numpy``, ``joblib`` and ``google-cloud-storage``: ``pipeline_specs/Dockerfile``
builds that image, and the deploy build recompiles the spec against it (by digest) with::

    python -m pipeline_specs.compile --image REGION-docker.pkg.dev/PROJECT/REPO/IMAGE@sha256:...

The committed ``mnist_training.yaml`` is compiled with :data:`DEFAULT_IMAGE`
(``python:3.12-slim``), which lacks those packages: it is meant for local runs
(``kfp.local.SubprocessRunner``, which runs the steps in the current Python environment) and as a
reviewable diff. Always compile with ``--image`` for Vertex AI.

Model files are pickles (joblib): only point ``model_registry_uri`` at storage whose writers are
trusted, since evaluating the champion loads its file.
"""

import os
from collections.abc import Callable
from typing import NamedTuple

from kfp import compiler, dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

PIPELINE_NAME = "mnist-training"
DEFAULT_IMAGE = "python:3.12-slim"
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_training.yaml")

# ---------------------------------------------------------------------------------------------
# Helpers shared by the components. KFP copies their source into each component's program
# (``additional_funcs``), so each one imports what it uses inside its own body.
# ---------------------------------------------------------------------------------------------


def _gcs_client():
    """A storage client; anonymous against an emulator when ``STORAGE_EMULATOR_HOST`` is set."""
    import os

    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "local-emulator"
        return storage.Client(project=project, credentials=AnonymousCredentials())
    return storage.Client()


def _split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} is not a valid gs:// URI: no bucket")
    return bucket, name


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _join_uri(base: str, *parts: str) -> str:
    if base.startswith("gs://"):
        return "/".join([base.rstrip("/"), *parts])
    import os

    return os.path.join(_local_path(base), *parts)


def _read_bytes(uri: str, generation: str = "") -> tuple[bytes, str]:
    """Read a whole object or file; returns ``(content, generation)``.

    With ``generation`` set, reads exactly that GCS generation. The generation returned is the
    one actually read (``""`` for local files).
    """
    if uri.startswith("gs://"):
        from google.api_core import exceptions

        bucket_name, name = _split_gcs_uri(uri)
        bucket = _gcs_client().bucket(bucket_name)
        blob = bucket.blob(name, generation=int(generation)) if generation else bucket.blob(name)
        try:
            data = blob.download_as_bytes()
        except exceptions.NotFound as exc:
            which = f" generation {generation}" if generation else ""
            raise FileNotFoundError(f"{uri}{which} does not exist") from exc
        return data, str(blob.generation or generation)
    with open(_local_path(uri), "rb") as handle:
        return handle.read(), ""


def _write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Write a whole object or file (local files via a temporary file and ``os.replace``)."""
    if uri.startswith("gs://"):
        bucket_name, name = _split_gcs_uri(uri)
        blob = _gcs_client().bucket(bucket_name).blob(name)
        blob.upload_from_string(data, content_type=content_type)
        return
    import os
    import tempfile

    path = _local_path(uri)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _list_data_objects(data_uri: str) -> list[tuple[str, str]]:
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
            raw, _ = _read_bytes(data_uri)
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
        bucket_name, name = _split_gcs_uri(data_uri)
        client = _gcs_client()
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
        path = _local_path(data_uri)
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


def _parse_shard(uri: str, data: bytes):
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


def _save_split(path: str, features, labels, pixel_max: int) -> None:
    import numpy as np

    with open(path, "wb") as handle:  # a handle: np.savez would append ".npz" to a file name
        np.savez_compressed(handle, x=features, y=labels, pixel_max=np.int64(pixel_max))


def _load_split(path: str):
    """Returns ``(features, labels, pixel_max)`` written by :func:`_save_split`."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return data["x"], data["y"], int(data["pixel_max"])


def _read_champion(registry_uri: str):
    """Read ``champion.json``; returns ``(pointer or None, token)`` for :func:`_swap_champion`.

    The token is the GCS generation read (0 when absent) or, locally, the file's bytes (``None``
    when absent). An unreadable pointer comes back as ``{"_error": "..."}``.
    """
    import json

    uri = _join_uri(registry_uri, "champion.json")
    if uri.startswith("gs://"):
        from google.api_core import exceptions

        bucket_name, name = _split_gcs_uri(uri)
        bucket = _gcs_client().bucket(bucket_name)
        for _ in range(5):
            blob = bucket.get_blob(name)
            if blob is None:
                return None, 0
            try:
                data = bucket.blob(name, generation=blob.generation).download_as_bytes()
            except exceptions.NotFound:
                continue  # replaced between the two calls: read again
            token = int(blob.generation)
            break
        else:
            raise RuntimeError(f"{uri} keeps changing; could not read a stable version")
    else:
        try:
            data, _ = _read_bytes(uri)
        except FileNotFoundError:
            return None, None
        token = data
    try:
        pointer = json.loads(data)
        if not isinstance(pointer, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return {"_error": f"{uri} is not a valid champion pointer ({exc})"}, token
    return pointer, token


def _swap_champion(registry_uri: str, data: bytes, token) -> bool:
    """Replace ``champion.json`` only if it is still what :func:`_read_champion` saw.

    On GCS: an ``if_generation_match`` precondition (0 = must not exist). Locally: an exclusive
    lock on ``champion.json.lock``, a re-read, then a temporary file moved with ``os.replace``.
    Returns False when another writer got there first.
    """
    uri = _join_uri(registry_uri, "champion.json")
    if uri.startswith("gs://"):
        from google.api_core import exceptions

        bucket_name, name = _split_gcs_uri(uri)
        blob = _gcs_client().bucket(bucket_name).blob(name)
        blob.cache_control = "no-store"
        try:
            blob.upload_from_string(
                data, content_type="application/json", if_generation_match=token
            )
        except exceptions.PreconditionFailed:
            return False
        return True
    import os

    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, os.replace is still atomic
        fcntl = None
    os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    with open(uri + ".lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            try:
                with open(uri, "rb") as handle:
                    current = handle.read()
            except FileNotFoundError:
                current = None
            if current != token:
                return False
            _write_bytes(uri, data)
            return True
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _score_champion(registry_uri: str, pointer: dict, features, labels) -> tuple[str, float, str]:
    """Accuracy of the champion's model on the given split: ``(status, accuracy, detail)``.

    ``status`` is ``scored`` or ``unscorable`` (accuracy -1.0 then, and ``detail`` says why).
    """
    import io

    import joblib
    import numpy as np

    if "_error" in pointer:
        return "unscorable", -1.0, str(pointer["_error"])
    version = str(pointer.get("version") or "")
    # The pointer's model_uri first; the registry-relative path too, so a copied registry works.
    candidates = [str(pointer.get("model_uri") or "")]
    if version:
        candidates.append(_join_uri(registry_uri, version, "model.joblib"))
    candidates = [uri for i, uri in enumerate(candidates) if uri and uri not in candidates[:i]]
    if not candidates:
        return "unscorable", -1.0, "champion.json names neither a version nor a model_uri"
    data, missing = None, []
    for model_uri in candidates:
        try:
            data, _ = _read_bytes(model_uri)
            break
        except FileNotFoundError as exc:
            missing.append(str(exc))
    if data is None:
        return "unscorable", -1.0, f"champion {version}: model file missing ({'; '.join(missing)})"
    try:
        estimator = joblib.load(io.BytesIO(data))
        accuracy = float(np.mean(estimator.predict(features) == labels))
    except Exception as exc:
        return (
            "unscorable",
            -1.0,
            f"champion {version or model_uri} could not be scored on this split "
            f"({type(exc).__name__}: {exc})",
        )
    return "scored", accuracy, f"champion {version} scores {accuracy:.4f} on this split"


HELPERS: list[Callable] = [
    _gcs_client,
    _split_gcs_uri,
    _local_path,
    _join_uri,
    _read_bytes,
    _write_bytes,
    _list_data_objects,
    _parse_shard,
    _save_split,
    _load_split,
    _read_champion,
    _swap_champion,
    _score_champion,
]

# ---------------------------------------------------------------------------------------------
# Components (plain functions; :func:`build_components` wraps them for a given base image).
# ---------------------------------------------------------------------------------------------


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
    objects = _list_data_objects(data_uri)
    parts, sources = [], []
    width, width_uri = 0, ""
    for uri, generation in objects:
        try:
            data, read_generation = _read_bytes(uri, generation)
        except FileNotFoundError as exc:
            hint = " (overwritten or deleted since it was listed)" if generation else ""
            raise ValueError(f"{exc}{hint}") from exc
        values = _parse_shard(uri, data)
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
        _save_split(artifact.path, x, y, pixel_max)
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


def train_model(
    train: Input[Dataset],
    model_type: str,
    c: float,
    gamma: float,
    max_iter: int,
    seed: int,
    commit_sha: str,
    image_uri: str,
    data_uri: str,
    data_sources: str,
    model: Output[Model],
):
    """Fit ``svc`` (RBF kernel; ``gamma <= 0`` means sklearn's ``"scale"``) or
    ``logistic_regression`` (``max_iter`` applies to it) on pixels scaled to 0..1; write
    ``model.joblib`` and ``metadata.json`` into the model artifact folder."""
    import datetime
    import json
    import os
    import platform
    import time
    from functools import partial

    import joblib
    import numpy as np
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.svm import SVC

    features, labels, pixel_max = _load_split(train.path)
    if model_type == "svc":
        classifier = SVC(C=c, gamma=gamma if gamma > 0 else "scale", random_state=seed)
    elif model_type == "logistic_regression":
        classifier = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    else:
        raise ValueError(f"unknown model_type {model_type!r}: use 'svc' or 'logistic_regression'")
    estimator = Pipeline(
        [
            ("scale", FunctionTransformer(partial(np.multiply, 1.0 / pixel_max))),
            ("classifier", classifier),
        ]
    )
    started = time.perf_counter()
    estimator.fit(features, labels)
    fit_seconds = time.perf_counter() - started
    train_accuracy = float(np.mean(estimator.predict(features) == labels))

    os.makedirs(model.path, exist_ok=True)
    joblib.dump(estimator, os.path.join(model.path, "model.joblib"))
    metadata = {
        "framework": "scikit-learn",
        "framework_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "model_file": "model.joblib",
        "model_type": model_type,
        "hyperparameters": {
            "model_type": model_type,
            "c": c,
            "gamma": gamma,
            "max_iter": max_iter,
            "seed": seed,
        },
        "features": int(features.shape[1]),
        "pixel_max": pixel_max,
        "classes": sorted(int(k) for k in np.unique(labels)),
        "train_rows": len(labels),
        "train_accuracy": train_accuracy,
        "fit_seconds": round(fit_seconds, 3),
        "commit_sha": commit_sha,
        "image_uri": image_uri,
        "data_uri": data_uri,
        "data_sources": json.loads(data_sources) if data_sources else [],
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    with open(os.path.join(model.path, "metadata.json"), "w") as handle:
        json.dump(metadata, handle, indent=2, sort_keys=True)
    model.metadata.update(metadata)
    print(f"trained {model_type} in {fit_seconds:.2f}s; train accuracy {train_accuracy:.4f}")


def evaluate_model(
    test: Input[Dataset],
    model: Input[Model],
    model_registry_uri: str,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> NamedTuple(
    "EvaluateOutputs",
    [
        ("accuracy", float),
        ("champion_version", str),
        ("champion_accuracy", float),
        ("champion_status", str),
    ],
):
    """Score the model on the held-out split, and the registry's champion on the same split.

    ``champion_status`` is ``none``, ``scored`` or ``unscorable: <why>``;
    ``champion_accuracy`` is -1.0 unless scored.
    """
    import os
    from collections import namedtuple

    import joblib
    import numpy as np
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    features, labels, _ = _load_split(test.path)
    estimator = joblib.load(os.path.join(model.path, "model.joblib"))
    predicted = estimator.predict(features)
    accuracy = float(np.mean(predicted == labels))
    classes = np.unique(np.concatenate([labels, predicted]))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    metrics.log_metric("accuracy", accuracy)
    metrics.log_metric("test_rows", len(labels))
    metrics.log_metric("macro_precision", float(np.mean(precision)))
    metrics.log_metric("macro_recall", float(np.mean(recall)))
    metrics.log_metric("macro_f1", float(np.mean(f1)))
    for k, p, r in zip(classes, precision, recall, strict=True):
        metrics.log_metric(f"precision_{int(k)}", float(p))
        metrics.log_metric(f"recall_{int(k)}", float(r))
    matrix = confusion_matrix(labels, predicted, labels=classes)
    confusion.log_confusion_matrix([str(int(k)) for k in classes], matrix.tolist())

    pointer, _ = _read_champion(model_registry_uri)
    champion_version, champion_accuracy, champion_status = "", -1.0, "none"
    if pointer is not None:
        champion_version = str(pointer.get("version") or "")
        status, champion_accuracy, detail = _score_champion(
            model_registry_uri, pointer, features, labels
        )
        champion_status = "scored" if status == "scored" else f"unscorable: {detail}"
        if status == "scored":
            metrics.log_metric("champion_accuracy", champion_accuracy)
    metrics.metadata["champion_version"] = champion_version
    metrics.metadata["champion_status"] = champion_status
    print(
        f"accuracy {accuracy:.4f} on {len(labels)} held-out rows; champion "
        f"{champion_version or '-'}: {champion_status} ({champion_accuracy:.4f})"
    )
    outputs = namedtuple(
        "EvaluateOutputs",
        ["accuracy", "champion_version", "champion_accuracy", "champion_status"],
    )
    return outputs(accuracy, champion_version, champion_accuracy, champion_status)


def gate_and_register(
    model: Input[Model],
    test: Input[Dataset],
    model_registry_uri: str,
    min_accuracy: float,
    accuracy: float,
    champion_version: str,
    champion_accuracy: float,
    champion_status: str,
    decision: Output[Metrics],
) -> NamedTuple("GateOutputs", [("registered", bool), ("version", str), ("reason", str)]):
    """Register the model and make it the champion only if it passes the gate.

    The gate: ``accuracy >= min_accuracy`` and not below the champion's accuracy on the same
    split. If ``champion.json`` moved since evaluation (or moves while this step writes it), the
    new champion is scored on the same split and the decision is taken again, a bounded number
    of times. Not passing the gate is a normal outcome: ``registered`` is False and ``reason``
    says why.
    """
    import datetime
    import hashlib
    import json
    import os
    from collections import namedtuple

    max_attempts = 5
    outputs = namedtuple("GateOutputs", ["registered", "version", "reason"])
    with open(os.path.join(model.path, "model.joblib"), "rb") as handle:
        model_bytes = handle.read()
    try:
        with open(os.path.join(model.path, "metadata.json")) as handle:
            model_metadata = json.load(handle)
    except FileNotFoundError:
        model_metadata = dict(model.metadata)
    now = datetime.datetime.now(datetime.UTC)
    version = f"{now:%Y%m%dT%H%M%SZ}-{hashlib.sha256(model_bytes).hexdigest()[:8]}"

    def finish(registered: bool, reason: str, champion: str, champion_acc: float, attempts: int):
        decision.log_metric("registered", 1 if registered else 0)
        decision.log_metric("accuracy", accuracy)
        decision.log_metric("min_accuracy", min_accuracy)
        decision.log_metric("champion_accuracy", champion_acc)
        decision.log_metric("attempts", attempts)
        decision.metadata["version"] = version if registered else ""
        decision.metadata["champion_before"] = champion
        decision.metadata["reason"] = reason
        print(reason)
        return outputs(registered, version if registered else "", reason)

    if accuracy < min_accuracy:
        return finish(
            False,
            f"not registered: accuracy {accuracy:.4f} is below min_accuracy {min_accuracy:.4f}",
            champion_version,
            champion_accuracy,
            0,
        )

    scores = {}
    if champion_status == "scored":
        scores[champion_version] = ("scored", champion_accuracy, "")
    elif champion_status.startswith("unscorable"):
        detail = champion_status.partition(":")[2].strip()
        scores[champion_version] = ("unscorable", -1.0, detail)
    features = labels = None
    copied = False
    for attempt in range(1, max_attempts + 1):
        pointer, token = _read_champion(model_registry_uri)
        current, current_accuracy = "", -1.0
        if pointer is not None:
            current = str(pointer.get("version") or "")
            if "_error" in pointer or current not in scores:
                if features is None:
                    features, labels, _ = _load_split(test.path)
                scores[current] = _score_champion(model_registry_uri, pointer, features, labels)
            status, current_accuracy, detail = scores[current]
            if status != "scored":
                return finish(
                    False,
                    f"not registered: {detail}; champion.json left unchanged for an operator",
                    current,
                    current_accuracy,
                    attempt,
                )
            if accuracy < current_accuracy - 1e-9:
                return finish(
                    False,
                    f"not registered: accuracy {accuracy:.4f} is below champion {current}'s "
                    f"{current_accuracy:.4f} on the same split"
                    + (
                        f" (that champion moved in while this run registered; {version}/ stays "
                        "in the registry but is not champion)"
                        if copied
                        else ""
                    ),
                    current,
                    current_accuracy,
                    attempt,
                )
        if not copied:
            record = dict(model_metadata)
            record.update(
                {
                    "version": version,
                    "registered_at": now.isoformat(),
                    "accuracy": accuracy,
                    "min_accuracy": min_accuracy,
                    "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
                    "champion_before": current,
                    "champion_before_accuracy": current_accuracy if current else None,
                }
            )
            _write_bytes(_join_uri(model_registry_uri, version, "model.joblib"), model_bytes)
            _write_bytes(
                _join_uri(model_registry_uri, version, "metadata.json"),
                json.dumps(record, indent=2, sort_keys=True).encode(),
                "application/json",
            )
            copied = True
        new_pointer = {
            "version": version,
            "model_uri": _join_uri(model_registry_uri, version, "model.joblib"),
            "metadata_uri": _join_uri(model_registry_uri, version, "metadata.json"),
            "accuracy": accuracy,
            "registered_at": now.isoformat(),
            "previous_version": current,
            "previous_accuracy_on_same_split": current_accuracy if current else None,
            "commit_sha": model_metadata.get("commit_sha", ""),
            "image_uri": model_metadata.get("image_uri", ""),
            "data_uri": model_metadata.get("data_uri", ""),
            "framework": model_metadata.get("framework", ""),
            "framework_version": model_metadata.get("framework_version", ""),
        }
        payload = json.dumps(new_pointer, indent=2, sort_keys=True).encode()
        if _swap_champion(model_registry_uri, payload, token):
            against = (
                f"not below champion {current}'s {current_accuracy:.4f}"
                if current
                else "no previous champion"
            )
            return finish(
                True,
                f"registered {version} as champion: accuracy {accuracy:.4f} >= min_accuracy "
                f"{min_accuracy:.4f}, {against}",
                current,
                current_accuracy,
                attempt,
            )
        print(f"champion.json changed while registering (attempt {attempt}); comparing again")
    raise RuntimeError(
        f"champion.json under {model_registry_uri} kept changing; gave up after "
        f"{max_attempts} attempts ({version} stays in the registry but is not champion)"
    )


# ---------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------


class PipelineOutputs(NamedTuple):
    registered: bool
    version: str
    reason: str
    accuracy: float


class Components(NamedTuple):
    load_and_validate: Callable
    train_model: Callable
    evaluate_model: Callable
    gate_and_register: Callable


def build_components(base_image: str = DEFAULT_IMAGE) -> Components:
    """The four components on ``base_image``; nothing is installed at run time."""

    def make(func: Callable):
        return dsl.component(
            func,
            base_image=base_image,
            packages_to_install=[],
            install_kfp_package=False,
            additional_funcs=HELPERS,
        )

    return Components(
        make(load_and_validate),
        make(train_model),
        make(evaluate_model),
        make(gate_and_register),
    )


def build_pipeline(base_image: str = DEFAULT_IMAGE):
    """The ``mnist-training`` pipeline with every component running on ``base_image``."""
    ops = build_components(base_image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "Validate digit CSV shards, train a scikit-learn classifier, evaluate it against "
            "the champion on the same split, and register it when it passes the gate."
        ),
    )
    def mnist_training(
        data_uri: str,
        model_registry_uri: str,
        min_accuracy: float = 0.9,
        commit_sha: str = "",
        image_uri: str = "",
        test_fraction: float = 0.2,
        seed: int = 42,
        model_type: str = "svc",
        c: float = 10.0,
        gamma: float = 0.0,
        max_iter: int = 1000,
    ) -> PipelineOutputs:
        load = ops.load_and_validate(data_uri=data_uri, test_fraction=test_fraction, seed=seed)
        train = ops.train_model(
            train=load.outputs["train"],
            model_type=model_type,
            c=c,
            gamma=gamma,
            max_iter=max_iter,
            seed=seed,
            commit_sha=commit_sha,
            image_uri=image_uri,
            data_uri=data_uri,
            data_sources=load.outputs["data_sources"],
        )
        evaluate = ops.evaluate_model(
            test=load.outputs["test"],
            model=train.outputs["model"],
            model_registry_uri=model_registry_uri,
        )
        gate = ops.gate_and_register(
            model=train.outputs["model"],
            test=load.outputs["test"],
            model_registry_uri=model_registry_uri,
            min_accuracy=min_accuracy,
            accuracy=evaluate.outputs["accuracy"],
            champion_version=evaluate.outputs["champion_version"],
            champion_accuracy=evaluate.outputs["champion_accuracy"],
            champion_status=evaluate.outputs["champion_status"],
        )
        # Every step reads state that changes under the same inputs (a data prefix, the
        # registry), so no step may be served from the cache.
        for task in (load, train, evaluate, gate):
            task.set_caching_options(False)
        return PipelineOutputs(
            registered=gate.outputs["registered"],
            version=gate.outputs["version"],
            reason=gate.outputs["reason"],
            accuracy=evaluate.outputs["accuracy"],
        )

    return mnist_training


def compile_pipeline(output: str = DEFAULT_OUTPUT, base_image: str = DEFAULT_IMAGE) -> str:
    """Compile the pipeline for ``base_image`` to ``output``; returns the path written."""
    compiler.Compiler().compile(build_pipeline(base_image), package_path=output)
    return output


mnist_training = build_pipeline()
