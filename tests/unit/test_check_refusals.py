"""Configurations that cannot work are refused when they load (``check``, a cold start), with the
file, the field and the fix; never answered ``internal error`` on every event."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from retrain_trigger.checks import glob_problem, marker_problem, placeholder_problem
from retrain_trigger.config import parse_config
from retrain_trigger.errors import ConfigError
from retrain_trigger.globs import glob_match

REPO = Path(__file__).resolve().parents[2]
CHURN = REPO / "examples" / "churn" / "churn_training.yaml"

ROUTE = """\
project: test-project
backend: vertex
routes:
  - name: churn
    template: {template}
    pipeline_root: gs://arts/pipeline-root
    parameters:
      manifest_uri: "{{manifest_uri}}"
      model_registry_uri: gs://arts/models
{extra_params}    data:
      bucket: my-data
      include: [{include}]
      exclude: [{exclude}]
      mode: {mode}
"""


def config(
    include: str = '"incoming/**"',
    exclude: str = "",
    mode: str = "window",
    extra_params: str = "",
    template: Path = CHURN,
) -> str:
    return ROUTE.format(
        template=template, include=include, exclude=exclude, mode=mode, extra_params=extra_params
    )


@pytest.mark.parametrize(
    ("include", "field", "message"),
    [
        (
            '"incoming/[z-a]*"',
            "routes[0] (churn).data.include[0]",
            "the range z-a in [z-a] is out of order and matches nothing: write [a-z]",
        ),
        (
            '"incoming/[abc*.csv"',
            "routes[0] (churn).data.include[0]",
            "never closed: add the ']'",
        ),
        (
            '"gs://my-data/incoming/**"',
            "routes[0] (churn).data.include[0]",
            "is a gs:// URI, but globs match object names inside the route's bucket: "
            "write 'incoming/**'",
        ),
        (
            '"incoming/[]x]"',
            "routes[0] (churn).data.include[0]",
            "empty character class at position 9, which matches nothing",
        ),
        (
            '"incoming/**", "gs://other/x/*"',
            "routes[0] (churn).data.include[1]",
            "write 'x/*' and set bucket: other",
        ),
    ],
)
def test_globs_that_cannot_work_are_refused_with_field_and_fix(
    include: str, field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(include=include), source="retrain.yaml")
    text = str(caught.value)
    assert text.startswith(f"retrain.yaml: {field}: "), text
    assert message in text


def test_an_exclude_glob_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"data\.exclude\[0\]: .*range 9-0"):
        parse_config(config(exclude='"incoming/[9-0]*"'), source="retrain.yaml")


@pytest.mark.parametrize("pattern", ["incoming/[a-z]*", "incoming/[!.]*", "a/**/b?.csv", "x[-]y"])
def test_sound_globs_pass_and_compile(pattern: str) -> None:
    assert glob_problem(pattern) == ""
    glob_match("incoming/abc", pattern)  # never raises


def test_a_marker_excluded_by_its_own_route_is_refused() -> None:
    text = config(include='"incoming/**"', exclude='"**/_SUCCESS"', mode="marker")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="retrain.yaml")
    assert str(caught.value) == (
        "retrain.yaml: routes[0] (churn).data.marker: the route's own exclude '**/_SUCCESS' "
        "drops its marker '_SUCCESS' (e.g. incoming/_SUCCESS), so no run ever starts: remove "
        "the marker from exclude"
    )


def test_a_marker_no_include_matches_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"data\.marker: no include pattern matches the marker"):
        parse_config(config(include='"incoming/**/*.csv"', mode="marker"), source="r.yaml")


@pytest.mark.parametrize(
    ("include", "exclude"),
    [
        (("incoming/**",), ()),
        (("incoming/2026-*/**",), ("**/*.tmp",)),
        (("data/*/_SUCCESS",), ()),
        (("data/[0-9]*/**",), ()),
        (("**",), ("**/*.md",)),
    ],
)
def test_markers_the_includes_match_pass(
    include: tuple[str, ...], exclude: tuple[str, ...]
) -> None:
    assert marker_problem("_SUCCESS", include, exclude) == ""


def test_a_placeholder_that_cannot_convert_is_refused_by_check() -> None:
    from retrain_trigger.service import Service

    parsed = parse_config(
        config(extra_params='      min_auc: "{bucket}"\n'), source="retrain.yaml", env={}
    )
    with pytest.raises(ConfigError) as caught:
        Service.from_config(parsed)
    text = str(caught.value)
    assert text.startswith("retrain.yaml: routes[0] (churn).parameters: "), text
    assert "parameter 'min_auc' is a number in the pipeline, but '{bucket}' fills it" in text
    assert "set a fixed number, or use exactly '{generation}' or '{size}'" in text


@pytest.mark.parametrize(
    ("kind", "value", "refused"),
    [
        ("NUMBER_DOUBLE", "{bucket}", True),
        ("NUMBER_DOUBLE", "{size}", False),
        ("NUMBER_INTEGER", "{generation}", False),
        ("NUMBER_INTEGER", "{size}-{size}", True),
        ("BOOLEAN", "{kind}", True),
        ("LIST", "{object}", True),
        ("STRING", "{bucket}/{object}", False),
        ("NUMBER_DOUBLE", "0.5", False),
    ],
)
def test_placeholder_types(kind: str, value: str, refused: bool) -> None:
    assert bool(placeholder_problem("p", kind, value)) is refused


def test_a_top_level_typo_is_an_unknown_field_with_a_suggestion() -> None:
    text = config().replace("routes:", "rouets:", 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="retrain.yaml", env={})
    message = str(caught.value)
    assert "rouets" in message and "did you mean routes?" in message, message
    assert "non-empty list" not in message


def test_field_paths_are_written_one_way() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(include='"incoming/[z-a]"'), source="r.yaml")
    assert re.search(r"routes\[0\] \(churn\)\.", str(caught.value))
    assert "routes(churn)" not in str(caught.value)


def test_what_probably_will_not_work_is_warned_with_field_and_fix() -> None:
    object_route = config(mode="object")  # {manifest_uri} outside a window route
    [warning] = parse_config(object_route, source="r.yaml", env={}).warnings
    assert warning == (
        "r.yaml: routes[0] (churn).parameters.manifest_uri: {manifest_uri} is empty unless "
        "data.mode is window; set data.mode: window, or use {data_uri}"
    )
    folder = config(include='"incoming/"', mode="object")
    assert any(
        "data.include[0]: 'incoming/' matches only folder placeholders" in w
        and "write 'incoming/**'" in w
        for w in parse_config(folder, source="r.yaml", env={}).warnings
    )


def test_a_window_route_whose_run_is_never_told_its_objects_is_warned() -> None:
    text = config().replace('      manifest_uri: "{manifest_uri}"\n', "")
    warnings = parse_config(text, source="r.yaml", env={}).warnings
    assert any("no parameter uses either" in w for w in warnings), warnings


def test_the_example_configurations_have_no_warning() -> None:
    from retrain_trigger.config import load_config

    assert load_config(REPO / "examples" / "churn" / "retrain.yaml", env={}).warnings == ()
