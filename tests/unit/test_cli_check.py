"""``retrain-trigger check``: what the loop guard covers, and warnings about what it hides."""

from __future__ import annotations

import json

import pytest

from retrain_trigger_dev import cli
from tests.conftest import BASE_CONFIG, MNIST_TEMPLATE

REGISTRY_IN_DATA = BASE_CONFIG.format(template=MNIST_TEMPLATE).replace(
    "model_registry_uri: gs://ct-bucket/models", "model_registry_uri: gs://ct-bucket/data/registry"
)


def test_check_lists_the_loop_guard_and_warns_when_data_globs_see_a_written_location(
    monkeypatch: pytest.MonkeyPatch, write_config, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config(REGISTRY_IN_DATA)))
    assert cli.main(["check"]) == 0
    text = capsys.readouterr().out
    assert (
        "never triggers: gs://ct-bucket/pipeline-root (pipeline_root), "
        "gs://ct-bucket/data/registry (parameter model_registry_uri)"
    ) in text
    assert (
        "warning: route mnist: its data globs can see gs://ct-bucket/data/registry "
        "(parameter model_registry_uri of route mnist); objects there never trigger (loop guard)"
    ) in text

    assert cli.main(["check", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["routes"][0]["loop_guard"] == [
        "gs://ct-bucket/pipeline-root (pipeline_root)",
        "gs://ct-bucket/data/registry (parameter model_registry_uri)",
    ]
    assert len(out["warnings"]) == 1


def test_check_has_no_warning_for_the_documented_shape(
    monkeypatch: pytest.MonkeyPatch, write_config, config_text, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config(config_text)))
    assert cli.main(["check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []
