"""examples/churn: a tabular pipeline fed by the trigger's window manifests.

The committed spec is kept in sync with its source; its steps are checked one by one in-process;
the whole spec is run with kfp's local runner on manifests exactly as the trigger writes them
(``retrain_trigger.gates.windows.manifest_body``), over shards on fake-gcs-server, reporting to the
Pub/Sub emulator.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from examples.churn import compile as compile_cli
from examples.churn import evaluate_register, load_window, pipeline, sample_data, train
from examples.churn._split import read_split
from kfp.dsl import Dataset, Metrics, Model

from pipeline_specs import DEFAULT_IMAGE

from ._programs import load_spec, programs, undefined_globals
from .conftest import REPO, run_compiled

EXAMPLE = REPO / "examples" / "churn"
COMPILED = EXAMPLE / "churn_training.yaml"
CONFIG = EXAMPLE / "retrain.yaml"
VERSION = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")

EXPECTED_PARAMETERS = {
    "manifest_uri": ("STRING", None),
    "model_registry_uri": ("STRING", None),
    "target_column": ("STRING", "churned"),
    "id_column": ("STRING", "customer_id"),
    "max_depth": ("NUMBER_INTEGER", 6),
    "n_estimators": ("NUMBER_INTEGER", 200),
    "min_auc": ("NUMBER_DOUBLE", 0.75),
    "test_fraction": ("NUMBER_DOUBLE", 0.25),
    "seed": ("NUMBER_INTEGER", 0),
    "outcome_topic": ("STRING", ""),
    "job_id": ("STRING", ""),
}


# --- the trigger's manifest ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def route() -> Any:
    """The example's route, as the trigger loads it from examples/churn/retrain.yaml."""
    from retrain_trigger.config import parse_config

    return parse_config(CONFIG.read_text(), source=str(CONFIG)).routes[0]


def manifest_of(route: Any, objects: list[tuple[str, str, str, int | None]], opened_at: float):
    """The manifest the trigger writes for a window of ``(bucket, name, generation, size)``."""
    from retrain_trigger.gates.windows import manifest_body
    from retrain_trigger.store import Window, WindowItem, WindowState
    from retrain_trigger.store.base import new_window_id

    items = [WindowItem(bucket=b, object=n, generation=g, size=s) for b, n, g, s in objects]
    window = Window(
        window_id=new_window_id(route.name, opened_at),
        route=route.name,
        state=WindowState.CLOSING,
        opened_at=opened_at,
        last_event_at=opened_at,
        count=len(items),
    )
    return manifest_body(route, window, items)


def test_the_manifest_the_trigger_writes_matches_its_schema(route, schema_validator) -> None:
    from retrain_trigger.events import trigger_from_gcs_object
    from retrain_trigger.store import WindowItem

    # One object as a GCS notification brings it (the trigger's own decoding), one without size.
    event = trigger_from_gcs_object(
        {
            "bucket": "my-churn-data",
            "name": "incoming/2026-12-01/a.csv",
            "generation": "17",
            "size": "2048",
        },
        source="test",
        event_type="OBJECT_FINALIZE",
    )
    item = WindowItem.from_trigger(event)
    body = manifest_of(
        route,
        [
            (item.bucket, item.object, item.generation, item.size),
            ("my-churn-data", "incoming/2026-12-01/b c.csv", "1733000000000001", None),
        ],
        time.time(),
    )
    manifest = json.loads(body)
    validator = schema_validator("window-manifest")
    validator.validate(manifest)
    assert manifest["objects"][0] == {
        "uri": "gs://my-churn-data/incoming/2026-12-01/a.csv",
        "bucket": "my-churn-data",
        "name": "incoming/2026-12-01/a.csv",
        "generation": "17",
        "size": 2048,
    }
    # The schema is strict: a field the trigger starts writing must be documented first.
    from jsonschema import ValidationError

    for broken in (
        {**manifest, "extra": 1},
        {**manifest, "objects": [{**manifest["objects"][0], "generation": 17}]},
        {**manifest, "kind": "retrain-trigger.window-manifest/v2"},
    ):
        with pytest.raises(ValidationError):
            validator.validate(broken)


