from __future__ import annotations

import pytest

from retrain_trigger.config import load_config, parse_config
from retrain_trigger.errors import ConfigError
from retrain_trigger.loopguard import literal_prefix


def test_the_documented_shape_is_accepted(write_config, config_text):
    config = load_config(write_config(config_text), env={})
    route = config.route("mnist")
    assert config.project == "test-project"
    assert config.backend == "vertex"
    assert route is not None and route.data is not None
    assert route.data.include == ("data/**",)
    assert route.code and route.model
    assert route.parameters["data_uri"] == "{data_uri}"
    assert route.data.dataset_uri == "gs://ct-bucket/data/"


def test_config_is_frozen(write_config, config_text):
    config = load_config(write_config(config_text), env={})
    with pytest.raises(AttributeError):
        config.project = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.routes[0].parameters["x"] = "y"  # type: ignore[index]


def test_path_from_environment(write_config, config_text):
    path = write_config(config_text, "elsewhere.yaml")
    assert load_config(env={"RETRAIN_CONFIG": str(path)}).source == str(path)


def test_environment_overrides(write_config, config_text):
    env = {
        "GOOGLE_CLOUD_PROJECT": "other-project",
        "RETRAIN_REGION": "europe-west4",
        "RETRAIN_BACKEND": "local",
        "RETRAIN_VERTEX_ENDPOINT": "http://127.0.0.1:9999",
        "RETRAIN_AUTH": "hmac",
        "RETRAIN_HMAC_SECRET": "0123456789abcdef",
        "RETRAIN_ALLOWED_INVOKERS": "build@p.iam.gserviceaccount.com, me@example.com",
        "RETRAIN_MAX_BODY_BYTES": "2048",
        "RETRAIN_SUBMIT_DEADLINE": "12.5",
    }
    config = load_config(write_config(config_text), env=env)
    assert (config.project, config.region, config.backend) == (
        "other-project",
        "europe-west4",
        "local",
    )
    assert config.vertex_endpoint == "http://127.0.0.1:9999"
    assert config.auth.mode == "hmac"
    assert config.auth.allowed_invokers == ("build@p.iam.gserviceaccount.com", "me@example.com")
    assert config.max_body_bytes == 2048
    assert config.submit_deadline_seconds == 12.5
    assert "0123456789abcdef" not in repr(config)


def test_empty_string_means_unset(write_config, config_text):
    config = load_config(
        write_config(config_text), env={"RETRAIN_REGION": "", "RETRAIN_BACKEND": " "}
    )
    assert config.region == "us-central1" and config.backend == "vertex"


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: configuration file not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_oversized_file(write_config):
    path = write_config("project: x\n" + "#" * (1 << 20))
    with pytest.raises(ConfigError, match="configuration is larger than 1048576 bytes"):
        load_config(path, env={})


