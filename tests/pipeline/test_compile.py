"""The committed spec is exactly what the source compiles to, with the documented interface."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline_specs import DEFAULT_IMAGE
from pipeline_specs import compile as compile_cli
from pipeline_specs.mnist import evaluate, load_data, pipeline, register, train

from ._programs import load_spec, programs, undefined_globals
from .conftest import COMPILED

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
    outputs = spec["root"]["outputDefinitions"]["parameters"]
    assert set(outputs) == {"registered", "version", "reason", "accuracy"}


def test_steps_install_nothing_and_use_the_default_image() -> None:
    (spec,) = _docs(COMPILED)
    executors = _executors(spec)
    assert set(executors) == {
        "exec-load-and-validate",
        "exec-train-model",
        "exec-evaluate-model",
        "exec-gate-and-register",
    }
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == DEFAULT_IMAGE, name
        command = " ".join(container["command"])
        assert "pip install" not in command, name
        assert "kfp.dsl.executor_main" in command, name
    tasks = spec["root"]["dag"]["tasks"]
    assert all(task["cachingOptions"] == {} for task in tasks.values())  # caching disabled


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