def write_manifest(path: Path, manifest: Any) -> str:
    path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return str(path)


GOOD = {
    "kind": "retrain-trigger.window-manifest/v1",
    "route": "churn",
    "window_id": "churn__20261201-101112-abcdef",
    "run_key": "window:churn:churn__20261201-101112-abcdef",
    "opened_at": 1764583872.5,
    "count": 1,
    "objects": [
        {
            "uri": "gs://b-1/incoming/a.csv",
            "bucket": "b-1",
            "name": "incoming/a.csv",
            "generation": "17",
            "size": 10,
        }
    ],
}


def test_the_reader_accepts_the_trigger_s_manifest(route, tmp_path: Path) -> None:
    body = manifest_of(route, [("b-1", "incoming/a.csv", "17", 10)], 1764583872.5)
    doc = load_window.read_window_manifest(write_manifest(tmp_path / "m.json", body.decode()))
    assert doc == json.loads(body)
    assert load_window.read_window_manifest(write_manifest(tmp_path / "g.json", GOOD)) == GOOD


def _object(**change: Any) -> dict:
    return {**GOOD, "objects": [{**GOOD["objects"][0], **change}]}


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "expected a JSON object, found list"),
        (
            {**GOOD, "kind": "other"},
            "kind is 'other', expected 'retrain-trigger.window-manifest/v1'",
        ),
        ({**GOOD, "objects": []}, "'objects' must be a non-empty list"),
        ({**GOOD, "count": 2}, "count is 2 but objects lists 1"),
        (
            {**GOOD, "opened_at": "yesterday"},
            "opened_at must be a time in seconds, got 'yesterday'",
        ),
        ({**GOOD, "objects": ["gs://b-1/a.csv"]}, r"objects\[0\] must be a JSON object, found str"),
        (_object(bucket="B"), r"objects\[0\]\.bucket is not a bucket name: 'B'"),
        (_object(name=""), r"objects\[0\]\.name is not an object name: ''"),
        (_object(uri="gs://b-1/other.csv"), r"objects\[0\]\.uri is 'gs://b-1/other.csv', expected"),
        (_object(generation=17), r"objects\[0\]\.generation must be a positive whole number"),
        (_object(generation="0"), r"objects\[0\]\.generation must be a positive whole number"),
        ({**GOOD, "count": 2, "objects": GOOD["objects"] * 2}, r"objects\[1\] repeats gs://b-1/"),
    ],
)
def test_the_reader_names_what_is_wrong(tmp_path: Path, manifest: Any, message: str) -> None:
    uri = write_manifest(tmp_path / "w.json", manifest)
    with pytest.raises(ValueError, match=f"manifest {re.escape(uri)}.*{message}"):
        load_window.read_window_manifest(uri)


def test_the_reader_needs_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r'manifest_uri is empty: set .*"\{manifest_uri\}"'):
        load_window.read_window_manifest("")
    with pytest.raises(ValueError, match="does not exist"):
        load_window.read_window_manifest(str(tmp_path / "missing.json"))


# --- the CSV rows --------------------------------------------------------------------------------

