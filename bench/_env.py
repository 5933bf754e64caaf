"""The shared set-up of one benchmark run: the fakes, the configurations and the events.

One fake-gcs-server and one fake Vertex server serve every figure; retrain-trigger and the
baseline read the same compiled template from the same bucket and create jobs at the same fake.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

from bench._load import Encoded, storage_event
from bench._procs import (
    REPO,
    FakeGcsProcess,
    FakeVertexProcess,
    FunctionProcess,
)

PROJECT = "bench-project"
REGION = "us-central1"
TEMPLATE_BUCKET = "bench-templates"
TEMPLATE_OBJECT = "mnist/mnist_training.yaml"
TEMPLATE_URI = f"gs://{TEMPLATE_BUCKET}/{TEMPLATE_OBJECT}"
DATA_BUCKET = "bench-data"
SERVICE_ACCOUNT = f"trainer@{PROJECT}.iam.gserviceaccount.com"
TEMPLATE_FILE = REPO / "pipeline_specs" / "mnist_training.yaml"
# fake-gcs-server reports this project number for every bucket.
FAKE_GCS_PROJECT_NUMBER = "0"

NOOP_SOURCE = '''\
"""The floor: functions-framework with a function that does nothing."""

import functions_framework


@functions_framework.cloud_event
def retrain_event(cloud_event):
    return None
'''


def _config(template: str, endpoint: str, deadline: int = 30) -> str:
    return textwrap.dedent(
        f"""\
        project: {PROJECT}
        region: {REGION}
        backend: vertex
        vertex_endpoint: {endpoint}
        auth:
          mode: none
        limits:
          submit_deadline_seconds: {deadline}
        routes:
          - name: mnist
            template: {template}
            pipeline_root: gs://{DATA_BUCKET}/pipeline-root
            service_account: {SERVICE_ACCOUNT}
            parameters:
              data_uri: "{{data_uri}}"
              model_registry_uri: gs://{DATA_BUCKET}/models
              commit_sha: "{{commit_sha}}"
              image_uri: "{{image_uri}}"
            data:
              bucket: {DATA_BUCKET}
              include: ["data/**"]
            code: true
            model: true
        """
    )


class Bench:
    """Starts the fakes on entry and stops everything it started on exit."""

    def __init__(self, *, cpu: int | None, aux_cpus: set[int] | None, keep: bool = False) -> None:
        self.cpu = cpu
        self.aux_cpus = aux_cpus
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix="retrain-bench-"))
        self.log_dir = self.root / "logs"
        self.log_dir.mkdir()
        self.gcs = FakeGcsProcess(self.log_dir)
        self.vertex = FakeVertexProcess(self.log_dir)
        self._generation = itertools.count(int(time.time() * 1_000_000))
        self._serial = itertools.count(1)
        self.functions: list[FunctionProcess] = []
        self._affinity: set[int] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Bench:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.aux_cpus and hasattr(os, "sched_setaffinity"):
            # The driver and the fakes (started below, inheriting it) stay off the function's core.
            self._affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self.aux_cpus)
        self.gcs.start()
        self.vertex.start()
        for bucket in (TEMPLATE_BUCKET, DATA_BUCKET):
            self.gcs.create_bucket(bucket)
        self.gcs.upload(TEMPLATE_BUCKET, TEMPLATE_OBJECT, TEMPLATE_FILE.read_bytes())

        self.config_gs = self.root / "retrain-gs.yaml"
        self.config_gs.write_text(_config(TEMPLATE_URI, self.vertex.endpoint))
        # "Bundled": the compiled template shipped in the function's source, next to its config.
        bundled = self.root / "bundled"
        bundled.mkdir()
        shutil.copy(TEMPLATE_FILE, bundled / "mnist_training.yaml")
        self.config_bundled = bundled / "retrain.yaml"
        self.config_bundled.write_text(_config("mnist_training.yaml", self.vertex.endpoint))
        noop = self.root / "noop"
        noop.mkdir()
        self.noop_source = noop / "main.py"
        self.noop_source.write_text(NOOP_SOURCE)

    def stop(self) -> None:
        for function in self.functions:
            function.stop()
        self.functions.clear()
        self.vertex.stop()
        self.gcs.stop()
        if self._affinity:
            os.sched_setaffinity(0, self._affinity)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- functions ---------------------------------------------------------------------------

    def _function(
        self, name: str, source: Path, target: str, env: dict[str, str], **kw: object
    ) -> FunctionProcess:
        function = FunctionProcess(
            name,
            source,
            target,
            env=env,
            log_dir=self.log_dir,
            cpu=self.cpu,
            **kw,  # type: ignore[arg-type]
        )
        self.functions.append(function)
        return function

    def ours(self, *, bundled: bool = False, http: bool = False) -> FunctionProcess:
        env = {
            "RETRAIN_CONFIG": str(self.config_bundled if bundled else self.config_gs),
            "STORAGE_EMULATOR_HOST": self.gcs.url,
        }
        if http:
            return self._function(
                "ours-http",
                REPO / "function_http" / "main.py",
                "retrain_http",
                env,
                signature="http",
            )
        name = "ours-bundled" if bundled else "ours"
        return self._function(name, REPO / "function_gcs" / "main.py", "retrain_event", env)

    def baseline(self) -> FunctionProcess:
        env = {
            "STORAGE_EMULATOR_HOST": self.gcs.url,
            "BASELINE_PROJECT": PROJECT,
            "BASELINE_REGION": REGION,
            "BASELINE_TEMPLATE": TEMPLATE_URI,
            "BASELINE_PIPELINE_ROOT": f"gs://{DATA_BUCKET}/pipeline-root",
            "BASELINE_STAGING_BUCKET": f"gs://{DATA_BUCKET}/staging",
            "BASELINE_REGISTRY": f"gs://{DATA_BUCKET}/models",
            "BASELINE_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
            "BASELINE_VERTEX_ENDPOINT": self.vertex.endpoint,
            "BASELINE_PROJECT_NUMBER": FAKE_GCS_PROJECT_NUMBER,
        }
        return self._function(
            "baseline", REPO / "bench" / "baseline" / "main.py", "retrain_event", env
        )

    def noop(self) -> FunctionProcess:
        return self._function("floor", self.noop_source, "retrain_event", {})

    def forget(self, function: FunctionProcess) -> None:
        function.stop()
        if function in self.functions:
            self.functions.remove(function)

    # -- events --------------------------------------------------------------------------------

    def new_object(self) -> Encoded:
        """A data object never seen before: submitted by both implementations."""
        serial = next(self._serial)
        return storage_event(
            DATA_BUCKET, f"data/2026-11-27/part-{serial:06d}.csv", next(self._generation)
        )

    def placeholder(self) -> Encoded:
        """A folder placeholder (``name/``, zero bytes): skipped by both implementations."""
        serial = next(self._serial)
        return storage_event(
            DATA_BUCKET, f"data/2026-11-27/folder-{serial:06d}/", next(self._generation), size=0
        )

    def code_change(self, *, dry_run: bool = False) -> Encoded:
        """An HTTP code-change trigger body (the HTTP entry point; auth none locally)."""
        import json

        serial = next(self._serial)
        body: dict[str, object] = {
            "kind": "code",
            "commit_sha": f"{serial:040x}",
            "image_uri": "us-docker.pkg.dev/bench-project/train/mnist@sha256:" + "ab" * 32,
        }
        if dry_run:
            body["dry_run"] = True
        return Encoded({"Content-Type": "application/json"}, json.dumps(body).encode())
