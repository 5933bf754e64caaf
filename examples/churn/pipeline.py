"""The ``churn-training`` DAG: load-window -> train-classifier -> evaluate-and-register.

Parameters (defaults in brackets):

- ``manifest_uri``: the window manifest the trigger wrote (route parameter
  ``"{manifest_uri}"``) (required)
- ``model_registry_uri``: ``gs://`` or local folder of versions and ``champion.json`` (required)
- ``target_column`` ["churned"]: the 0/1 label column; ``id_column`` ["customer_id"]: a column
  that is not a feature ("" for none)
- ``max_depth`` [6] (``<= 0``: unbounded), ``n_estimators`` [200]: the random forest
- ``min_auc`` [0.75]: the least held-out ROC AUC a model needs to become champion
- ``test_fraction`` [0.25], ``seed`` [0]: the stratified split, and the forest's seed
- ``outcome_topic`` [""], ``job_id`` [""]: where the run-outcome and champion reports go, and the
  job id they carry (:mod:`pipeline_specs.reporting`)

Results are task outputs (``evaluate-and-register``: ``auc``, ``registered``, ``version``,
``reason``); the steps run inside the exit handler that reports the run's outcome.
"""

import os
from collections.abc import Callable
from typing import NamedTuple

from kfp import compiler, dsl

from examples.churn import evaluate_register, load_window, train
from pipeline_specs import DEFAULT_IMAGE, reporting

PIPELINE_NAME = "churn-training"
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "churn_training.yaml")


class Components(NamedTuple):
    load_window: Callable
    train_classifier: Callable
    evaluate_and_register: Callable
    report_run_outcome: Callable


def build_components(base_image: str = DEFAULT_IMAGE) -> Components:
    """The components on ``base_image``, each with the helpers it uses; nothing installed."""

    def make(func: Callable, helpers: tuple[Callable, ...]):
        return dsl.component(
            func,
            base_image=base_image,
            packages_to_install=[],
            install_kfp_package=False,
            additional_funcs=list(helpers),
        )

    return Components(
        make(load_window.load_window, load_window.HELPERS),
        make(train.train_classifier, train.HELPERS),
        make(evaluate_register.evaluate_and_register, evaluate_register.HELPERS),
        reporting.reporter(base_image),
    )


def build_pipeline(base_image: str = DEFAULT_IMAGE):
    """The ``churn-training`` pipeline with every component running on ``base_image``."""
    ops = build_components(base_image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "Train a churn classifier on one batch window of CSV shards (the trigger's window "
            "manifest) and make it champion when its held-out ROC AUC passes the gate."
        ),
    )
    def churn_training(
        manifest_uri: str,
        model_registry_uri: str,
        target_column: str = "churned",
        id_column: str = "customer_id",
        max_depth: int = 6,
        n_estimators: int = 200,
        min_auc: float = 0.75,
        test_fraction: float = 0.25,
        seed: int = 0,
        outcome_topic: str = "",
        job_id: str = "",
    ):
        with reporting.reported_run(outcome_topic, job_id, ops.report_run_outcome):
            load = ops.load_window(
                manifest_uri=manifest_uri,
                target_column=target_column,
                id_column=id_column,
                test_fraction=test_fraction,
                seed=seed,
            )
            trained = ops.train_classifier(
                train=load.outputs["train"],
                max_depth=max_depth,
                n_estimators=n_estimators,
                seed=seed,
                window_id=load.outputs["window_id"],
                data_sources=load.outputs["data_sources"],
            )
            registered = ops.evaluate_and_register(
                model=trained.outputs["model"],
                test=load.outputs["test"],
                model_registry_uri=model_registry_uri,
                min_auc=min_auc,
                window_id=load.outputs["window_id"],
                window_opened_at=load.outputs["window_opened_at"],
                outcome_topic=outcome_topic,
                job_id=job_id,
            )
        # The steps read a manifest and a registry: never serve them from the cache.
        for task in (load, trained, registered):
            task.set_caching_options(False)

    return churn_training


def compile_pipeline(output: str = DEFAULT_OUTPUT, base_image: str = DEFAULT_IMAGE) -> str:
    """Compile the pipeline for ``base_image`` to ``output``; returns the path written."""
    compiler.Compiler().compile(build_pipeline(base_image), package_path=output)
    return output
