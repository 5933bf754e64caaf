from __future__ import annotations

import pytest

from retrain_trigger.config import parse_config
from retrain_trigger.errors import ConfigError, TemplateError, Unprocessable
from retrain_trigger.service import Service
from retrain_trigger.spec import TemplateCache, parse_template
from tests.conftest import MNIST_TEMPLATE


@pytest.fixture(scope="module")
def mnist():
    return parse_template(MNIST_TEMPLATE.read_bytes(), str(MNIST_TEMPLATE))


def test_reads_input_definitions(mnist):
    assert mnist.pipeline_name == "mnist-training"
    assert mnist.inputs["data_uri"].required
    assert mnist.inputs["min_accuracy"].type == "NUMBER_DOUBLE"
    assert mnist.inputs["min_accuracy"].default == 0.9
    assert not mnist.inputs["commit_sha"].required
    assert mnist.digest.startswith("sha256:")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"data_uri": "gs://b/x", "model_registry_uri": "gs://b/m", "min_accuracy": "0.95"},
            {"min_accuracy": 0.95},
        ),
        ({"data_uri": "gs://b/x", "model_registry_uri": "gs://b/m", "seed": "7"}, {"seed": 7}),
        ({"data_uri": "gs://b/x", "model_registry_uri": "gs://b/m", "seed": 7.0}, {"seed": 7}),
    ],
)
def test_coerce_to_declared_types(mnist, values, expected):
    out = mnist.coerce(values)
    for key, value in expected.items():
        assert out[key] == value and type(out[key]) is type(value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"data_uri": "x", "model_registry_uri": "m", "seed": "seven"},
            "parameter 'seed' must be integer, got 'seven'",
        ),
        (
            {"data_uri": "x", "model_registry_uri": "m", "seed": 1.5},
            "parameter 'seed' must be integer",
        ),
        (
            {"data_uri": "x", "model_registry_uri": "m", "seed": True},
            "parameter 'seed' must be integer",
        ),
        (
            {"data_uri": "x", "model_registry_uri": "m", "min_accuracy": "inf"},
            "parameter 'min_accuracy' must be double",
        ),
        (
            {"data_uri": "x", "model_registry_uri": "m", "nope": 1},
            "pipeline 'mnist-training' has no parameter 'nope'",
        ),
        ({"data_uri": "x"}, "required pipeline parameter\\(s\\) not set: model_registry_uri"),
        ({"data_uri": ["x"], "model_registry_uri": "m"}, "parameter 'data_uri' must be string"),
    ],
)
def test_coerce_rejects(mnist, values, message):
    with pytest.raises(Unprocessable, match=message):
        mnist.coerce(values)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "is empty or not a mapping"),
        (b"- 1\n- 2\n", "is empty or not a mapping"),
        (b"a: [", "is not valid YAML"),
        (b"pipelineInfo: {name: x}\n", "is not a compiled KFP pipeline"),
        (
            b"pipelineInfo: {name: x}\nroot: {inputDefinitions: {parameters: {a: {parameterType: BLOB}}}}\n",
            "parameter 'a' has unknown type BLOB",
        ),
        (
            b"pipelineInfo: {name: x}\nroot: {inputDefinitions: {artifacts: {a: {}}}}\n",
            "input artifact 'a' is not supported",
        ),
    ],
)
def test_not_a_template(raw, message):
    with pytest.raises(TemplateError, match=message):
        parse_template(raw, "t.yaml")


def test_cache_reads_once(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(MNIST_TEMPLATE.read_bytes())
    cache = TemplateCache()
    first = cache.get(str(path))
    path.write_bytes(b"changed: [")
    assert cache.get(str(path)) is first


def test_missing_template_is_an_error(tmp_path):
    with pytest.raises(TemplateError, match="not found"):
        TemplateCache().get(str(tmp_path / "missing.yaml"))
    with pytest.raises(TemplateError, match="plain http is not allowed"):
        TemplateCache().get("http://example.com/t.yaml")


ROUTE = """
project: p-12345
routes:
  - name: mnist
    template: {template}
    pipeline_root: gs://b/root
    parameters: {params}
    code: true
"""


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            '{data_uri: "{data_uri}"}',
            r"routes\[0\] \(mnist\)\.parameters: required pipeline parameter\(s\) model_registry_uri not set",
        ),
        (
            '{data_uri: "{data_uri}", model_registry_uri: m, learning_rate: 1}',
            r"unknown pipeline parameter\(s\) learning_rate",
        ),
        (
            '{data_uri: "{data_uri}", model_registry_uri: m, min_accuracy: high}',
            r"parameter 'min_accuracy' must be double, got 'high'",
        ),
    ],
)
def test_parameters_checked_when_the_config_loads(params, message):
    config = parse_config(
        ROUTE.format(template=MNIST_TEMPLATE, params=params), source="retrain.yaml", env={}
    )
    with pytest.raises(ConfigError, match=message):
        Service.from_config(config)


def test_missing_local_template_fails_at_start():
    config = parse_config(ROUTE.format(template="/nope/t.yaml", params="{}"), env={})
    with pytest.raises(
        ConfigError, match=r"routes\[0\] \(mnist\)\.template: template /nope/t\.yaml not found"
    ):
        Service.from_config(config)


def test_remote_templates_are_checked_on_first_use():
    config = parse_config(ROUTE.format(template="gs://b/t.yaml", params="{}"), env={})
    Service.from_config(config)  # does not read gs:// at start-up


# ----------------------------------------------------------------------------- gs:// templates


def _upload(bucket: str, name: str, data: bytes) -> None:
    from retrain_trigger import gcs

    gcs.write_bytes(f"gs://{bucket}/{name}", data, content_type="application/x-yaml")
