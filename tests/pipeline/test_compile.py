"""The committed spec is exactly what the source compiles to, with the documented interface."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline_specs import DEFAULT_IMAGE
from pipeline_specs import compile as compile_cli
from pipeline_specs.mnist import evaluate, load_data, pipeline, register, train

from ._programs import load_spec, programs, undefined_globals
from .conftest import COMPILED, REPO

EXPECTED_PARAMETERS = {
    "data_uri": ("STRING", None),
    "model_registry_uri": ("STRING", None),
    "min_accuracy": ("NUMBER_DOUBLE", 0.9),
    "commit_sha": ("STRING", ""),
    "image_uri": ("STRING", ""),
    "test_fraction": ("NUMBER_DOUBLE", 0.2),
    "seed": ("NUMBER_INTEGER", 42),
    "model_type": ("STRING", "svc"),
    "c": ("NUMBER_DOUBLE", 10.0),
    "gamma": ("NUMBER_DOUBLE", 0.0),
    "max_iter": ("NUMBER_INTEGER", 1000),
    "outcome_topic": ("STRING", ""),
    "job_id": ("STRING", ""),
}


def _docs(path: Path) -> list:
    with open(path) as handle:
        return list(yaml.safe_load_all(handle))


def _executors(spec: dict) -> dict:
    return spec["deploymentSpec"]["executors"]


def test_committed_yaml_matches_source(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.yaml"
    pipeline.compile_pipeline(str(fresh))
    assert _docs(COMPILED) == _docs(fresh), (
        "pipeline_specs/mnist_training.yaml is stale: run `python -m pipeline_specs.compile`"
    )


def test_parameters_and_defaults() -> None:
    (spec,) = _docs(COMPILED)
    assert spec["pipelineInfo"]["name"] == "mnist-training"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(EXPECTED_PARAMETERS)
    for name, (kind, default) in EXPECTED_PARAMETERS.items():
        assert params[name]["parameterType"] == kind, name
        if default is None:
            assert "defaultValue" not in params[name], name
            assert not params[name].get("isOptional"), name
        else:
            assert params[name]["defaultValue"] == default, name
    # The results are task outputs: KFP lets no pipeline output come from inside an exit handler.
    assert "outputDefinitions" not in spec["root"]
    components = spec["components"]
    assert set(components["comp-gate-and-register"]["outputDefinitions"]["parameters"]) == {
        "registered",
        "version",
        "reason",
    }
    assert "accuracy" in components["comp-evaluate-model"]["outputDefinitions"]["parameters"]


def _tasks(spec: dict) -> dict:
    """Every task of the spec: the root DAG's and those of its sub-DAGs (the exit handler's)."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_every_step_runs_under_the_outcome_reporter() -> None:
    (spec,) = _docs(COMPILED)
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "report-run-outcome"}
    report = root["report-run-outcome"]
    assert report["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert report["inputs"]["parameters"] == {
        "job_id": {"componentInputParameter": "job_id"},
        "outcome_topic": {"componentInputParameter": "outcome_topic"},
        "status": {"taskFinalStatus": {"producerTask": "exit-handler-1"}},
    }
    inner = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert set(inner) == {"load-and-validate", "train-model", "evaluate-model", "gate-and-register"}


def test_steps_install_nothing_and_use_the_default_image() -> None:
    (spec,) = _docs(COMPILED)
    executors = _executors(spec)
    assert set(executors) == {
        "exec-load-and-validate",
        "exec-train-model",
        "exec-evaluate-model",
        "exec-gate-and-register",
        "exec-report-run-outcome",
    }
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == DEFAULT_IMAGE, name
        command = " ".join(container["command"])
        assert "pip install" not in command, name
        assert "kfp.dsl.executor_main" in command, name
    steps = {name: task for name, task in _tasks(spec).items() if "exit-handler" not in name}
    assert len(steps) == 5
    assert all(task["cachingOptions"] == {} for task in steps.values())  # caching disabled


def test_cli_bakes_in_the_image(tmp_path: Path, capsys) -> None:
    image = "europe-docker.pkg.dev/p/r/trainer@sha256:" + "ab" * 32
    out = tmp_path / "spec.yaml"
    assert compile_cli.main(["--image", image, "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    (spec,) = _docs(out)
    assert {e["container"]["image"] for e in _executors(spec).values()} == {image}
    (committed,) = _docs(COMPILED)
    # Only the image differs from the committed spec.
    for executor in _executors(spec).values():
        executor["container"]["image"] = DEFAULT_IMAGE
    assert spec == committed


def test_components_wrap_the_plain_functions() -> None:
    ops = pipeline.build_components("example.com/image:1")
    assert ops.load_and_validate.python_func is load_data.load_and_validate
    assert ops.train_model.python_func is train.train_model
    assert ops.evaluate_model.python_func is evaluate.evaluate_model
    assert ops.gate_and_register.python_func is register.gate_and_register


def test_every_step_program_defines_what_it_uses() -> None:
    """Each step's embedded program carries every helper it calls (a missing one is a NameError
    only when the step runs)."""
    found = programs(load_spec(COMPILED))
    assert set(found) == set(_executors(load_spec(COMPILED)))
    for name, source in found.items():
        assert undefined_globals(source) == set(), name


def test_a_missing_helper_is_caught(tmp_path: Path) -> None:
    from kfp import compiler, dsl

    component = dsl.component(
        evaluate.evaluate_model,
        base_image=DEFAULT_IMAGE,
        install_kfp_package=False,
        additional_funcs=[f for f in evaluate.HELPERS if f is not evaluate.score_champion],
    )
    out = tmp_path / "one.yaml"
    compiler.Compiler().compile(component, package_path=str(out))
    (source,) = programs(load_spec(out)).values()
    assert undefined_globals(source) == {"score_champion"}


def test_the_training_image_pins_the_versions_tested_here() -> None:
    """The steps install nothing, so the image must carry every library they import (the
    reporter's Pub/Sub client included), at the versions these tests run with."""
    import importlib.metadata
    import re

    text = (REPO / "pipeline_specs" / "Dockerfile").read_text()
    pins = dict(re.findall(r"^\s+([a-z0-9-]+)==([\w.]+)", text, re.MULTILINE))
    assert set(pins) == {
        "kfp",
        "scikit-learn",
        "numpy",
        "joblib",
        "google-cloud-storage",
        "google-cloud-pubsub",
    }
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, name