HEAD = "customer_id,tenure,charges,churned\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "s.csv: no header line"),
        (b"a,b\n1,2\n", "s.csv header: no target column 'churned' (columns: a, b)"),
        (b"customer_id,churned\nc1,0\n", "s.csv header: no feature column besides 'churned'"),
        ((HEAD + "c1,1,2\n").encode(), "s.csv line 2: 3 columns, expected 4"),
        (
            (HEAD + "c1,1,2,0\nc2,1,2,yes\n").encode(),
            "s.csv line 3 column 'churned': 'yes' is not 0 or 1",
        ),
        (
            (HEAD + "c1,1,x,0\n").encode(),
            "s.csv line 2 column 'charges': 'x' is not a finite number",
        ),
        ((HEAD + "c1,nan,1,0\n").encode(), "s.csv line 2 column 'tenure': 'nan' is not a finite"),
        (b"\xff\xfe", "s.csv: not UTF-8"),
    ],
)
def test_parse_table_names_the_problem(content: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_window.parse_table("s.csv", content, "churned", "customer_id")


def test_parse_table_drops_the_id_and_keeps_features_in_order() -> None:
    names, rows, labels = load_window.parse_table(
        "s.csv", (HEAD + "c1,3,70.5,1\n\nc2,12,20,0\n").encode(), "churned", "customer_id"
    )
    assert names == ["tenure", "charges"]
    assert rows == [[3.0, 70.5], [12.0, 20.0]]
    assert labels == [1, 0]
    # No id column: every other column is a feature.
    assert load_window.parse_table("s.csv", b"a,churned\n1,0\n", "churned", "")[0] == ["a"]


# --- sample data ---------------------------------------------------------------------------------


def test_sample_data_is_deterministic_and_learnable(tmp_path: Path) -> None:
    written = sample_data.write_shards(str(tmp_path / "a"), shards=3, rows=1500, seed=7)
    assert [Path(p).name for p in written] == [f"churn-{i:05d}-of-00003.csv" for i in range(3)]
    again = sample_data.write_shards(str(tmp_path / "b"), shards=3, rows=1500, seed=7)
    assert [Path(p).read_bytes() for p in written] == [Path(p).read_bytes() for p in again]
    rows = []
    for path in written:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames or ()) == sample_data.HEADER
            rows += list(reader)
    assert len(rows) == 1500
    assert len({r["customer_id"] for r in rows}) == 1500
    churned = sum(int(r["churned"]) for r in rows) / len(rows)
    assert 0.2 < churned < 0.5


def test_sample_data_broken_and_bad_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sample_data.main([str(tmp_path), "--shards", "2", "--rows", "10", "--broken"]) == 0
    printed = [Path(p).name for p in capsys.readouterr().out.split()]
    assert printed == ["churn-00000-of-00002.csv", "churn-00001-of-00002.csv", "churn-broken.csv"]
    with pytest.raises(ValueError, match=re.escape("line 3 column 'churned': 'yes' is not 0 or 1")):
        load_window.parse_table(
            "churn-broken.csv",
            (tmp_path / "churn-broken.csv").read_bytes(),
            "churned",
            "customer_id",
        )
    with pytest.raises(SystemExit):
        sample_data.main([str(tmp_path), "--shards", "0"])
    with pytest.raises(ValueError, match="rows must be between shards"):
        sample_data.write_shards(str(tmp_path), shards=5, rows=4)


