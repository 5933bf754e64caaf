"""Step 4, ``gate-and-register``: register the model and make it champion if it passes the gate.

The gate: held-out accuracy at least ``min_accuracy``, and not below the champion's on the same
split. A passing model is copied to ``<model_registry_uri>/<version>/`` (``model.joblib`` and
``metadata.json``) and ``champion.json`` is moved by compare-and-swap; when another run moved the
pointer first, the new champion is scored on the same split and the decision taken again. A model
that is not better is not an error: the step succeeds and its outputs say why nothing was
registered.

Registry layout::

    <model_registry_uri>/champion.json              pointer to the current best version
    <model_registry_uri>/<version>/model.joblib     e.g. 20261127T163000Z-ab12cd34
    <model_registry_uri>/<version>/metadata.json
    <model_registry_uri>/champion.json.lock         local registries only (the swap's lock)
"""

from collections.abc import Callable
from typing import NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from pipeline_specs import reporting, storage
from pipeline_specs.mnist import _split
from pipeline_specs.mnist._split import load_split
from pipeline_specs.mnist.evaluate import score_champion
from pipeline_specs.reporting import champion_report, publish_report, rfc3339
from pipeline_specs.storage import join_uri, read_champion, swap_champion, write_bytes


def gate_and_register(
    model: Input[Model],
    test: Input[Dataset],
    model_registry_uri: str,
    min_accuracy: float,
    accuracy: float,
    champion_version: str,
    champion_accuracy: float,
    champion_status: str,
    outcome_topic: str,
    job_id: str,
    decision: Output[Metrics],
) -> NamedTuple("GateOutputs", [("registered", bool), ("version", str), ("reason", str)]):
    """Register the model and make it the champion only if it passes the gate.

    The gate: ``accuracy >= min_accuracy`` and not below the champion's accuracy on the same
    split. If ``champion.json`` moved since evaluation (or moves while this step writes it), the
    new champion is scored on the same split and the decision is taken again, a bounded number
    of times. Not passing the gate is a normal outcome: ``registered`` is False and ``reason``
    says why. When this step moves the champion it publishes a champion report to
    ``outcome_topic`` (see :mod:`pipeline_specs.reporting`; a report that cannot be published is
    logged and never fails the step).
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
        pointer, token = read_champion(model_registry_uri)
        current, current_accuracy = "", -1.0
        if pointer is not None:
            current = str(pointer.get("version") or "")
            if "_error" in pointer or current not in scores:
                if features is None:
                    features, labels, _ = load_split(test.path)
                scores[current] = score_champion(model_registry_uri, pointer, features, labels)
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
        if swap_champion(model_registry_uri, payload, token):
            # job: the job's resource name is unknown in a step (kfp.local cannot resolve
            # dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER); reports are matched by job_id.
            report = champion_report(
                job_id=job_id,
                job="",
                model_uri=join_uri(model_registry_uri, version) + "/",
                version=version,
                metric_name="accuracy",
                metric_value=accuracy,
                previous_version=current,
                previous_value=current_accuracy if current else None,
                commit_sha=str(model_metadata.get("commit_sha", "")),
                image_uri=str(model_metadata.get("image_uri", "")),
                registered_at=rfc3339(now),
            )
            publish_report(outcome_topic, report, "champion")
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


HELPERS: tuple[Callable, ...] = (
    *storage.HELPERS,
    *_split.HELPERS,
    score_champion,
    *reporting.CHAMPION_HELPERS,
)
