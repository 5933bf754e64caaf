"""The ``mnist-training`` DAG: load-and-validate -> train -> evaluate -> gate-and-register.

Parameters (defaults in brackets):

- ``data_uri``: CSV file, folder, ``gs://`` prefix, or ``*.json`` manifest (required)
- ``model_registry_uri``: ``gs://`` or local folder of versions and ``champion.json`` (required)
- ``min_accuracy`` [0.9]: the least held-out accuracy a model needs to be registered
- ``commit_sha`` [""], ``image_uri`` [""]: recorded in the model metadata (lineage)
- ``test_fraction`` [0.2], ``seed`` [42]: the stratified split, and the estimators' seed
- ``model_type`` ["svc"] or "logistic_regression"; ``c`` [10.0]: inverse regularisation;
  ``gamma`` [0.0]: RBF kernel width for ``svc``, ``<= 0`` meaning sklearn's ``"scale"``;
  ``max_iter`` [1000]: iteration cap for ``logistic_regression``
- ``outcome_topic`` [""]: Pub/Sub topic ``projects/<p>/topics/<t>`` of the run-outcome and
  champion reports (:mod:`pipeline_specs.reporting`); empty: the reports are only logged
- ``job_id`` [""]: the PipelineJob id the trigger chose, carried in every report

Results: ``gate-and-register``'s outputs ``registered`` (bool), ``version`` ("" unless
registered) and ``reason``; ``evaluate-model``'s ``accuracy``. They are task outputs, not pipeline
outputs: KFP does not let a pipeline return outputs of tasks inside an exit handler, and every
task here is inside the one that reports the run's outcome (``report-run-outcome``).

Base image and dependencies: every component is built with ``packages_to_install=[]`` and
``install_kfp_package=False``, so nothing is installed when a step starts: steps start in
seconds, a run never depends on a package index, and every step runs exactly the library versions
that were tested and that the model metadata records. The image must therefore carry Python 3,
``kfp``, ``scikit-learn``, ``numpy``, ``joblib`` and ``google-cloud-storage``:
``pipeline_specs/Dockerfile`` builds it, and the deploy build recompiles the spec against it by
digest (``python -m pipeline_specs.compile --image ...@sha256:...``). The committed
``mnist_training.yaml`` names :data:`~pipeline_specs.DEFAULT_IMAGE` (``python:3.12-slim``), which
lacks those packages: it is for local runs (``kfp.local.SubprocessRunner`` runs the steps in the
current Python environment) and review. Model files are pickles (joblib): only point
``model_registry_uri`` at storage whose writers are trusted, since evaluating the champion loads
its file.
"""

import os
from collections.abc import Callable
from typing import NamedTuple

from kfp import compiler, dsl

from pipeline_specs import DEFAULT_IMAGE, reporting
from pipeline_specs.mnist import evaluate, load_data, register, train

PIPELINE_NAME = "mnist-training"
DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mnist_training.yaml"
)


class Components(NamedTuple):
    load_and_validate: Callable
    train_model: Callable
    evaluate_model: Callable
    gate_and_register: Callable
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
        make(load_data.load_and_validate, load_data.HELPERS),
        make(train.train_model, train.HELPERS),
        make(evaluate.evaluate_model, evaluate.HELPERS),
        make(register.gate_and_register, register.HELPERS),
        reporting.reporter(base_image),
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
        outcome_topic: str = "",
        job_id: str = "",
    ):
        # Every task below is watched by the exit task that reports the run's outcome.
        with reporting.reported_run(outcome_topic, job_id, ops.report_run_outcome):
            load = ops.load_and_validate(data_uri=data_uri, test_fraction=test_fraction, seed=seed)
            trained = ops.train_model(
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
            evaluated = ops.evaluate_model(
                test=load.outputs["test"],
                model=trained.outputs["model"],
                model_registry_uri=model_registry_uri,
            )
            gate = ops.gate_and_register(
                model=trained.outputs["model"],
                test=load.outputs["test"],
                model_registry_uri=model_registry_uri,
                min_accuracy=min_accuracy,
                accuracy=evaluated.outputs["accuracy"],
                champion_version=evaluated.outputs["champion_version"],
                champion_accuracy=evaluated.outputs["champion_accuracy"],
                champion_status=evaluated.outputs["champion_status"],
                outcome_topic=outcome_topic,
                job_id=job_id,
            )
        # Every step reads state that changes under the same inputs (a data prefix, the
        # registry), so no step may be served from the cache.
        for task in (load, trained, evaluated, gate):
            task.set_caching_options(False)

    return mnist_training


def compile_pipeline(output: str = DEFAULT_OUTPUT, base_image: str = DEFAULT_IMAGE) -> str:
    """Compile the pipeline for ``base_image`` to ``output``; returns the path written."""
    compiler.Compiler().compile(build_pipeline(base_image), package_path=output)
    return output
