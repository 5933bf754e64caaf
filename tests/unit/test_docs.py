"""The README is the front door: every setting and every command is documented there, and the
settings table says what the declaration (``retrain_trigger.settings``) says."""

from __future__ import annotations

import re

import pytest

from retrain_trigger.settings import SETTINGS, Setting
from retrain_trigger_dev.cli import main_group
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def settings_rows() -> dict[str, list[str]]:
    """The README settings table: variable -> its four cells."""
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0] != "`variable`":
            rows[cells[0].strip("`")] = cells
    return rows


def expected_row(setting: Setting) -> list[str]:
    return [
        f"`{setting.name}`",
        f"`{setting.flag}`" if setting.flag else "",
        f"`{setting.field}`" if setting.field else "",
        setting.meaning,
    ]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_in_the_settings_table(setting: Setting) -> None:
    assert re.search(rf"^\| `{setting.name}` \|", README, re.MULTILINE), setting.name
    assert settings_rows()[setting.name] == expected_row(setting)


def test_the_settings_table_holds_only_declared_settings() -> None:
    assert sorted(settings_rows()) == sorted(s.name for s in SETTINGS)


def test_every_command_is_documented():
    for command in main_group.commands:
        assert f"retrain-trigger {command}" in README, f"retrain-trigger {command} not in README"


def test_the_two_front_door_commands():
    assert "make demo" in README and "make test" in README
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