BAD = [
    ("project: [unclosed", r"<config>: not valid YAML at line 2, column 1: did not find expected"),
    ("", "configuration is empty"),
    ("- a\n- b\n", r"\(top level\): must be a mapping, got a list"),
    ("project: p-123\nroutes: []\n", r"routes: must be a non-empty list of routes"),
    (
        "project: p-123\nbackend: kubeflow\nroutes: [x]\n",
        r"backend: must be one of vertex, local, got 'kubeflow'",
    ),
    ("region: us-central1\nroutes: [x]\n", r"project: is required for the vertex backend"),
    ("project: p-123\nregion: Mars\nroutes: [x]\n", r"region: is not a valid region: 'Mars'"),
    ("project: p-123\nroutes: [x]\n", r"routes\[0\]: must be a mapping, got a string"),
    ("project: p-123\nroutes: [{name: m}]\n", r"routes\[0\] \(m\)\.template: is required"),
    (
        "project: p-123\nroutes: [{name: Bad_Name, template: t.yaml, pipeline_root: gs://b/r, code: true}]\n",
        r"routes\[0\] \(Bad_Name\)\.name: must be 1-30 characters",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: ftp://x/t.yaml, pipeline_root: gs://b/r, code: true}]\n",
        r"\.template: must be a local path, gs://",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: s3://b/r, code: true}]\n",
        r"\.pipeline_root: must be gs://bucket/path or a local folder",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r}]\n",
        r"routes\[0\] \(m\): accepts no trigger",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: yes-please}]\n",
        r"\.code: must be true or false",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, parameters: {x: '{nope}'}}]\n",
        r"parameters\.x: uses unknown field \{nope\}",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, parameters: {x: '{data_uri.__class__}'}}]\n",
        r"uses unknown field \{data_uri\.__class__\}",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, parameters: {x: [1]}}]\n",
        r"parameters\.x: must be a string, number or boolean",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, labels: {Team: X}}]\n",
        r"\.labels: label 'Team'",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, data: {bucket: Not_A_Bucket}}]\n",
        r"\.data\.bucket: is not a valid bucket name",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, data: {bucket: bkt, mode: sometimes}}]\n",
        r"\.data\.mode: must be one of object, marker, window",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, data: {bucket: bkt, marker: a/b}}]\n",
        r"\.data\.marker: must be a file name without '/'",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, data: {bucket: bkt, colour: red}}]\n",
        r"\.data: unknown field\(s\) colour",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, service_account: root}]\n",
        r"\.service_account: is not a service account email",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, allowed_templates: ['gs://']}]\n",
        r"allowed_templates: 'gs://' must be a gs:// or https:// prefix",
    ),
    (
        "project: p-123\nroutes:\n - {name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}\n - {name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}\n",
        r"route name 'm' is used twice",
    ),
    (
        "project: p-123\nrouts: []\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}]\n",
        r"unknown field\(s\) routs",
    ),
    (
        "project: p-123\nauth: {mode: hmac}\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}]\n",
        r"auth\.hmac_secret: hmac mode needs a secret of at least 16 characters",
    ),
    (
        "project: p-123\nauth: {mode: magic}\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}]\n",
        r"auth\.mode: must be one of iam, hmac, none",
    ),
    (
        "project: p-123\nauth: {allowed_invokers: [not-an-email]}\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}]\n",
        r"auth\.allowed_invokers: is not an email address",
    ),
    (
        "project: p-123\nlimits: {max_body_bytes: 5}\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}]\n",
        r"limits\.max_body_bytes: must be between 1024 and",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, allowed_templates: ['gs://b/']}]\n",
        r"allowed_templates: 'gs://b/' must be a gs:// or https:// prefix naming at least a bucket or host and a folder",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, allowed_templates: ['gs://b/t/../u']}]\n",
        r"'gs://b/t/\.\./u' must be .* \(must not contain empty, '\.' or '\.\.' path segments\)",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, allowed_templates: ['https://h/%70']}]\n",
        r"\(must not contain percent-encoding\)",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, writes: ['s3://b/x']}]\n",
        r"routes\[0\] \(m\)\.writes: 's3://b/x' must be a gs://bucket\[/folder\] URI",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true, writes: ['gs://b//x']}]\n",
        r"\.writes: 'gs://b//x' must be a gs://bucket\[/folder\] URI \(must not contain empty",
    ),
    (
        "project: p-123\ncloud_build_topic: 'bad topic'\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}]\n",
        r"cloud_build_topic: must be a topic id or projects/<project>/topics/<topic>",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://bkt/, data: {bucket: bkt, include: ['data/**']}}]\n",
        r"routes\[0\] \(m\)\.data: every object this route's data rule matches lies under a location",
    ),
    (
        "project: p-123\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://bkt/r, writes: [gs://bkt/data], data: {bucket: bkt, include: ['data/*.csv']}}]\n",
        r"every object this route's data rule matches lies under",
    ),
    ("project: !!python/object:os.system x\nroutes: []\n", r"not valid YAML"),
    ("a: &a [*a, *a]\n", r"<config>"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_configuration_is_named(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(text, env={})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RETRAIN_MAX_BODY_BYTES": "-1"},
            r"RETRAIN_MAX_BODY_BYTES: must be a positive whole number",
        ),
        (
            {"RETRAIN_SUBMIT_DEADLINE": "nan"},
            r"RETRAIN_SUBMIT_DEADLINE: must be a number of seconds",
        ),
        ({"RETRAIN_BACKEND": "cloud"}, r"backend: must be one of vertex, local, got 'cloud'"),
        ({"RETRAIN_AUTH": "open"}, r"auth\.mode: must be one of iam, hmac, none"),
        ({"RETRAIN_VERTEX_ENDPOINT": "http://a b"}, r"vertex_endpoint: must be host\[:port\]"),
        ({"RETRAIN_ALLOW_ANONYMOUS_ON_CLOUD_RUN": "sure"}, r"must be true or false, got 'sure'"),
    ],
)
def test_bad_environment_is_named(config_text, env, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(config_text, env=env)


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("data/**", "data/"),
        ("data/2026-*/x.csv", "data/"),
        ("exact/file.csv", "exact/file.csv"),
        ("**", ""),
        ("a/b?/c", "a/"),
    ],
)
def test_literal_prefix(pattern, prefix):
    assert literal_prefix(pattern) == prefix


