"""The command line on click: settings as global options (each with its variable), passed to the
configuration loader, never into the environment; shell completion; the documented exit codes."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from retrain_trigger import settings
from retrain_trigger_dev import cli


def test_every_setting_with_a_flag_is_a_global_option_with_its_variable() -> None:
    options = {param.name: param for param in cli.main_group.params}
    for setting in settings.GLOBAL_FLAGS:
        option = options[setting.name]
        assert setting.flag in option.opts
        assert option.envvar == setting.name
        assert option.help
    for command in cli.main_group.commands.values():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{command.name} {param.opts} has no help"


def test_flags_become_overrides_and_never_touch_the_environment(
    monkeypatch: pytest.MonkeyPatch, write_config, config_text, capsys
) -> None:
    monkeypatch.setenv("RETRAIN_REGION", "europe-west4")
    path = write_config(config_text)
    assert cli.main(["--config", str(path), "--region", "asia-east1", "check", "--json"]) == 0
    assert "RETRAIN_CONFIG" not in os.environ
    assert os.environ["RETRAIN_REGION"] == "europe-west4"
    from retrain_trigger.service import get_service

    assert get_service().config.region == "asia-east1"  # the flag won over the variable
    capsys.readouterr()


def test_choices_are_checked_and_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--backend", "kubeflow", "check"]) == 2
    assert "'kubeflow' is not one of 'vertex', 'local'" in capsys.readouterr().err
    assert cli.main(["no-such-command"]) == 2


def test_a_configuration_error_exits_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(tmp_path / "nope.yaml"), "check"]) == 2
    assert "nope.yaml: configuration file not found" in capsys.readouterr().err


def test_shell_completion() -> None:
    runner = CliRunner()
    script = runner.invoke(
        cli.main_group,
        [],
        prog_name="retrain-trigger",
        env={"_RETRAIN_TRIGGER_COMPLETE": "bash_source"},
    )
    assert "_RETRAIN_TRIGGER_COMPLETE=bash_complete" in script.output
    words = runner.invoke(
        cli.main_group,
        [],
        prog_name="retrain-trigger",
        env={
            "_RETRAIN_TRIGGER_COMPLETE": "bash_complete",
            "COMP_WORDS": "retrain-trigger re",
            "COMP_CWORD": "1",
        },
    )
    assert "plain,replay" in words.output.split()
