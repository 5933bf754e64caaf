"""Step 2, ``train-classifier``: a scikit-learn random forest on the training split.

``max_depth`` bounds each tree (``<= 0``: unbounded) and ``n_estimators`` is the number of trees.
Saves ``model.joblib`` and ``metadata.json`` (features, target, hyperparameters, versions, the
window and the data generations it was trained on) into the model artifact folder.
"""

from collections.abc import Callable

from kfp.dsl import Dataset, Input, Model, Output

from examples.churn import _split
from examples.churn._split import read_split


def train_classifier(
    train: Input[Dataset],
    max_depth: int,
    n_estimators: int,
    seed: int,
    window_id: str,
    data_sources: str,
    model: Output[Model],
):
    """Fit ``RandomForestClassifier(n_estimators, max_depth)`` and save it with its metadata."""
    import datetime
    import json
    import os
    import platform

    import joblib
    import numpy as np
    import sklearn
    from sklearn.ensemble import RandomForestClassifier

    if n_estimators < 1:
        raise ValueError(f"n_estimators must be at least 1, got {n_estimators}")
    names, features, labels = read_split(train.path)
    estimator = RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth if max_depth > 0 else None,
        random_state=seed,
        n_jobs=1,
    )
    estimator.fit(features, labels)
    train_accuracy = float(np.mean(estimator.predict(features) == labels))
    os.makedirs(model.path, exist_ok=True)
    joblib.dump(estimator, os.path.join(model.path, "model.joblib"))
    metadata = {
        "framework": "scikit-learn",
        "framework_version": sklearn.__version__,
        "python_version": platform.python_version(),
        "model_file": "model.joblib",
        "estimator": "RandomForestClassifier",
        "hyperparameters": {"max_depth": max_depth, "n_estimators": n_estimators, "seed": seed},
        "features": list(names),
        "train_rows": len(labels),
        "train_accuracy": train_accuracy,
        "window_id": window_id,
        "data_sources": json.loads(data_sources) if data_sources else [],
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    with open(os.path.join(model.path, "metadata.json"), "w") as handle:
        json.dump(metadata, handle, indent=2, sort_keys=True)
    model.metadata.update({k: v for k, v in metadata.items() if k != "data_sources"})
    print(f"trained a forest of {n_estimators} trees; train accuracy {train_accuracy:.4f}")


HELPERS: tuple[Callable, ...] = _split.HELPERS