WINDOW_ROUTE = """
project: p-123
routes:
  - name: batch
    template: t.yaml
    pipeline_root: gs://bkt/root
    data: {bucket: bkt, include: ["data/**"], mode: window}
  - name: plain
    template: t.yaml
    pipeline_root: gs://bkt/root
    code: true
"""


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (WINDOW_ROUTE, "batch"),
        (
            WINDOW_ROUTE.replace("mode: window", "mode: object")
            + "    concurrency: skip_if_running\n",
            "plain",
        ),
    ],
)
def test_sqlite_store_with_shared_state_is_refused_on_cloud_run(text, named):
    """A window route batches into one instance's file on Cloud Run: no flush would see it."""
    with pytest.raises(ConfigError, match=rf"store: route\(s\) {named} use batch windows") as exc:
        parse_config(text, env={"K_SERVICE": "retrain-event"})
    assert "set store: firestore (or RETRAIN_STORE=firestore)" in str(exc.value)
    assert parse_config(text, env={}).store == "sqlite"  # locally: one process, one file
    on_run = {"K_SERVICE": "retrain-event", "RETRAIN_STORE": "firestore"}
    assert parse_config(text, env=on_run).store == "firestore"


def test_sqlite_store_without_shared_state_is_fine_on_cloud_run():
    text = WINDOW_ROUTE.replace("mode: window", "mode: object")
    assert parse_config(text, env={"K_SERVICE": "retrain-event"}).store == "sqlite"


def test_cloud_build_topic_setting(config_text):
    assert parse_config(config_text, env={}).cloud_build_topic == "cloud-builds"
    env = {"RETRAIN_CLOUD_BUILD_TOPIC": "projects/p-1/topics/builds"}
    assert parse_config(config_text, env=env).cloud_build_topic == "projects/p-1/topics/builds"
    text = config_text.replace(
        "region: us-central1", "region: us-central1\ncloud_build_topic: ci-builds"
    )
    assert parse_config(text, env={}).cloud_build_topic == "ci-builds"


def test_loop_guard_locations_and_warnings():
    text = """
project: p-123
routes:
  - name: mnist
    template: t.yaml
    pipeline_root: gs://bkt/root
    parameters:
      data_uri: "{data_uri}"
      model_registry_uri: gs://bkt/data/registry
      base_data: gs://bkt/
      threshold: "0.9"
    data: {bucket: bkt, include: ["data/**", "more/**"]}
  - name: other
    template: t.yaml
    pipeline_root: gs://bkt/more/root
    code: true
"""
    config = parse_config(text, env={})
    assert config.routes[0].written == (
        ("gs://bkt/root", "pipeline_root"),
        ("gs://bkt/data/registry", "parameter model_registry_uri"),
    )
    assert config.routes[1].written == (("gs://bkt/more/root", "pipeline_root"),)
    assert config.warnings == (
        "route mnist: parameter base_data (gs://bkt/) holds a data source, so it is not counted as "
        "written by the pipeline; if the pipeline writes below it, list those folders under writes",
        "route mnist: its data globs can see gs://bkt/data/registry (parameter model_registry_uri "
        "of route mnist); objects there never trigger (loop guard)",
        "route mnist: its data globs can see gs://bkt/more/root (pipeline_root of route other); "
        "objects there never trigger (loop guard)",
    )


