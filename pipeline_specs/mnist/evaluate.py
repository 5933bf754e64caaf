"""Step 3, ``evaluate-model``: score the model, and the current champion, on the held-out split.

Accuracy, per-class precision and recall, and a confusion matrix (shown by Vertex AI) for the new
model; the registry's champion, if any, is scored on the very same split, so the gate compares
like with like.
"""

from collections.abc import Callable
from typing import NamedTuple

from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from pipeline_specs import storage
from pipeline_specs.mnist import _split
from pipeline_specs.mnist._split import load_split
from pipeline_specs.storage import join_uri, read_bytes, read_champion


def score_champion(registry_uri: str, pointer: dict, features, labels) -> tuple[str, float, str]:
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
        candidates.append(join_uri(registry_uri, version, "model.joblib"))
    candidates = [uri for i, uri in enumerate(candidates) if uri and uri not in candidates[:i]]
    if not candidates:
        return "unscorable", -1.0, "champion.json names neither a version nor a model_uri"
    data, missing = None, []
    for model_uri in candidates:
        try:
            data, _ = read_bytes(model_uri)
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

    features, labels, _ = load_split(test.path)
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

    pointer, _ = read_champion(model_registry_uri)
    champion_version, champion_accuracy, champion_status = "", -1.0, "none"
    if pointer is not None:
        champion_version = str(pointer.get("version") or "")
        status, champion_accuracy, detail = score_champion(
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


HELPERS: tuple[Callable, ...] = (
    *storage.READ_HELPERS,
    storage.read_champion,
    *_split.HELPERS,
    score_champion,
)
