"""Each step's logic, called in-process as plain functions with artifact stand-ins."""

from __future__ import annotations

import json
import re
from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn
from kfp.dsl import ClassificationMetrics, Dataset, Metrics, Model

from pipeline_specs import storage
from pipeline_specs.mnist import _split, evaluate, load_data, register
from pipeline_specs.mnist import train as train_step

HEADER_64 = ["label", *(f"p{i}" for i in range(64))]
VERSION = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def art(cls, folder: Path, name: str):
    return cls(name=name, uri=str(folder / name), metadata={})


def csv_bytes(rows, header=HEADER_64) -> bytes:
    lines = [",".join(header)] if header else []
    lines += [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def good_row(label: int = 3, width: int = 64, value: int = 5) -> list:
    return [label] + [value] * width


# --- parsing and validation -------------------------------------------------------------------


def test_parse_shard_with_and_without_header() -> None:
    rows = [good_row(1), good_row(2, value=16)]
    with_header = load_data.parse_shard("a.csv", csv_bytes(rows))
    without = load_data.parse_shard("b.csv", csv_bytes(rows, header=None))
    assert with_header.shape == (2, 65)
    assert (with_header == without).all()
    assert with_header[:, 0].tolist() == [1, 2]


def test_parse_shard_empty_files() -> None:
    assert load_data.parse_shard("e.csv", b"").shape == (0, 0)
    assert load_data.parse_shard("e.csv", b"\n \n").shape == (0, 0)
    assert load_data.parse_shard("h.csv", csv_bytes([])).shape == (0, 65)


def test_parse_shard_accepts_28x28_images() -> None:
    header = ["label", *(f"pixel{i}" for i in range(784))]
    values = load_data.parse_shard("m.csv", csv_bytes([good_row(9, 784, 255)], header=header))
    assert values.shape == (1, 785)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (csv_bytes([good_row(), good_row()[:-1]]), "s.csv line 3: 64 columns, expected 65"),
        (csv_bytes([good_row(11)]), "s.csv line 2 column 'label': label 11 is outside 0..9"),
        (csv_bytes([good_row(-1)], header=None), "line 1 column 'label': label -1 is outside"),
        (
            csv_bytes([good_row(), [4, *[0] * 9, 17, *[0] * 54]]),
            "s.csv line 3 column 'p9': pixel value 17 is outside 0..16",
        ),
        (
            csv_bytes([[4, 1.5, *[0] * 63]]),
            "s.csv line 2 column 'p0': '1.5' is not an integer",
        ),
        (csv_bytes([[1, 2, 3]]), "s.csv line 2: 3 columns, expected 65 like the header"),
        (csv_bytes([[1, 2, 3]], header=["label", "a", "b"]), "s.csv header: 3 columns; expected"),
        (csv_bytes([[1, 2, 3]], header=None), "s.csv line 1: 3 columns; expected 65"),
        (b"digit,a,b\n1,2,3\n", "s.csv line 1 column 1: expected a 'label' header"),
        (b"\xff\xfe\x00", "s.csv: not UTF-8"),
        (
            csv_bytes([[1, "99999999999999999999", *[0] * 63]]),
            "s.csv line 2 column 'p0': '99999999999999999999' is not an integer",
        ),
        (csv_bytes([[1, "", *[0] * 63]]), "s.csv line 2 column 'p0': '' is not an integer"),
    ],
)
def test_parse_shard_names_the_problem(content: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_data.parse_shard("s.csv", content)


def test_parse_shard_28x28_range_is_0_to_255() -> None:
    header = ["label", *(f"p{i}" for i in range(784))]
    with pytest.raises(ValueError, match=r"pixel value 256 is outside 0\.\.255"):
        load_data.parse_shard("m.csv", csv_bytes([good_row(9, 784, 256)], header=header))


def test_list_data_objects_local(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.csv", "1.csv", "notes.txt", "b/_SUCCESS"):
        (tmp_path / name).write_text("label\n")
    assert load_data.list_data_objects(str(tmp_path)) == [
        (str(tmp_path / "1.csv"), ""),
        (str(tmp_path / "b" / "2.csv"), ""),
    ]
    assert load_data.list_data_objects(str(tmp_path / "1.csv")) == [(str(tmp_path / "1.csv"), "")]
    with pytest.raises(ValueError, match="does not exist"):
        load_data.list_data_objects(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no CSV shards \(\*\.csv\) found under"):
        load_data.list_data_objects(str(tmp_path / "empty"))


def test_list_data_objects_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "window.json"
    manifest.write_text(
        json.dumps(
            {
                "objects": [
                    {"uri": "gs://b/x.csv", "generation": 17},
                    {"bucket": "b", "name": "y.csv", "generation": "18"},
                    "/data/z.csv",
                    {"uri": "gs://b/x.csv", "generation": 17},
                ]
            }
        )
    )
    assert load_data.list_data_objects(str(manifest)) == [
        ("gs://b/x.csv", "17"),
        ("gs://b/y.csv", "18"),
        ("/data/z.csv", ""),
    ]
    manifest.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_data.list_data_objects(str(manifest))
    manifest.write_text('{"files": []}')
    with pytest.raises(ValueError, match="'objects' list"):
        load_data.list_data_objects(str(manifest))
    manifest.write_text('{"objects": [{"generation": "1"}]}')
    with pytest.raises(ValueError, match=r"objects\[0\] has no 'uri'"):
        load_data.list_data_objects(str(manifest))


# --- load_and_validate ------------------------------------------------------------------------


def _load(tmp_path: Path, data_uri: str, test_fraction: float = 0.2, seed: int = 0):
    """Run load_and_validate into ``tmp_path``; returns (outputs, train, test, stats)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    train, test = art(Dataset, tmp_path, "train"), art(Dataset, tmp_path, "test")
    stats = art(Metrics, tmp_path, "stats")
    out = load_data.load_and_validate(data_uri, test_fraction, seed, train, test, stats)
    return out, train, test, stats


def test_load_and_validate_digits(digits_dir: Path, tmp_path: Path) -> None:
    out, train, test, stats = _load(tmp_path, str(digits_dir), 0.2, 42)
    assert (out.rows, out.features) == (1797, 64)
    x_train, y_train, pixel_max = _split.load_split(train.path)
    x_test, y_test, _ = _split.load_split(test.path)
    assert pixel_max == 16
    assert (len(y_train), len(y_test)) == (1437, 360)
    assert x_train.shape[1] == x_test.shape[1] == 64
    assert sorted(set(y_test.tolist())) == list(range(10))  # stratified
    assert stats.metadata["rows"] == 1797
    assert stats.metadata["shards"] == 4
    assert stats.metadata["classes"] == 10
    assert sum(stats.metadata[f"class_{k}_rows"] for k in range(10)) == 1797
    sources = json.loads(out.data_sources)
    assert [s["rows"] for s in sources] == [449, 449, 449, 450]
    assert all(len(s["sha256"]) == 64 and s["generation"] == "" for s in sources)
    assert stats.metadata["sources"] == sources
    # The same seed gives the same split.
    again = _load(tmp_path / "again", str(digits_dir), 0.2, 42)[2]
    assert (_split.load_split(again.path)[1] == y_test).all()


def test_load_rejects_mixed_widths(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_bytes(csv_bytes([good_row(k) for k in range(10)]))
    header = ["label", *(f"p{i}" for i in range(784))]
    (data / "b.csv").write_bytes(csv_bytes([good_row(1, 784)], header=header))
    with pytest.raises(ValueError, match=r"mixed widths: .*b\.csv has 784 pixel columns but"):
        _load(tmp_path, str(data))


def test_load_rejects_single_class_and_empty_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_bytes(csv_bytes([]))
    with pytest.raises(ValueError, match=r"empty data: no data rows in the 1 shard"):
        _load(tmp_path, str(data))
    (data / "b.csv").write_bytes(csv_bytes([good_row(7)] * 5))
    with pytest.raises(ValueError, match=r"single class: all 5 rows .* have label 7"):
        _load(tmp_path, str(data))
    (data / "c.csv").write_bytes(csv_bytes([good_row(2)]))
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] .* have a single row"):
        _load(tmp_path, str(data))


def test_load_rejects_bad_test_fraction(digits_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1"):
        _load(tmp_path, str(digits_dir), 1.0)
    with pytest.raises(ValueError, match=r"test_fraction 0\.001 splits 1797 rows"):
        _load(tmp_path, str(digits_dir), 0.001)


def test_load_names_the_broken_file(tmp_path: Path) -> None:
    from retrain_trigger_dev.sampledata import write_shards

    write_shards(str(tmp_path / "data"), 2, broken=True)
    with pytest.raises(ValueError, match=r"digits-broken\.csv line 4 column 'label': label 11"):
        _load(tmp_path, str(tmp_path / "data"))


# --- train, evaluate, gate --------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("trained")
    train, test = art(Dataset, folder, "train"), art(Dataset, folder, "test")
    out = load_data.load_and_validate(
        str(digits_dir), 0.2, 42, train, test, art(Metrics, folder, "s")
    )
    model = art(Model, folder, "model")
    train_step.train_model(
        train,
        "svc",
        10.0,
        0.0,
        1000,
        42,
        "abc123",
        "img@sha256:1",
        str(digits_dir),
        out.data_sources,
        model,
    )
    metrics = art(Metrics, folder, "metrics")
    confusion = art(ClassificationMetrics, folder, "confusion")
    evaluation = evaluate.evaluate_model(
        test, model, str(folder / "no-registry"), metrics, confusion
    )
    return {
        "folder": folder,
        "test": test,
        "train": train,
        "model": model,
        "metrics": metrics,
        "confusion": confusion,
        "evaluation": evaluation,
    }


def test_train_writes_model_and_metadata(trained: dict) -> None:
    model = trained["model"]
    estimator = joblib.load(Path(model.path) / "model.joblib")
    assert hasattr(estimator, "predict")
    on_disk = json.loads((Path(model.path) / "metadata.json").read_text())
    for meta in (on_disk, model.metadata):
        assert meta["framework"] == "scikit-learn"
        assert meta["framework_version"] == sklearn.__version__
        assert meta["commit_sha"] == "abc123"
        assert meta["image_uri"] == "img@sha256:1"
        assert meta["hyperparameters"] == {
            "model_type": "svc",
            "c": 10.0,
            "gamma": 0.0,
            "max_iter": 1000,
            "seed": 42,
        }
        assert len(meta["data_sources"]) == 4
        assert meta["features"] == 64


def test_train_logistic_regression_and_unknown_type(trained: dict, tmp_path: Path) -> None:
    model = art(Model, tmp_path, "model")
    train_step.train_model(
        trained["train"], "logistic_regression", 1.0, 0.0, 200, 0, "", "", "d", "", model
    )
    estimator = joblib.load(Path(model.path) / "model.joblib")
    x, y, _ = _split.load_split(trained["test"].path)
    assert np.mean(estimator.predict(x) == y) > 0.9
    with pytest.raises(ValueError, match="unknown model_type 'forest'"):
        train_step.train_model(trained["train"], "forest", 1.0, 0.0, 1, 0, "", "", "d", "", model)


def test_evaluate_metrics_and_confusion(trained: dict) -> None:
    evaluation = trained["evaluation"]
    assert evaluation.accuracy >= 0.97
    assert (evaluation.champion_version, evaluation.champion_status) == ("", "none")
    assert evaluation.champion_accuracy == -1.0
    metrics = trained["metrics"].metadata
    assert metrics["accuracy"] == evaluation.accuracy
    assert all(f"precision_{k}" in metrics and f"recall_{k}" in metrics for k in range(10))
    matrix = trained["confusion"].metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == [str(k) for k in range(10)]
    rows = [row["row"] for row in matrix["rows"]]
    assert sum(map(sum, rows)) == 360
    assert sum(rows[k][k] for k in range(10)) / 360 == pytest.approx(evaluation.accuracy)


def gate(trained: dict, registry: Path, min_accuracy: float = 0.9, accuracy=None, evaluation=None):
    evaluation = evaluation or trained["evaluation"]
    decision = art(Metrics, registry.parent, f"decision-{registry.name}")
    out = register.gate_and_register(
        trained["model"],
        trained["test"],
        str(registry),
        min_accuracy,
        evaluation.accuracy if accuracy is None else accuracy,
        evaluation.champion_version,
        evaluation.champion_accuracy,
        evaluation.champion_status,
        "",
        "mnist-data-test-0123456789abcdef",
        decision,
    )
    return out, decision


def evaluate_against(trained: dict, registry: Path):
    folder = registry.parent
    return evaluate.evaluate_model(
        trained["test"],
        trained["model"],
        str(registry),
        art(Metrics, folder, "m"),
        art(ClassificationMetrics, folder, "c"),
    )


def champion(registry: Path) -> dict:
    return json.loads((registry / "champion.json").read_text())


def champion_reports(out: str) -> list[dict]:
    """The champion reports a step logged (with no outcome_topic they are logged, not sent)."""
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line["report"] for line in lines if "champion report" in line.get("message", "")]


def test_gate_registers_first_model(
    trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], schema_validator
) -> None:
    registry = tmp_path / "registry"
    out, decision = gate(trained, registry)
    (report,) = champion_reports(capsys.readouterr().out)
    schema_validator("champion").validate(report)
    assert report["version"] == out.version
    assert report["job_id"] == "mnist-data-test-0123456789abcdef"
    assert report["model_uri"] == str(registry / out.version) + "/"
    assert report["metric"] == {"name": "accuracy", "value": trained["evaluation"].accuracy}
    assert report["previous"] is None
    assert report["commit_sha"] == "abc123"
    assert report["image_uri"] == "img@sha256:1"
    assert out.registered is True
    assert VERSION.match(out.version)
    assert out.reason.startswith(f"registered {out.version} as champion")
    version_dir = registry / out.version
    assert (version_dir / "model.joblib").read_bytes() == (
        Path(trained["model"].path) / "model.joblib"
    ).read_bytes()
    meta = json.loads((version_dir / "metadata.json").read_text())
    assert meta["version"] == out.version
    assert meta["accuracy"] == trained["evaluation"].accuracy
    assert meta["commit_sha"] == "abc123"
    pointer = champion(registry)
    assert pointer["version"] == out.version
    assert pointer["model_uri"] == str(version_dir / "model.joblib")
    assert pointer["previous_version"] == ""
    assert decision.metadata["registered"] == 1
    assert decision.metadata["reason"] == out.reason

    # Evaluation now finds and scores the champion on the same split.
    evaluation = evaluate_against(trained, registry)
    assert evaluation.champion_version == out.version
    assert evaluation.champion_status == "scored"
    assert evaluation.champion_accuracy == evaluation.accuracy

    # A model that is not better does not replace it, and that is not an error.
    worse, decision = gate(trained, registry, min_accuracy=0.5, accuracy=0.8, evaluation=evaluation)
    assert worse.registered is False
    assert worse.version == ""
    assert "is below champion" in worse.reason
    assert decision.metadata["registered"] == 0
    assert champion(registry) == pointer
    assert sorted(p.name for p in registry.iterdir() if p.is_dir()) == [out.version]
    assert champion_reports(capsys.readouterr().out) == []  # the champion did not move

    # An equally good one does ("not worse than the champion").
    equal, _ = gate(trained, registry, evaluation=evaluation)
    assert equal.registered is True
    assert champion(registry)["previous_version"] == out.version
    (report,) = champion_reports(capsys.readouterr().out)
    schema_validator("champion").validate(report)
    assert report["previous"] == {
        "version": out.version,
        "metric": {"name": "accuracy", "value": evaluation.champion_accuracy},
    }


def test_gate_below_min_accuracy_writes_nothing(trained: dict, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    out, decision = gate(trained, registry, min_accuracy=0.999)
    assert out.registered is False
    assert "below min_accuracy 0.9990" in out.reason
    assert decision.metadata["registered"] == 0
    assert not registry.exists()


def test_gate_leaves_an_unscorable_champion_alone(trained: dict, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "champion.json").write_text("{broken")
    evaluation = evaluate_against(trained, registry)
    assert evaluation.champion_status.startswith("unscorable: ")
    out, _ = gate(trained, registry, evaluation=evaluation)
    assert out.registered is False
    assert "not a valid champion pointer" in out.reason
    assert (registry / "champion.json").read_text() == "{broken"

    (registry / "champion.json").write_text('{"version": "v1"}')
    out, _ = gate(trained, registry, evaluation=evaluate_against(trained, registry))
    assert out.registered is False
    assert "champion v1: model file missing" in out.reason


def _install_champion(registry: Path, version: str, estimator_path: Path) -> None:
    (registry / version).mkdir(parents=True, exist_ok=True)
    (registry / version / "model.joblib").write_bytes(estimator_path.read_bytes())
    (registry / "champion.json").write_text(json.dumps({"version": version}))


def test_gate_rereads_a_champion_that_moved_and_keeps_a_better_one(
    trained: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = tmp_path / "registry"
    real_swap = register.swap_champion
    calls = []

    def racing_swap(registry_uri, data, token):
        calls.append(token)
        if len(calls) == 1:  # another run registers the same (better than claimed) model first
            _install_champion(registry, "other", Path(trained["model"].path) / "model.joblib")
        return real_swap(registry_uri, data, token)

    monkeypatch.setattr(register, "swap_champion", racing_swap)
    out, decision = gate(trained, registry, accuracy=0.95)
    assert len(calls) == 1
    assert out.registered is False
    assert "below champion other's" in out.reason
    assert "stays in the registry but is not champion" in out.reason
    assert champion(registry) == {"version": "other"}
    assert decision.metadata["attempts"] == 2
    assert champion_reports(capsys.readouterr().out) == []  # another run moved it, not this one


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gate_rereads_a_champion_that_moved_and_beats_a_worse_one(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import LogisticRegression

    registry = tmp_path / "registry"
    x, y, _ = _split.load_split(trained["train"].path)
    weak_path = tmp_path / "weak.joblib"
    joblib.dump(LogisticRegression(max_iter=1).fit(x[:40], y[:40]), weak_path)
    real_swap = register.swap_champion
    calls = []

    def racing_swap(registry_uri, data, token):
        calls.append(token)
        if len(calls) == 1:
            _install_champion(registry, "weak", weak_path)
        return real_swap(registry_uri, data, token)

    monkeypatch.setattr(register, "swap_champion", racing_swap)
    out, decision = gate(trained, registry)
    assert len(calls) == 2
    assert out.registered is True
    pointer = champion(registry)
    assert pointer["version"] == out.version
    assert pointer["previous_version"] == "weak"
    assert pointer["previous_accuracy_on_same_split"] < trained["evaluation"].accuracy
    assert decision.metadata["attempts"] == 2


def test_local_swap_is_compare_and_swap(tmp_path: Path) -> None:
    registry = str(tmp_path / "registry")
    assert storage.read_champion(registry) == (None, None)
    assert storage.swap_champion(registry, b'{"version": "a"}', None) is True
    assert (
        storage.swap_champion(registry, b'{"version": "b"}', None) is False
    )  # not absent any more
    pointer, token = storage.read_champion(registry)
    assert pointer == {"version": "a"}
    assert storage.swap_champion(registry, b'{"version": "c"}', b"stale") is False
    assert storage.swap_champion(registry, b'{"version": "c"}', token) is True
    assert storage.read_champion(registry)[0] == {"version": "c"}
    assert not [p for p in (tmp_path / "registry").iterdir() if p.name.startswith(".tmp-")]
