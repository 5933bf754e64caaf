"""The README is the front door: every setting and every command is documented there."""

from __future__ import annotations

import re

import pytest

from retrain_trigger.config import ENV_SETTINGS
from retrain_trigger_dev.cli import build_parser
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(ENV_SETTINGS))
def test_every_setting_is_in_the_settings_table(name):
    assert re.search(rf"^\| `{name}` \|", README, re.MULTILINE), f"{name} missing from README"


def test_every_command_is_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command in sub.choices:
        assert f"retrain-trigger {command}" in README, f"retrain-trigger {command} not in README"


def test_the_two_front_door_commands():
    assert "make demo" in README and "make test" in README
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