def test_sample_data_command_line(tmp_path: Path) -> None:
    """The documented command, ``python -m examples.churn.sample_data DEST``, from the repository."""
    out = subprocess.run(
        [sys.executable, "-m", "examples.churn.sample_data", str(tmp_path), "--rows", "30"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert len(out.stdout.split()) == 3


# --- the steps, in-process -------------------------------------------------------------------------


def art(cls: Any, folder: Path, name: str) -> Any:
    return cls(name=name, uri=str(folder / name), metadata={})


@pytest.fixture
def local_window(tmp_path: Path, route) -> str:
    """Sample shards in a local folder and a window manifest over them (local paths stand in for
    ``gs://`` objects here: the steps read both alike; the trigger only ever lists ``gs://``)."""
    written = sample_data.write_shards(str(tmp_path / "incoming"), shards=3, rows=900, seed=7)
    body = json.loads(manifest_of(route, [("b-1", f"x{i}.csv", "1", None) for i in range(3)], 1.0))
    for obj, path in zip(body["objects"], written, strict=True):
        obj["uri"] = path
    uri = str(tmp_path / "window.json")
    Path(uri).write_text(json.dumps(body))
    return uri


def test_the_steps_in_process(
    local_window: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The in-process run skips the manifest's gs:// checks (see local_window); the format itself
    # is tested above.
    monkeypatch.setattr(
        load_window, "read_window_manifest", lambda uri: json.loads(Path(uri).read_text())
    )
    train_set, test_set = art(Dataset, tmp_path, "train"), art(Dataset, tmp_path, "test")
    out = load_window.load_window(
        local_window,
        "churned",
        "customer_id",
        0.25,
        0,
        train_set,
        test_set,
        art(Metrics, tmp_path, "s"),
    )
    assert out.rows == 900
    assert out.window_opened_at == 1.0
    names, x_test, y_test = read_split(test_set.path)
    assert names == list(sample_data.HEADER[1:-1])
    assert x_test.shape == (225, 5)
    assert len(y_test) == 225
    assert [s["rows"] for s in json.loads(out.data_sources)] == [300, 300, 300]

    model = art(Model, tmp_path, "model")
    train.train_classifier(train_set, 6, 50, 0, out.window_id, out.data_sources, model)
    metadata = json.loads((Path(model.path) / "metadata.json").read_text())
    assert metadata["features"] == names
    assert metadata["hyperparameters"] == {"max_depth": 6, "n_estimators": 50, "seed": 0}

    registry = tmp_path / "registry"
    first = evaluate_register.evaluate_and_register(
        model,
        test_set,
        str(registry),
        0.7,
        out.window_id,
        10.0,
        "",
        "churn-data-w-1",
        art(Metrics, tmp_path, "m1"),
    )
    assert first.registered is True
    assert first.auc >= 0.7
    pointer = json.loads((registry / "champion.json").read_text())
    assert (pointer["version"], pointer["window_opened_at"]) == (first.version, 10.0)
    # An older window's model never replaces a newer one's; a stricter gate registers nothing.
    older = evaluate_register.evaluate_and_register(
        model,
        test_set,
        str(registry),
        0.7,
        "older",
        5.0,
        "",
        "churn-data-w-2",
        art(Metrics, tmp_path, "m2"),
    )
    assert older.registered is False
    assert "trained on a newer window" in older.reason
    strict = evaluate_register.evaluate_and_register(
        model,
        test_set,
        str(registry),
        0.999,
        "newer",
        20.0,
        "",
        "churn-data-w-3",
        art(Metrics, tmp_path, "m3"),
    )
    assert (strict.registered, strict.version) == (False, "")
    assert "below min_auc 0.9990" in strict.reason
    assert json.loads((registry / "champion.json").read_text()) == pointer


def test_load_window_refuses_a_single_class(local_window: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        load_window, "read_window_manifest", lambda uri: json.loads(Path(uri).read_text())
    )
    manifest = json.loads(Path(local_window).read_text())
    only = Path(manifest["objects"][0]["uri"])
    lines = only.read_text().splitlines()
    only.write_text("\n".join([lines[0], *(line[:-1] + "0" for line in lines[1:])]) + "\n")
    manifest["objects"] = manifest["objects"][:1]
    manifest["count"] = 1
    Path(local_window).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="rows of churned=0 and 0 of churned=1; training needs"):
        load_window.load_window(
            local_window, "churned", "customer_id", 0.25, 0,
            art(Dataset, tmp_path, "tr"), art(Dataset, tmp_path, "te"), art(Metrics, tmp_path, "s"),
        )  # fmt: skip


# --- the compiled spec ---------------------------------------------------------------------------


def test_committed_yaml_matches_source(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.yaml"
    pipeline.compile_pipeline(str(fresh))
    assert load_spec(COMPILED) == load_spec(fresh), (
        "examples/churn/churn_training.yaml is stale: run `python -m examples.churn.compile`"
    )


def test_parameters_differ_from_mnist_and_steps_install_nothing() -> None:
    spec = load_spec(COMPILED)
    assert spec["pipelineInfo"]["name"] == "churn-training"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {n: (p["parameterType"], p.get("defaultValue")) for n, p in params.items()} == (
        EXPECTED_PARAMETERS
    )
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {
        "exec-load-window",
        "exec-train-classifier",
        "exec-evaluate-and-register",
        "exec-report-run-outcome",
    }
    for name, executor in executors.items():
        assert executor["container"]["image"] == DEFAULT_IMAGE, name
        assert "pip install" not in " ".join(executor["container"]["command"]), name
    assert set(spec["root"]["dag"]["tasks"]) == {"exit-handler-1", "report-run-outcome"}
    for name, source in programs(spec).items():
        assert undefined_globals(source) == set(), name


def test_compile_command_bakes_in_the_image(tmp_path: Path) -> None:
    image = "europe-docker.pkg.dev/p/r/trainer@sha256:" + "cd" * 32
    assert compile_cli.main(["--image", image, "--output", str(tmp_path / "c.yaml")]) == 0
    spec = load_spec(tmp_path / "c.yaml")
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        image
    }


def test_the_example_configuration_passes_check() -> None:
    """``retrain-trigger check`` on examples/churn/retrain.yaml, as its header says to run it."""
    cli = shutil.which("retrain-trigger", path=str(Path(sys.executable).parent))
    assert cli, "retrain-trigger is not installed in this environment"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    out = subprocess.run(
        [cli, "check", "--json"],
        env={**env, "RETRAIN_CONFIG": str(CONFIG)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    (entry,) = report["routes"]
    assert (entry["name"], entry["pipeline"], entry["triggers"]) == (
        "churn",
        "churn-training",
        ["data"],
    )
    assert report["warnings"] == []
    route = yaml.safe_load(CONFIG.read_text())["routes"][0]
    assert route["data"]["mode"] == "window"
    assert route["data"]["include"] == ["incoming/**/*.csv"]
    assert route["parameters"]["manifest_uri"] == "{manifest_uri}"


# --- the whole spec, with kfp's local runner -------------------------------------------------------


def upload_window(
    bucket: Any, route: Any, prefix: str, opened_at: float, broken: bool = False
) -> str:
    """Sample shards under ``prefix`` of ``bucket`` and the trigger's manifest over them."""
    written = sample_data.write_shards(
        f"gs://{bucket.name}/{prefix}", shards=3, rows=1500, broken=broken
    )
    objects = []
    for uri in written:
        blob = bucket.get_blob(uri.split("/", 3)[3])
        objects.append((bucket.name, blob.name, str(blob.generation), blob.size))
    body = manifest_of(route, objects, opened_at)
    window_id = json.loads(body)["window_id"]
    name = f"pipeline-root/manifests/churn/{window_id}.json"
    bucket.blob(name).upload_from_string(body, content_type="application/json")
    return f"gs://{bucket.name}/{name}"


@pytest.mark.slow
@pytest.mark.emulator
def test_windows_from_fake_gcs_train_register_and_report(
    route, gcs_bucket, outcome_topic, tmp_path: Path, schema_validator, capfd
) -> None:
    registry = f"gs://{gcs_bucket.name}/models"
    now = time.time()
    first_manifest = upload_window(gcs_bucket, route, "incoming/2026-12-01", now - 60)
    first = run_compiled(
        COMPILED,
        tmp_path,
        manifest_uri=first_manifest,
        model_registry_uri=registry,
        outcome_topic=outcome_topic.path,
        job_id="churn-data-window-first-0123456789abcdef",
    )
    assert first["registered"] is True, first["reason"]
    assert first["auc"] >= 0.75
    assert VERSION.match(first["version"])
    pointer = json.loads(gcs_bucket.blob("models/champion.json").download_as_bytes())
    assert pointer["version"] == first["version"]
    assert gcs_bucket.get_blob(f"models/{first['version']}/model.joblib").size > 0
    metadata = json.loads(
        gcs_bucket.blob(f"models/{first['version']}/metadata.json").download_as_bytes()
    )
    manifest = json.loads(gcs_bucket.blob(first_manifest.split("/", 3)[3]).download_as_bytes())
    assert {(s["uri"], s["generation"]) for s in metadata["data_sources"]} == {
        (o["uri"], o["generation"]) for o in manifest["objects"]
    }

    # A window that closed earlier but ran later: trained, not champion.
    older_manifest = upload_window(gcs_bucket, route, "incoming/2026-11-30", now - 3600)
    older = run_compiled(
        COMPILED,
        tmp_path,
        manifest_uri=older_manifest,
        model_registry_uri=registry,
        outcome_topic=outcome_topic.path,
        job_id="churn-data-window-older-0123456789abcdef",
    )
    assert older["registered"] is False
    assert "trained on a newer window" in older["reason"]

    # A window with a broken shard fails the run, naming the file, line and column.
    broken_manifest = upload_window(gcs_bucket, route, "incoming/2026-12-02", now, broken=True)
    with pytest.raises(RuntimeError, match="load-window"):
        run_compiled(
            COMPILED,
            tmp_path,
            manifest_uri=broken_manifest,
            model_registry_uri=registry,
            outcome_topic=outcome_topic.path,
            job_id="churn-data-window-broken-0123456789abcdef",
        )
    assert (
        f"ValueError: gs://{gcs_bucket.name}/incoming/2026-12-02/churn-broken.csv line 3 column "
        "'churned': 'yes' is not 0 or 1" in capfd.readouterr().out
    )

    messages = outcome_topic.messages()
    outcomes = {
        m.data["job_id"]: m.data["state"]
        for m in messages
        if m.attributes["retrain-message"] == "run-outcome"
    }
    assert outcomes == {
        "churn-data-window-first-0123456789abcdef": "SUCCEEDED",
        "churn-data-window-older-0123456789abcdef": "SUCCEEDED",
        "churn-data-window-broken-0123456789abcdef": "FAILED",
    }
    (champion,) = [m.data for m in messages if m.attributes["retrain-message"] == "champion"]
    schema_validator("champion").validate(champion)
    assert champion["job_id"] == "churn-data-window-first-0123456789abcdef"
    assert champion["metric"] == {"name": "auc", "value": first["auc"]}
    assert champion["model_uri"] == f"{registry}/{first['version']}/"
    assert len(messages) == 4


@pytest.mark.slow
@pytest.mark.emulator
def test_a_local_manifest_and_registry(route, gcs_bucket, tmp_path: Path) -> None:
    """The manifest and the registry on local disk (the shards stay in the bucket, as the trigger
    lists them); no outcome topic: the reports are only logged."""
    gcs_manifest = upload_window(gcs_bucket, route, "incoming/2026-12-03", time.time())
    local_manifest = tmp_path / "window.json"
    local_manifest.write_bytes(gcs_bucket.blob(gcs_manifest.split("/", 3)[3]).download_as_bytes())
    registry = tmp_path / "registry"
    out = run_compiled(
        COMPILED,
        tmp_path / "runs",
        manifest_uri=str(local_manifest),
        model_registry_uri=str(registry),
    )
    assert out["registered"] is True
    assert json.loads((registry / "champion.json").read_text())["version"] == out["version"]
    assert (registry / out["version"] / "model.joblib").stat().st_size > 0


@pytest.mark.emulator
def test_an_object_overwritten_since_the_window_closed_fails_the_load(
    route, gcs_bucket, tmp_path: Path
) -> None:
    manifest_uri = upload_window(gcs_bucket, route, "incoming/2026-12-04", time.time())
    ok = load_window.load_window(
        manifest_uri, "churned", "customer_id", 0.25, 0,
        art(Dataset, tmp_path, "tr"), art(Dataset, tmp_path, "te"), art(Metrics, tmp_path, "s"),
    )  # fmt: skip
    assert ok.rows == 1500
    name = "incoming/2026-12-04/churn-00001-of-00003.csv"
    listed = gcs_bucket.get_blob(name).generation
    gcs_bucket.blob(name).upload_from_string(b"customer_id,churned\n")
    with pytest.raises(
        ValueError,
        match=rf"{name} generation {listed} does not exist \(overwritten or deleted since the "
        r"window closed\)",
    ):
        load_window.load_window(
            manifest_uri, "churned", "customer_id", 0.25, 0,
            art(Dataset, tmp_path, "tr"), art(Dataset, tmp_path, "te"), art(Metrics, tmp_path, "s"),
        )  # fmt: skip
