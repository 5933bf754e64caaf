from __future__ import annotations

import re

import pytest

from retrain_trigger import rules
from retrain_trigger.config import parse_config
from retrain_trigger.errors import Forbidden, Unprocessable
from retrain_trigger.model import Kind, RunRequest, Trigger

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
            "loop guard: gs://ct-bucket/pipeline-root/run-1/model.joblib is under the pipeline root of route mnist",
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
    planned = rules.plan(config, trigger)
    assert isinstance(planned, rules.Skip)
    assert reason in planned.reason


def test_object_mode_request(config):
    request = rules.plan(
        config, data("data/2026-11-27/part-0001.csv", generation="1764259200000001")
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
    request = rules.plan(config, data("exports/2026-11-27/_SUCCESS", bucket="other-bucket", size=0))
    assert isinstance(request, RunRequest)
    assert request.parameter_values["data_uri"] == "gs://other-bucket/exports/2026-11-27/"
    assert request.run_key == "gs://other-bucket/exports/2026-11-27/_SUCCESS#17"
    assert request.job_id.startswith("marker-data-2026-11-27-")


def test_same_change_same_job_id_new_generation_new_job(config):
    a = rules.plan(config, data("data/a.csv", generation="1"))
    b = rules.plan(config, data("data/a.csv", generation="1", event_id="other-delivery"))
    c = rules.plan(config, data("data/a.csv", generation="2"))
    assert a.job_id == b.job_id != c.job_id


def test_code_trigger_uses_route_dataset(config):
    trigger = Trigger(
        kind=Kind.CODE,
        source="http",
        commit_sha="0123456789abcdef",
        image_uri="gcr.io/p/train@sha256:" + "b" * 64,
    )
    request = rules.plan(config, trigger)
    assert request.route == "mnist"
    assert request.parameter_values["data_uri"] == "gs://ct-bucket/data/"
    assert request.parameter_values["commit_sha"] == "0123456789abcdef"
    assert request.run_key == "code:0123456789abcdef:gcr.io/p/train@sha256:" + "b" * 64
    assert request.job_id.startswith("mnist-code-01234567-")
    assert request.labels["retrain-commit"] == "0123456789ab"


def test_model_trigger(config):
    request = rules.plan(
        config, Trigger(kind=Kind.MODEL, source="http", model_uri="gs://models/base/v7/")
    )
    assert request.run_key == "model:gs://models/base/v7/"
    assert request.job_id.startswith("mnist-model-v7-")


def test_force_adds_nonce(config):
    base = Trigger(kind=Kind.CODE, source="http", commit_sha="abcdef12")
    forced = Trigger(
        kind=Kind.CODE, source="http", commit_sha="abcdef12", force=True, nonce="again-1"
    )
    plain, rerun = rules.plan(config, base), rules.plan(config, forced)
    assert rerun.run_key == plain.run_key + "#force=again-1"
    assert rerun.job_id != plain.job_id
    timed = rules.plan(
        config, Trigger(kind=Kind.CODE, source="http", commit_sha="abcdef12", force=True)
    )
    assert re.search(r"#force=\d{8}T\d{6}Z$", timed.run_key)


def test_cloud_build_not_success_is_skipped(config):
    trigger = Trigger(
        kind=Kind.CODE,
        source="pubsub:cloud-builds",
        event_type="FAILURE",
        build_id="b1",
        commit_sha="abcdef12",
    )
    planned = rules.plan(config, trigger)
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
        rules.plan(config, trigger)


def test_allowed_template_is_used(config):
    trigger = Trigger(
        kind=Kind.CODE,
        source="http",
        commit_sha="abcdef12",
        template="gs://ct-templates/mnist/abcdef12/t.yaml",
    )
    assert rules.plan(config, trigger).template == "gs://ct-templates/mnist/abcdef12/t.yaml"


def test_ambiguous_route():
    text = CONFIG.replace(
        "    data: {bucket: other-bucket", "    code: true\n    data: {bucket: other-bucket"
    )
    config = parse_config(text, env={})
    with pytest.raises(
        Unprocessable, match=r"several routes accept code triggers \(mnist, marker\)"
    ):
        rules.plan(config, Trigger(kind=Kind.CODE, source="http", commit_sha="abcdef12"))


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
