"""The function zips: reproducible, complete, pinned, and importable on their own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from retrain_trigger_dev import packaging
from retrain_trigger_dev.packaging import PackagingError, build_function_zips

REPO = Path(__file__).resolve().parents[2]
MINIMAL_PIPELINE = REPO / "tests" / "fakes" / "minimal_pipeline.yaml"


def _copy_tree(target: Path) -> Path:
    """The parts of the repository that packaging reads, copied so a test may change them."""
    for part in ("src/retrain_trigger", "function_http", "function_gcs"):
        shutil.copytree(
            REPO / part, target / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return target


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_function_zips(REPO, tmp_path_factory.mktemp("dist"))


def _names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def test_two_builds_give_the_same_names_and_bytes(tmp_path: Path, built: dict[str, Path]) -> None:
    again = build_function_zips(REPO, tmp_path / "again")
    assert {k: p.name for k, p in again.items()} == {k: p.name for k, p in built.items()}
    for name, path in built.items():
        assert again[name].read_bytes() == path.read_bytes(), name


def test_names_carry_a_content_hash(built: dict[str, Path]) -> None:
    assert set(built) == {"function_http", "function_gcs"}
    for folder, path in built.items():
        assert path.name.startswith(f"{folder}-") and path.suffix == ".zip"
        digest = path.stem.removeprefix(f"{folder}-")
        assert len(digest) == 12 and all(c in "0123456789abcdef" for c in digest)
        entries = []
        with zipfile.ZipFile(path) as archive:
            entries = [packaging.Entry(i.filename, archive.read(i)) for i in archive.infolist()]
        assert packaging.content_hash(entries) == digest


@pytest.mark.parametrize("folder", ["function_http", "function_gcs"])
def test_zip_holds_the_function_and_the_core(built: dict[str, Path], folder: str) -> None:
    names = _names(built[folder])
    assert names == sorted(names)
    for required in ("main.py", "requirements.txt", "retrain_trigger/__init__.py"):
        assert required in names
    assert "retrain_trigger/py.typed" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", "/"))]
    main = (REPO / folder / "main.py").read_bytes()
    with zipfile.ZipFile(built[folder]) as archive:
        assert archive.read("main.py") == main
        assert archive.read("requirements.txt") == (REPO / folder / "requirements.txt").read_bytes()
        for info in archive.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
            assert info.compress_type == zipfile.ZIP_DEFLATED


@pytest.mark.parametrize("folder", ["function_http", "function_gcs"])
def test_every_serving_module_is_packaged_and_no_local_one(
    built: dict[str, Path], folder: str
) -> None:
    """The folder is the boundary: the core whole, nothing of the development wing."""
    names = set(_names(built[folder]))
    source = REPO / "src" / "retrain_trigger"
    for path in source.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        assert f"retrain_trigger/{path.relative_to(source).as_posix()}" in names, path
    wing = REPO / "src" / "retrain_trigger_dev"
    assert list(wing.rglob("*.py"))
    assert not [n for n in names if n.startswith("retrain_trigger_dev/")]
    for local in ("cli.py", "packaging.py", "ledger.py", "sampledata.py", "backends/local.py"):
        assert f"retrain_trigger/{local}" not in names
    assert not [n for n in names if n.startswith("retrain_trigger/localstack/")]
    assert "retrain_trigger/backends/__init__.py" in names
    if (source / "backends" / "vertex.py").exists():
        assert "retrain_trigger/backends/vertex.py" in names


@pytest.mark.parametrize("folder", ["function_http", "function_gcs"])
def test_requirements_are_all_pinned(built: dict[str, Path], folder: str) -> None:
    with zipfile.ZipFile(built[folder]) as archive:
        text = archive.read("requirements.txt").decode()
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
    requirements = [ln for ln in lines if ln]
    assert requirements, "no requirements"
    for line in requirements:
        assert "==" in line and not line.startswith("-"), line
    names = {ln.split("==")[0].lower() for ln in requirements}
    assert {"functions-framework", "google-cloud-aiplatform", "pyyaml"} <= names
    assert packaging.unpinned_requirements(text) == []


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("flask==3.1.3\npyyaml>=6\n", ["pyyaml>=6"]),
        ("flask\n", ["flask"]),
        ("-r other.txt\n", ["-r other.txt"]),
        ("flask==3.1.3  # web\n# comment\n\nextra[x,y]==1.0 ; python_version >= '3.11'\n", []),
        ("flask==3.1.3 \\\n    --hash=sha256:abc\n", []),
    ],
)
def test_unpinned_requirements(text: str, bad: list[str]) -> None:
    assert packaging.unpinned_requirements(text) == bad


def test_a_changed_file_changes_the_name(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path / "repo")
    first = build_function_zips(root, tmp_path / "dist")
    with open(root / "src" / "retrain_trigger" / "errors.py", "a", encoding="utf-8") as fh:
        fh.write("\n# changed\n")
    second = build_function_zips(root, tmp_path / "dist")
    for name in first:
        assert first[name].name != second[name].name
        assert not first[name].exists(), "the older zip of the same function is removed"
        assert second[name].exists()


def test_unpinned_requirements_are_refused(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path / "repo")
    (root / "function_gcs" / "requirements.txt").write_text("flask==3.1.3\npyyaml\n")
    with pytest.raises(PackagingError, match=r"must be pinned with ==; not pinned: pyyaml"):
        build_function_zips(root, tmp_path / "dist")


def test_an_eager_import_of_a_local_only_module_is_refused(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path / "repo")
    (root / "src" / "retrain_trigger" / "uses_ledger.py").write_text(
        "from __future__ import annotations\n\nfrom retrain_trigger_dev.local.ledger import X\n"
    )
    with pytest.raises(
        PackagingError,
        match=r"uses_ledger.py:3 imports retrain_trigger_dev.local.ledger.X, which is not",
    ):
        build_function_zips(root, tmp_path / "dist")


def test_lazy_and_type_checking_imports_of_local_modules_are_refused_too(tmp_path: Path) -> None:
    """A lazy import of the wing fails only when its code runs, in production: refused too."""
    root = _copy_tree(tmp_path / "repo")
    (root / "src" / "retrain_trigger" / "lazy.py").write_text(
        "from typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:\n    from retrain_trigger_dev import local\n\n\n"
        "def f():\n    from retrain_trigger_dev.local.ledger import X\n\n    return X\n"
    )
    with pytest.raises(PackagingError) as refused:
        build_function_zips(root, tmp_path / "dist")
    assert "lazy.py:4 imports retrain_trigger_dev.local" in str(refused.value)
    assert "lazy.py:8 imports retrain_trigger_dev.local.ledger.X" in str(refused.value)


def _write_config(folder: Path, template: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "retrain.yaml"
    config.write_text(
        "project: test-project\nregion: us-central1\nroutes:\n"
        f"  - name: mnist\n    template: {template}\n"
        "    pipeline_root: gs://b/root\n    parameters:\n      data_uri: '{data_uri}'\n"
        "    data:\n      bucket: ct-bucket\n      include: ['data/**']\n"
        "  - name: remote\n    template: gs://t/templates/x.yaml\n"
        "    pipeline_root: gs://b/root\n    code: true\n"
    )
    return config


def test_the_configuration_and_its_relative_templates_are_packaged(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "conf", "specs/pipeline.yaml")
    (tmp_path / "conf" / "specs").mkdir()
    shutil.copy(MINIMAL_PIPELINE, tmp_path / "conf" / "specs" / "pipeline.yaml")
    built = build_function_zips(REPO, tmp_path / "dist", config)
    plain = build_function_zips(REPO, tmp_path / "plain")
    for folder, path in built.items():
        names = _names(path)
        assert "retrain.yaml" in names and "specs/pipeline.yaml" in names
        assert path.name != plain[folder].name
        with zipfile.ZipFile(path) as archive:
            assert archive.read("retrain.yaml") == config.read_bytes()
            assert archive.read("specs/pipeline.yaml") == MINIMAL_PIPELINE.read_bytes()


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("../pipeline.yaml", r"lies outside the configuration's folder"),
        ("missing.yaml", r"template missing.yaml not found"),
    ],
)
def test_templates_that_cannot_be_packaged_are_refused(
    tmp_path: Path, template: str, message: str
) -> None:
    config = _write_config(tmp_path / "conf", template)
    with pytest.raises(PackagingError, match=message):
        build_function_zips(REPO, tmp_path / "dist", config)


def test_an_invalid_configuration_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_text("routes: []\n")
    with pytest.raises(PackagingError, match=r"configuration is not valid: .*routes"):
        build_function_zips(REPO, tmp_path / "dist", config)


def test_a_configuration_holding_the_hmac_secret_is_refused(tmp_path: Path) -> None:
    secret = "do-not-ship-this-secret-1234"
    config = _write_config(tmp_path / "conf", "gs://t/templates/mnist.yaml")
    config.write_text(config.read_text() + f"auth:\n  mode: hmac\n  hmac_secret: {secret}\n")
    with pytest.raises(
        PackagingError,
        match=r"retrain\.yaml: auth\.hmac_secret holds the HMAC secret, which would be packed in "
        r"clear text into both function zips; remove it .* RETRAIN_HMAC_SECRET from Secret Manager",
    ) as refused:
        build_function_zips(REPO, tmp_path / "dist", config)
    assert secret not in str(refused.value)
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())
    argv = ["--repo-root", str(REPO), "--dist", str(tmp_path / "dist"), "--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-m", "retrain_trigger_dev.packaging", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and "auth.hmac_secret" in result.stderr
    assert secret not in result.stderr + result.stdout
    # The same file with the secret left to the environment packs, and carries no secret.
    config.write_text(config.read_text().replace(f"  hmac_secret: {secret}\n", ""))
    for path in build_function_zips(REPO, tmp_path / "dist", config).values():
        with zipfile.ZipFile(path) as archive:
            assert all(secret.encode() not in archive.read(name) for name in archive.namelist())


def test_command_line(tmp_path: Path) -> None:
    tfvars = tmp_path / "functions.auto.tfvars.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrain_trigger_dev.packaging",
            "--repo-root",
            str(REPO),
            "--dist",
            str(tmp_path / "dist"),
            "--json",
            "--tfvars",
            str(tfvars),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "RETRAIN_CONFIG"},
    )
    assert result.returncode == 0, result.stderr
    assert "no configuration included" in result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == {"function_http", "function_gcs"}
    variables = json.loads(tfvars.read_text())
    assert variables == {
        "function_http_zip": str(Path(printed["function_http"]).resolve()),
        "function_gcs_zip": str(Path(printed["function_gcs"]).resolve()),
    }
    assert packaging.main(["--repo-root", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize(
    ("folder", "target"), [("function_http", "retrain_http"), ("function_gcs", "retrain_event")]
)
def test_the_unpacked_source_imports_on_its_own(
    built: dict[str, Path], tmp_path: Path, folder: str, target: str
) -> None:
    """main.py and the package come from the zip alone (third-party modules from this venv)."""
    with zipfile.ZipFile(built[folder]) as archive:
        archive.extractall(tmp_path)
    script = (
        "import sys, main, retrain_trigger, retrain_trigger.entrypoints\n"
        f"assert callable(main.{target})\n"
        "print(retrain_trigger.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RETRAIN_CONFIG")}
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, '.'); exec({script!r})"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve().is_relative_to(tmp_path.resolve())


@pytest.mark.parametrize(
    "argv",
    [
        ["package", "--config", "{config}"],  # failed before: the global --config took it
        ["package", "--config={config}"],
        ["--config", "{config}", "package"],
    ],
)
def test_retrain_trigger_package_takes_the_configuration_every_way(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from retrain_trigger_dev import cli

    config = _write_config(tmp_path / "config", str(MINIMAL_PIPELINE.relative_to(REPO)))
    shutil.copy(MINIMAL_PIPELINE, config.parent / MINIMAL_PIPELINE.name)
    config.write_text(
        config.read_text().replace(str(MINIMAL_PIPELINE.relative_to(REPO)), MINIMAL_PIPELINE.name)
    )
    args = [a.format(config=config) for a in argv]
    dist = tmp_path / "dist"
    assert cli.main([*args, "--repo-root", str(REPO), "--dist", str(dist), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert "retrain.yaml" in _names(Path(built["function_gcs"]))
