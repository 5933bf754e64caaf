"""Step 3, ``evaluate-and-register``: score the model on the held-out split, gate it, register it.

Metrics: ROC AUC (the gate's), accuracy, precision and recall at 0.5. The gate is
``auc >= min_auc``. Each window is new data, so a model is not compared with the champion on one
split as MNIST's is: the champion is the model of the most recent window that passed the gate,
and a run of an older window (a late or re-run job) never replaces it. A passing model is copied
to ``<model_registry_uri>/<version>/`` and ``champion.json`` moves by compare-and-swap
(:mod:`pipeline_specs.storage`); when it moves, a champion report is published to
``outcome_topic`` (:mod:`pipeline_specs.reporting`).
"""

from collections.abc import Callable
from typing import NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from examples.churn import _split
from examples.churn._split import read_split
from pipeline_specs import reporting, storage
from pipeline_specs.reporting import champion_report, publish_report, rfc3339
from pipeline_specs.storage import join_uri, read_champion, swap_champion, write_bytes


def evaluate_and_register(
    model: Input[Model],
    test: Input[Dataset],
    model_registry_uri: str,
    min_auc: float,
    window_id: str,
    window_opened_at: float,
    outcome_topic: str,
    job_id: str,
    metrics: Output[Metrics],
) -> NamedTuple(
    "RegisterOutputs", [("auc", float), ("registered", bool), ("version", str), ("reason", str)]
):
    """Register the model as champion when ``auc >= min_auc`` and no newer window's model is."""
    import datetime
    import hashlib
    import json
    import os
    from collections import namedtuple

    import joblib
    from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score

    outputs = namedtuple("RegisterOutputs", ["auc", "registered", "version", "reason"])
    _, features, labels = read_split(test.path)
    with open(os.path.join(model.path, "model.joblib"), "rb") as handle:
        model_bytes = handle.read()
    estimator = joblib.load(os.path.join(model.path, "model.joblib"))
    scores = estimator.predict_proba(features)[:, 1]
    predicted = (scores >= 0.5).astype(int)
    auc = float(roc_auc_score(labels, scores))
    metrics.log_metric("auc", auc)
    metrics.log_metric("accuracy", float(accuracy_score(labels, predicted)))
    metrics.log_metric("precision", float(precision_score(labels, predicted, zero_division=0)))
    metrics.log_metric("recall", float(recall_score(labels, predicted, zero_division=0)))
    metrics.log_metric("test_rows", len(labels))
    metrics.log_metric("min_auc", min_auc)

    def finish(registered: bool, version: str, reason: str):
        metrics.log_metric("registered", 1 if registered else 0)
        print(reason)
        return outputs(auc, registered, version, reason)

    if auc < min_auc:
        return finish(False, "", f"not registered: AUC {auc:.4f} is below min_auc {min_auc:.4f}")

    now = datetime.datetime.now(datetime.UTC)
    version = f"{now:%Y%m%dT%H%M%SZ}-{hashlib.sha256(model_bytes).hexdigest()[:8]}"
    with open(os.path.join(model.path, "metadata.json")) as handle:
        record = json.load(handle)
    record.update(
        {
            "version": version,
            "auc": auc,
            "min_auc": min_auc,
            "window_id": window_id,
            "window_opened_at": window_opened_at,
            "registered_at": now.isoformat(),
            "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        }
    )
    copied = False
    for attempt in range(1, 6):
        pointer, token = read_champion(model_registry_uri)
        if pointer is not None and "_error" in pointer:
            return finish(
                False, "", f"not registered: {pointer['_error']}; left unchanged for an operator"
            )
        current = dict(pointer or {})
        if float(current.get("window_opened_at") or 0.0) > window_opened_at:
            return finish(
                False,
                "",
                f"not registered: champion {current.get('version')} was trained on a newer "
                f"window ({current.get('window_id')}) than {window_id}",
            )
        if not copied:
            write_bytes(join_uri(model_registry_uri, version, "model.joblib"), model_bytes)
            write_bytes(
                join_uri(model_registry_uri, version, "metadata.json"),
                json.dumps(record, indent=2, sort_keys=True).encode(),
                "application/json",
            )
            copied = True
        new_pointer = {
            "version": version,
            "model_uri": join_uri(model_registry_uri, version, "model.joblib"),
            "metadata_uri": join_uri(model_registry_uri, version, "metadata.json"),
            "auc": auc,
            "window_id": window_id,
            "window_opened_at": window_opened_at,
            "registered_at": now.isoformat(),
            "previous_version": str(current.get("version") or ""),
        }
        payload = json.dumps(new_pointer, indent=2, sort_keys=True).encode()
        if swap_champion(model_registry_uri, payload, token):
            previous = str(current.get("version") or "")
            previous_auc = current.get("auc")
            report = champion_report(
                job_id=job_id,
                job="",
                model_uri=join_uri(model_registry_uri, version) + "/",
                version=version,
                metric_name="auc",
                metric_value=auc,
                previous_version=previous,
                previous_value=previous_auc if isinstance(previous_auc, int | float) else None,
                commit_sha="",
                image_uri="",
                registered_at=rfc3339(now),
            )
            publish_report(outcome_topic, report, "champion")
            return finish(
                True,
                version,
                f"registered {version} as champion: AUC {auc:.4f} >= min_auc {min_auc:.4f}"
                + (f", replacing {previous}" if previous else ""),
            )
        print(f"champion.json changed while registering (attempt {attempt}); reading it again")
    raise RuntimeError(
        f"champion.json under {model_registry_uri} kept changing; gave up after 5 attempts "
        f"({version} stays in the registry but is not champion)"
    )


HELPERS: tuple[Callable, ...] = (
    *storage.HELPERS,
    *_split.HELPERS,
    *reporting.CHAMPION_HELPERS,
)
