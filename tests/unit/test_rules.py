from __future__ import annotations

import json
import re

import pytest

from retrain_trigger import rules
from retrain_trigger.config import parse_config
from retrain_trigger.errors import Forbidden, Unprocessable
from retrain_trigger.model import Kind, RunRequest, Trigger
from retrain_trigger.spec import parse_template


class Templates:
    """The template lookup rules.plan is given: for each route, a compiled template declaring
    exactly the route's parameters, each of the type of its configured value, none required."""

    TYPES = {bool: "BOOLEAN", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", str: "STRING"}

    def for_route(self, route, uri=""):
        declared = {
            name: {"parameterType": self.TYPES[type(value)], "isOptional": True}
            for name, value in route.parameters.items()
        }
        document = {
            "pipelineInfo": {"name": "rules-test"},
            "root": {"inputDefinitions": {"parameters": declared}},
        }
        return parse_template(json.dumps(document).encode(), uri or route.template)


TEMPLATES = Templates()

CONFIG = """
project: test-project
routes:
  - name: mnist
    template: t.yaml
    pipeline_root: gs://ct-bucket/pipeline-root
    parameters:
      data_uri: "{data_uri}"
      commit_sha: "{commit_sha}"
      generation: "{generation}"
      fixed: 3
    labels: {team: ml}
    data:
      bucket: ct-bucket
      include: ["data/**"]
      exclude: ["data/**/*.md", "data/private/**"]
    code: true
    model: true
    allowed_templates: ["gs://ct-templates/mnist/"]
  - name: marker
    template: t.yaml
    pipeline_root: gs://other-bucket/root
    parameters: {data_uri: "{data_uri}"}
    data: {bucket: other-bucket, include: ["exports/**"], mode: marker, marker: _SUCCESS}
"""


@pytest.fixture(scope="module")
def config():
    return parse_config(CONFIG, env={})


def data(name, bucket="ct-bucket", generation="17", size=10, event_type="OBJECT_FINALIZE", **kw):
    return Trigger(
        kind=Kind.DATA,
        source="test",
        bucket=bucket,
        object=name,
        generation=generation,
        size=size,
        event_type=event_type,
        **kw,
    )


@pytest.mark.parametrize(
    ("trigger", "reason"),
    [
        (data("data/a.csv", event_type="OBJECT_DELETE"), "OBJECT_DELETE is not an object finalize"),
        (
            data("data/a.csv", event_type="OBJECT_METADATA_UPDATE"),
            "OBJECT_METADATA_UPDATE is not an object finalize",
        ),
        (
            data("data/a.csv", event_type="google.cloud.storage.object.v1.deleted"),
            "is not an object finalize",
        ),
        (
            data("pipeline-root/run-1/model.joblib"),
            "loop guard: gs://ct-bucket/pipeline-root/run-1/model.joblib is under "
            "gs://ct-bucket/pipeline-root (pipeline_root of route mnist)",
        ),
        (data("root/x", bucket="other-bucket"), "loop guard"),
        (
            data("data/a.csv", metadata={"retrain-trigger-run": "job-1"}),
            "loop guard: object was written by a pipeline run",
        ),
        (data("data/folder/"), "folder placeholder"),
        (data("data/a.csv.tmp"), "temporary or hidden file name"),
        (data("data/.a.csv"), "temporary or hidden file name"),
        (data("data/_temporary/0/part-0"), "object in a temporary or hidden folder"),
        (data("gcloud/tmp/parallel_composite_uploads/x"), "temporary upload object"),
        (data("data/a.csv", size=0), "object is 0 bytes, below min_size 1"),
        (data("elsewhere/a.csv"), "no route's data rule matches gs://ct-bucket/elsewhere/a.csv"),
        (data("data/readme.md"), "no route's data rule matches"),
        (data("data/private/x.csv"), "no route's data rule matches"),
        (data("data/a.csv", bucket="unknown-bucket"), "no route's data rule matches"),
        (
            data("exports/2026/part-1.csv", bucket="other-bucket"),
            "route marker waits for marker _SUCCESS; part-1.csv is data",
        ),
    ],
)
def test_data_skips(config, trigger, reason):
    planned = rules.plan(config, trigger, TEMPLATES)
    assert isinstance(planned, rules.Skip)
    assert reason in planned.reason


def test_object_mode_request(config):
    request = rules.plan(
        config, data("data/2026-11-27/part-0001.csv", generation="1764259200000001"), TEMPLATES
    )
    assert isinstance(request, RunRequest)
    assert request.run_key == "gs://ct-bucket/data/2026-11-27/part-0001.csv#1764259200000001"
    assert request.parameter_values == {
        "data_uri": "gs://ct-bucket/data/2026-11-27/part-0001.csv",
        "commit_sha": "",
        "generation": "1764259200000001",
        "fixed": 3,
    }
    assert request.job_id.startswith("mnist-data-part-0001-csv-")
    assert request.labels["team"] == "ml"
    assert request.labels["retrain-route"] == "mnist" and request.labels["retrain-kind"] == "data"
    assert request.pipeline_root == "gs://ct-bucket/pipeline-root"


def test_marker_mode_gets_the_folder(config):
    request = rules.plan(
        config, data("exports/2026-11-27/_SUCCESS", bucket="other-bucket", size=0), TEMPLATES
    )
    assert isinstance(request, RunRequest)
    assert request.parameter_values["data_uri"] == "gs://other-bucket/exports/2026-11-27/"
    assert request.run_key == "gs://other-bucket/exports/2026-11-27/_SUCCESS#17"
    assert request.job_id.startswith("marker-data-2026-11-27-")


def test_same_change_same_job_id_new_generation_new_job(config):
    a = rules.plan(config, data("data/a.csv", generation="1"), TEMPLATES)
    b = rules.plan(config, data("data/a.csv", generation="1", event_id="other-delivery"), TEMPLATES)
    c = rules.plan(config, data("data/a.csv", generation="2"), TEMPLATES)
    assert a.job_id == b.job_id != c.job_id


def test_code_trigger_uses_route_dataset(config):
    trigger = Trigger(
        kind=Kind.CODE,
        source="http",
        commit_sha="0123456789abcdef",
        image_uri="gcr.io/p/train@sha256:" + "b" * 64,
    )
    request = rules.plan(config, trigger, TEMPLATES)
    assert request.route == "mnist"
    assert request.parameter_values["data_uri"] == "gs://ct-bucket/data/"
    assert request.parameter_values["commit_sha"] == "0123456789abcdef"
    assert request.run_key == "code:0123456789abcdef:gcr.io/p/train@sha256:" + "b" * 64
    assert request.job_id.startswith("mnist-code-01234567-")
    assert request.labels["retrain-commit"] == "0123456789ab"


def test_model_trigger(config):
    request = rules.plan(
        config, Trigger(kind=Kind.MODEL, source="http", model_uri="gs://models/base/v7/"), TEMPLATES
    )
    assert request.run_key == "model:gs://models/base/v7/"
    assert request.job_id.startswith("mnist-model-v7-")


def test_force_adds_nonce(config):
    base = Trigger(kind=Kind.CODE, source="http", commit_sha="abcdef12")
    forced = Trigger(
        kind=Kind.CODE, source="http", commit_sha="abcdef12", force=True, nonce="again-1"
    )
    plain, rerun = rules.plan(config, base, TEMPLATES), rules.plan(config, forced, TEMPLATES)
    assert rerun.run_key == plain.run_key + "#force=again-1"
    assert rerun.job_id != plain.job_id
    assert (
        rules.plan(config, forced, TEMPLATES).job_id == rerun.job_id
    )  # the same request: the same run


def test_force_without_nonce_is_refused_not_timed(config):
    trigger = Trigger(kind=Kind.CODE, source="http", commit_sha="abcdef12", force=True)
    with pytest.raises(Unprocessable, match=r'force needs a nonce.*send "nonce"') as exc:
        rules.plan(config, trigger, TEMPLATES)
    assert exc.value.code == "nonce_required" and exc.value.status == 422


def test_cloud_build_not_success_is_skipped(config):
    trigger = Trigger(
        kind=Kind.CODE,
        source="pubsub:cloud-builds",
        event_type="FAILURE",
        build_id="b1",
        commit_sha="abcdef12",
    )
    planned = rules.plan(config, trigger, TEMPLATES)
    assert (
        isinstance(planned, rules.Skip)
        and planned.reason == "build b1 status FAILURE; only SUCCESS triggers"
    )


@pytest.mark.parametrize(
    ("trigger", "error", "message"),
    [
        (
            Trigger(kind=Kind.CODE, source="http", commit_sha="abcdef12", route="nope"),
            Unprocessable,
            "unknown route 'nope'",
        ),
        (
            Trigger(kind=Kind.CODE, source="http", commit_sha="abcdef12", route="marker"),
            Unprocessable,
            "route marker does not accept code triggers",
        ),
        (
            Trigger(
                kind=Kind.CODE, source="http", commit_sha="abcdef12", template="gs://evil/t.yaml"
            ),
            Forbidden,
            "template gs://evil/t.yaml is not under an allowed prefix of route mnist",
        ),
        (
            Trigger(
                kind=Kind.CODE,
                source="http",
                commit_sha="abcdef12",
                template="gs://ct-templates/mnistx/t.yaml",
            ),
            Forbidden,
            "not under an allowed prefix",
        ),
    ],
)
def test_http_rejections(config, trigger, error, message):
    with pytest.raises(error, match=re.escape(message)):
        rules.plan(config, trigger, TEMPLATES)


ALLOWED = ("gs://ct-templates/mnist", "https://us-central1-kfp.pkg.dev/my-proj/mnist-repo")


@pytest.mark.parametrize(
    ("template", "allowed"),
    [
        ("gs://ct-templates/mnist", True),
        ("gs://ct-templates/mnist/", True),
        ("gs://ct-templates/mnist/abcdef12/t.yaml", True),
        ("gs://ct-templates/mnist-attacker/t.yaml", False),
        ("gs://ct-templates/mnistx", False),
        ("gs://ct-templates/mnist/../evil/t.yaml", False),
        ("gs://ct-templates/mnist/%2e%2e/evil/t.yaml", False),
        ("gs://ct-templates/mnist%2fx/t.yaml", False),
        ("gs://ct-templates/mnist//t.yaml", False),
        ("gs://ct-templates/mnist/./t.yaml", False),
        ("gs://ct-templates.evil/mnist/t.yaml", False),
        ("gs://ct-templates/MNIST/t.yaml", False),
        ("https://us-central1-kfp.pkg.dev/my-proj/mnist-repo/pipeline/v1", True),
        ("https://us-central1-kfp.pkg.dev/my-proj/mnist-repo/pipeline/sha256:ab", True),
        ("https://us-central1-kfp.pkg.dev/my-proj/mnist-repo-evil/pipeline/v1", False),
        ("https://us-central1-kfp.pkg.dev/my-proj-evil/mnist-repo/pipeline/v1", False),
        ("https://us-central1-kfp.pkg.dev/other-proj/mnist-repo/pipeline/v1", False),
        ("https://us-central1-kfp.pkg.dev.evil.example/my-proj/mnist-repo/p/v1", False),
        ("https://us-central1-kfp.pkg.dev:443/my-proj/mnist-repo/p/v1", False),
        ("https://user@us-central1-kfp.pkg.dev/my-proj/mnist-repo/p/v1", False),
        ("https://us-central1-kfp.pkg.dev/my-proj/mnist-repo/../../other/r/p/v1", False),
        ("https://us-central1-kfp.pkg.dev/my-proj/mnist-repo/p/v1?alt=../../x", False),
        ("https://us-central1-kfp.pkg.dev/my-proj/mnist-repo/p/v1#frag", False),
        ("http://us-central1-kfp.pkg.dev/my-proj/mnist-repo/p/v1", False),
    ],
)
def test_allowed_templates_match_on_path_boundaries(template, allowed):
    assert rules.template_allowed(template, ALLOWED) is allowed


def test_allowed_template_is_used(config):
    trigger = Trigger(
        kind=Kind.CODE,
        source="http",
        commit_sha="abcdef12",
        template="gs://ct-templates/mnist/abcdef12/t.yaml",
    )
    assert (
        rules.plan(config, trigger, TEMPLATES).template == "gs://ct-templates/mnist/abcdef12/t.yaml"
    )


def test_ambiguous_route():
    text = CONFIG.replace(
        "    data: {bucket: other-bucket", "    code: true\n    data: {bucket: other-bucket"
    )
    config = parse_config(text, env={})
    with pytest.raises(
        Unprocessable, match=r"several routes accept code triggers \(mnist, marker\)"
    ):
        rules.plan(config, Trigger(kind=Kind.CODE, source="http", commit_sha="abcdef12"), TEMPLATES)


REGISTRY_CONFIG = """
project: test-project
routes:
  - name: mnist
    template: t.yaml
    pipeline_root: gs://ct-bucket/pipeline-root
    parameters:
      data_uri: "{data_uri}"
      model_registry_uri: gs://ct-bucket/data/registry
      eval_uri: gs://ct-bucket/data/
      export_uri: gs://exports/mnist/
    data: {bucket: ct-bucket, include: ["data/**"]}
"""


@pytest.mark.parametrize(
    ("name", "bucket", "skipped"),
    [
        ("data/registry/champion/model.joblib", "ct-bucket", "parameter model_registry_uri"),
        ("data/registry", "ct-bucket", "parameter model_registry_uri"),
        ("data/registry-notes/a.csv", "ct-bucket", ""),
        ("data/new/part-1.csv", "ct-bucket", ""),
    ],
)
def test_loop_guard_covers_fixed_gs_parameters_on_path_boundaries(name, bucket, skipped):
    """A data route whose globs see the model registry must not retrain on every registration."""
    config = parse_config(REGISTRY_CONFIG, env={})
    planned = rules.plan(config, data(name, bucket=bucket), TEMPLATES)
    if skipped:
        assert isinstance(planned, rules.Skip) and skipped in planned.reason, planned
        assert planned.reason.startswith("loop guard: ")
    else:
        assert isinstance(planned, RunRequest), planned


def test_explicit_writes_replace_the_inferred_ones():
    text = REGISTRY_CONFIG.replace(
        "    data: {bucket", "    writes: [gs://ct-bucket/data/out]\n    data: {bucket"
    )
    config = parse_config(text, env={})
    assert config.routes[0].written == (
        ("gs://ct-bucket/pipeline-root", "pipeline_root"),
        ("gs://ct-bucket/data/out", "writes"),
    )
    assert isinstance(rules.plan(config, data("data/registry/m.joblib"), TEMPLATES), RunRequest)
    assert "gs://ct-bucket/data/out" in rules.plan(config, data("data/out/x"), TEMPLATES).reason


def test_display_names_carry_no_control_characters(config):
    text = CONFIG.replace(
        "    labels: {team: ml}", '    labels: {team: ml}\n    display_name: "{object}"'
    )
    config = parse_config(text, env={})
    request = rules.plan(config, data("data/a\tb\x01c.csv"), TEMPLATES)
    assert request.display_name == "data/a b c.csv"
    assert request.parameter_values["data_uri"] == "gs://ct-bucket/data/a\tb\x01c.csv"
    assert re.fullmatch(r"mnist-data-a-b-c-csv-[0-9a-f]{16}", request.job_id)


@pytest.mark.parametrize(
    ("name", "pattern", "matches"),
    [
        ("data/a.csv", "data/**", True),
        ("data/x/y/a.csv", "data/**/*.csv", True),
        ("data/a.csv", "data/**/*.csv", True),
        ("data/x/a.txt", "data/**/*.csv", False),
        ("data/x/a.csv", "data/*.csv", False),
        ("data/a.csv", "data/?.csv", True),
        ("data/ab.csv", "data/[ab]b.csv", True),
        ("data/cb.csv", "data/[!ab]b.csv", True),
        ("data/a.csv", "data/[.csv", False),
        ("a+b(c).csv", "a+b(c).csv", True),
    ],
)
def test_glob(name, pattern, matches):
    assert rules.glob_match(name, pattern) is matches


@pytest.mark.parametrize(
    "readable",
    [
        "",
        "UPPER and spaces",
        "é" * 200,
        "../../etc/passwd",
        "a" * 500,
        "---",
        "日本語.csv",
        "\u202eevil",
    ],
)
def test_job_ids_and_labels_follow_vertex_rules(readable):
    job_id = rules.job_id_for(
        "a-very-long-route-name-of-30ch", "model", readable, "key:" + readable
    )
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,127}", job_id), job_id
    assert len(job_id) < 128
    label = rules.label_value(readable)
    assert re.fullmatch(r"[a-z0-9_-]{0,63}", label)