def test_partly_hidden_data_is_a_warning():
    text = """
project: p-123
routes:
  - name: m
    template: t.yaml
    pipeline_root: gs://bkt/root
    writes: [gs://bkt/data/out]
    data: {bucket: bkt, include: ["data/out/**", "data/in/**"]}
"""
    config = parse_config(text, env={})
    assert config.warnings == (
        "route m: data under gs://bkt/data/out/ never triggers: it lies under gs://bkt/data/out "
        "(writes of route m), which the loop guard skips",
    )


def test_unknown_fields_get_a_did_you_mean_hint():
    text = "project: p-123\nrouets: []\nroutes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}]\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, source="retrain.yaml", env={})
    assert str(refused.value).startswith(
        "retrain.yaml: (top level): unknown field(s) rouets (did you mean routes?); known: "
    )
    churn = "project: p-123\nroutes: [{name: churn, template: t.yaml, pipeline_root: gs://b/r, data: {bucket: bkt, inclde: [a]}}]\n"
    with pytest.raises(
        ConfigError,
        match=r"routes\[0\] \(churn\)\.data: unknown field\(s\) inclde \(did you mean include\?\)",
    ):
        parse_config(churn, env={})


def test_one_field_notation_down_to_list_items():
    text = "project: p-123\nroutes: [{name: churn, template: t.yaml, pipeline_root: gs://b/r, data: {bucket: bkt, include: [a, 5]}}]\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, source="retrain.yaml", env={})
    assert refused.value.source == "retrain.yaml"
    assert refused.value.field == "routes[0] (churn).data.include[1]"
    assert refused.value.message == "must be a string, got int"


def test_environment_values_meet_the_same_bounds_as_the_file(config_text):
    """Before, RETRAIN_MAX_BODY_BYTES=5 or RETRAIN_LOCAL_CONCURRENCY=1000 skipped the bounds the
    file's fields have: every request would have been too large, or 1000 runs at once."""
    with pytest.raises(
        ConfigError,
        match=r"limits\.max_body_bytes: must be between 1024 and 33554432, got 5 \(from RETRAIN_MAX_BODY_BYTES\)",
    ):
        parse_config(config_text, env={"RETRAIN_MAX_BODY_BYTES": "5"})
    with pytest.raises(
        ConfigError, match=r"local\.concurrency: must be between 1 and 64, got 1000"
    ):
        parse_config(config_text, env={"RETRAIN_LOCAL_CONCURRENCY": "1000"})


def test_overrides_win_over_the_environment(write_config, config_text):
    path = write_config(config_text)
    env = {"RETRAIN_REGION": "europe-west4", "RETRAIN_CONFIG": "/nowhere.yaml"}
    config = load_config(
        env=env, overrides={"RETRAIN_REGION": "asia-east1", "RETRAIN_CONFIG": str(path)}
    )
    assert config.region == "asia-east1" and config.source == str(path)


def test_the_published_json_schema_is_up_to_date():
    """retrain.schema.json is generated: python -m retrain_trigger.schema > retrain.schema.json"""
    import json

    from retrain_trigger.schema import json_schema
    from tests.conftest import REPO

    published = json.loads((REPO / "retrain.schema.json").read_text())
    assert published == json.loads(json.dumps(json_schema()))


def test_the_json_schema_accepts_the_documented_examples():
    """Editors validate retrain.yaml with it: the repository's own files pass, a typo does not."""
    import json

    import jsonschema
    import yaml

    from tests.conftest import REPO

    schema = json.loads((REPO / "retrain.schema.json").read_text())
    for path in (REPO / "examples" / "churn" / "retrain.yaml",):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError, match="rouets"):
        jsonschema.validate({"project": "p", "rouets": [], "routes": [{}]}, schema)
