"""Step 2, ``train-model``: fit a scikit-learn classifier on the training split.

``svc`` (RBF kernel; ``gamma <= 0`` means sklearn's ``"scale"``) or ``logistic_regression``
(``max_iter`` applies to it), behind a fixed pixel scaling step, saved as ``model.joblib`` with
``metadata.json``: framework, versions, hyperparameters, commit, image and data generations.
"""

from collections.abc import Callable

from kfp.dsl import Dataset, Input, Model, Output

from pipeline_specs.mnist import _split
from pipeline_specs.mnist._split import load_split


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

    features, labels, pixel_max = load_split(train.path)
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


HELPERS: tuple[Callable, ...] = _split.HELPERS
