"""The deployed topology, end to end: callers -> Cloud Run's front end (tests/fakes/cloudrun.py)
-> each function served by functions-framework -> the fake Vertex API and fake-gcs-server.

- Cloud Build's trigger step is run as written in deploy/cloudbuild.yaml (bash, curl, python3),
  with ``gcloud`` answering ``auth print-identity-token`` and curl reaching the function's URL
  through the front end (``connect-to`` in a ``.curlrc``).
- Cloud Scheduler's ``POST /flush`` is the request deploy/terraform/windows.tf configures (URI,
  method, headers, body, OIDC token), with the headers Cloud Scheduler adds
  (https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs#HttpTarget).
- A GCS notification reaches the event function as the push subscription delivers it, through a
  front end of its own, and opens a batch window that the /flush closes.
- Everyone else is refused, by the front end or by the function.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.conftest import MNIST_TEMPLATE, REPO
from tests.fakes.cloudrun import FakeCloudRun
from tests.fakes.idtokens import CertsServer, Key, forge, mint, strip
from tests.fakes.vertex import FakeVertex
from tests.integration.conftest import FirestoreEmulator, firestore_emulator  # noqa: F401

pytestmark = pytest.mark.slow

PROJECT, PROJECT_NUMBER, REGION = "e2e-project", "123456789012", "europe-west1"
# The deterministic URLs Terraform derives (local.http_audience) for the default names.
HTTP_URL = f"https://retrain-http-{PROJECT_NUMBER}.{REGION}.run.app"
EVENT_URL = f"https://retrain-event-{PROJECT_NUMBER}.{REGION}.run.app"
BUILD_SA = f"retrain-build@{PROJECT}.iam.gserviceaccount.com"
SCHEDULER_SA = f"retrain-scheduler@{PROJECT}.iam.gserviceaccount.com"
PUSH_SA = f"retrain-push@{PROJECT}.iam.gserviceaccount.com"
OUTSIDER_SA = f"someone@{PROJECT}.iam.gserviceaccount.com"
OPERATOR = "ops@example.com"  # extra_http_invokers = ["user:ops@example.com"]: IAM only
TEMPLATES, ARTIFACTS, DATA = "e2e-templates", "e2e-artifacts", "e2e-data"
OUTCOME_TOPIC = f"projects/{PROJECT}/topics/retrain-run-outcomes"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/retrain-images/mnist-training@sha256:" + "a" * 64
TEMPLATE_URI = f"gs://{TEMPLATES}/templates/{COMMIT}/mnist_training.yaml"
SEND_BOTH = (
    "send the same ID token in X-Serverless-Authorization and in Authorization "
    "('Bearer <ID token>' in both): Cloud Run checks the first and passes the second on signed"
)

CONFIG = """\
region: {region}
backend: vertex
routes:
  - name: mnist
    template: {template}
    pipeline_root: gs://{artifacts}/pipeline-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://{artifacts}/models
    code: true
    allowed_templates: ["gs://{templates}/templates/"]
  - name: batch
    template: {template}
    pipeline_root: gs://{artifacts}/pipeline-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://{artifacts}/models
    data:
      bucket: {data}
      include: ["daily/**"]
      mode: window
      quiet_seconds: 1
      max_wait_seconds: 60
"""


# --- the pieces -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _function(target: str, source: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """functions-framework serving ``target``; a port taken meanwhile is retried with another."""
    for _ in range(5):
        port = _free_port()
        with open(log, "w") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "functions_framework",
                    "--target",
                    target,
                    "--source",
                    str(source),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        ready = False
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                ready = True
                break
            time.sleep(0.1)
        if ready:
            break
        process.kill()
        process.wait(timeout=10)
        if "Address already in use" not in log.read_text(errors="replace"):
            pytest.fail(f"{target} did not start:\n{log.read_text(errors='replace')[-3000:]}")
    else:
        pytest.fail(f"{target}: no free port after 5 tries")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _terraform(name: str) -> dict[str, Any]:
    with open(REPO / "deploy" / "terraform" / name, encoding="utf-8") as fh:
        return hcl2.load(fh)


def _scheduler_job() -> dict[str, Any]:
    """The flush job's http_target, as windows.tf writes it (quotes removed)."""
    for block in _terraform("windows.tf")["resource"]:
        job = block.get('"google_cloud_scheduler_job"', {}).get('"flush"')
        if job:
            target = job["http_target"][0]
            return {
                "method": target["http_method"].strip('"'),
                "uri": target["uri"].strip('"'),
                "headers": {k.strip('"'): v.strip('"') for k, v in target["headers"].items()},
                "body": target["body"],
                "oidc": {
                    k: v.strip('"')
                    for k, v in target["oidc_token"][0].items()
                    if not k.startswith("__")
                },
                "name": job["name"].strip('"'),
            }
    raise AssertionError("windows.tf has no google_cloud_scheduler_job.flush")


@dataclass
class Stack:
    key: Key
    http: FakeCloudRun
    event: FakeCloudRun
    vertex: FakeVertex
    gcs_url: str
    tmp: Path

    def token(self, email: str, aud: str = HTTP_URL, **claims: Any) -> str:
        return mint(self.key, now=time.time(), aud=aud, email=email, **claims)

    def post(
        self,
        path: str,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        front: FakeCloudRun | None = None,
        url: str = HTTP_URL,
    ) -> tuple[int, dict[str, Any] | str]:
        status, _, raw = (front or self.http).request(
            "POST", url + path, headers=headers, body=body
        )
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    fake_gcs_server: Any,
    firestore_emulator: FirestoreEmulator,  # noqa: F811 (the fixture imported above)
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("cloud-run")
    key = Key("kid-google-1")
    certs = CertsServer()
    certs.certs = {key.kid: key.cert_pem}
    vertex = FakeVertex().start()
    for bucket in (TEMPLATES, ARTIFACTS, DATA):
        fake_gcs_server.create_bucket(bucket)
    _upload(fake_gcs_server.url, TEMPLATE_URI, MNIST_TEMPLATE.read_bytes())
    config = tmp / "retrain.yaml"
    config.write_text(
        CONFIG.format(
            region=REGION,
            template=MNIST_TEMPLATE,
            artifacts=ARTIFACTS,
            templates=TEMPLATES,
            data=DATA,
        )
    )
    # What Terraform's local.function_env and the HTTP function's extras set (functions.tf), with
    # local stand-ins for Google's endpoints; K_SERVICE is what Cloud Run sets. The batch route
    # needs state shared by every instance, so, as Terraform does with enable_windows, the store
    # is Firestore (its emulator; the emulator's default database stands in for the named one).
    common = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "NO_PROXY": "127.0.0.1,localhost",
        "RETRAIN_CONFIG": str(config),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "RETRAIN_REGION": REGION,
        "RETRAIN_BACKEND": "vertex",
        "RETRAIN_STORE": "firestore",
        "RETRAIN_FIRESTORE_DATABASE": "(default)",
        "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
        "RETRAIN_STATE_DIR": str(tmp / "state"),
        "LOG_EXECUTION_ID": "true",
        "RETRAIN_VERTEX_ENDPOINT": vertex.endpoint,
        "STORAGE_EMULATOR_HOST": fake_gcs_server.url,
    }
    http_env = {
        **common,
        "K_SERVICE": "retrain-http",
        "RETRAIN_AUTH": "iam",
        "RETRAIN_AUDIENCE": HTTP_URL,
        "RETRAIN_ALLOWED_INVOKERS": f"{BUILD_SA},{SCHEDULER_SA}",
        "RETRAIN_ID_TOKEN_CERTS_URL": certs.url,
    }
    # functions.tf: RETRAIN_OUTCOME_TOPIC = google_pubsub_topic.outcomes.id (the default name).
    event_env = {**common, "K_SERVICE": "retrain-event", "RETRAIN_OUTCOME_TOPIC": OUTCOME_TOPIC}
    with (
        _function(
            "retrain_http", REPO / "function_http" / "main.py", http_env, tmp / "http.log"
        ) as http_upstream,
        _function(
            "retrain_event", REPO / "function_gcs" / "main.py", event_env, tmp / "event.log"
        ) as event_upstream,
    ):
        # roles/run.invoker as iam.tf grants it: Cloud Build, the scheduler, extra_http_invokers.
        http = FakeCloudRun(
            http_upstream,
            service_urls=[HTTP_URL],
            invokers=[
                f"serviceAccount:{BUILD_SA}",
                f"serviceAccount:{SCHEDULER_SA}",
                f"user:{OPERATOR}",
            ],
            certs=certs.certs,
        ).start()
        event = FakeCloudRun(
            event_upstream,
            service_urls=[EVENT_URL],
            invokers=[f"serviceAccount:{PUSH_SA}"],
            certs=certs.certs,
        ).start()
        try:
            yield Stack(key, http, event, vertex, fake_gcs_server.url, tmp)
        finally:
            http.stop()
            event.stop()
            vertex.stop()
            certs.close()
            firestore_emulator.clear(PROJECT)


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    stack.vertex.reset()
    stack.http.exchanges.clear()
    stack.event.exchanges.clear()
    return stack


def _storage(gcs_url: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_url}
    )


def _upload(gcs_url: str, uri: str, data: bytes) -> None:
    bucket, name = uri[len("gs://") :].split("/", 1)
    _storage(gcs_url).bucket(bucket).blob(name).upload_from_string(data)


def _download(gcs_url: str, uri: str) -> bytes:
    bucket, name = uri[len("gs://") :].split("/", 1)
    return bytes(_storage(gcs_url).bucket(bucket).blob(name).download_as_bytes())


# --- Cloud Build's trigger step ---------------------------------------------------------------------


def _trigger_step() -> tuple[str, list[str]]:
    with open(REPO / "deploy" / "cloudbuild.yaml", encoding="utf-8") as fh:
        build = yaml.safe_load(fh)
    step = next(s for s in build["steps"] if s["id"] == "trigger-run")
    assert step["entrypoint"] == "bash" and step["args"][:3] == ["-euo", "pipefail", "-c"]
    return step["args"][3], step.get("env", [])


def _substitute(text: str, values: dict[str, str]) -> str:
    """What Cloud Build does to a step before running it: $NAME / ${NAME}, then $$ -> $."""
    pattern = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
    return pattern.sub(lambda m: values[m.group(1) or m.group(2)], text).replace("$$", "$")


def _run_trigger_step(stack: Stack, token: str) -> subprocess.CompletedProcess[str]:
    script, env_lines = _trigger_step()
    values = {
        "_HTTP_AUDIENCE": HTTP_URL,  # Terraform's cloudbuild_substitutions
        "PROJECT_ID": PROJECT,
        "COMMIT_SHA": COMMIT,
        "BUILD_ID": "7f3a2c1e-0000-4000-8000-000000000001",
        "BRANCH_NAME": "main",
    }
    home = stack.tmp / "build-home"
    workspace = home / "workspace"
    bin_dir = home / "bin"
    for folder in (workspace, bin_dir):
        folder.mkdir(parents=True, exist_ok=True)
    (workspace / "image_uri.txt").write_text(IMAGE + "\n")
    (workspace / "template_uri.txt").write_text(TEMPLATE_URI + "\n")
    # gcloud, as far as this step uses it: the build account's ID token for one audience.
    (home / "token").write_text(token)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(
        "#!/bin/sh\n"
        f'if [ "$*" = "auth print-identity-token --audiences={HTTP_URL}" ]; then\n'
        f'  cat "{home / "token"}"; exit 0\n'
        "fi\n"
        'echo "unexpected gcloud call: $*" >&2; exit 2\n'
    )
    gcloud.chmod(0o755)
    # curl goes to the function's own URL; the connection lands on the front end.
    host = HTTP_URL.removeprefix("https://")
    (home / ".curlrc").write_text(
        f'connect-to = "{host}:443:127.0.0.1:{stack.http.port}"\ncacert = "{stack.http.ca_file}"\n'
    )
    text = _substitute(script, values).replace("/workspace/", f"{workspace}/")
    env = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "CURL_HOME": str(home),
        "LANG": "C.UTF-8",
    }
    for line in env_lines:
        name, value = _substitute(line, values).split("=", 1)
        env[name] = value
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="the trigger step runs curl")
def test_cloud_builds_trigger_step_starts_one_run(fresh: Stack) -> None:
    token = fresh.token(BUILD_SA)
    result = _run_trigger_step(fresh, token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HTTP 200" in result.stdout
    assert "retraining submitted: projects/" in result.stdout
    [job] = fresh.vertex.jobs.values()
    assert job["labels"]["retrain-kind"] == "code"
    # Cloud Run checked X-Serverless-Authorization; the function verified Authorization, signed.
    [exchange] = fresh.http.exchanges
    assert exchange.checked_header == "X-Serverless-Authorization"
    assert exchange.forwarded["x-serverless-authorization"] == f"Bearer {strip(token)}"
    assert exchange.forwarded["authorization"] == f"Bearer {token}"
    assert exchange.forwarded["x-forwarded-proto"] == "https"

    again = _run_trigger_step(fresh, fresh.token(BUILD_SA))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "retraining duplicate: projects/" in again.stdout
    assert len(fresh.vertex.jobs) == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="the trigger step runs curl")
def test_the_previous_trigger_step_fails_behind_cloud_run(fresh: Stack) -> None:
    """Authorization alone, as the step sent it before: Cloud Run strips it, the build fails."""
    token = fresh.token(BUILD_SA)
    status, answer = fresh.post(
        "/",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        json.dumps({"kind": "code", "commit_sha": COMMIT, "image_uri": IMAGE}).encode(),
    )
    assert status == 401, answer
    assert isinstance(answer, dict) and SEND_BOTH in answer["reason"]
    assert fresh.vertex.jobs == {}


# --- Cloud Scheduler's /flush, after a GCS notification opened a window ------------------------------


def _push_body(name: str, generation: int) -> bytes:
    """What the push subscription posts for an OBJECT_FINALIZE notification (JSON_API_V1)."""
    obj = {
        "kind": "storage#object",
        "id": f"{DATA}/{name}/{generation}",
        "name": name,
        "bucket": DATA,
        "generation": str(generation),
        "metageneration": "1",
        "contentType": "text/csv",
        "size": "2048",
        "timeCreated": "2026-11-27T10:00:00.000Z",
        "updated": "2026-11-27T10:00:00.000Z",
    }
    message = {
        "attributes": {
            "bucketId": DATA,
            "objectId": name,
            "objectGeneration": str(generation),
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
            "notificationConfig": f"projects/_/buckets/{DATA}/notificationConfigs/1",
        },
        "data": base64.b64encode(json.dumps(obj).encode()).decode(),
        "messageId": str(generation),
        "publishTime": "2026-11-27T10:00:01.000Z",
    }
    body = {"message": message, "subscription": f"projects/{PROJECT}/subscriptions/events-push"}
    return json.dumps(body).encode()


def _scheduler_request(stack: Stack) -> tuple[str, dict[str, str], bytes]:
    job = _scheduler_job()
    assert job["uri"] == "${local.http_audience}/flush"
    assert job["oidc"]["audience"] == "${local.http_audience}"
    assert "scheduler" in job["oidc"]["service_account_email"]
    assert job["body"] == '${base64encode("{}")}'
    path = job["uri"].replace("${local.http_audience}", "")
    headers = dict(job["headers"])
    headers.update(
        {
            "Authorization": f"Bearer {stack.token(SCHEDULER_SA, aud=HTTP_URL)}",
            "User-Agent": "Google-Cloud-Scheduler",
            "X-CloudScheduler": "true",
            "X-CloudScheduler-JobName": job["name"].replace("${var.name_prefix}", "retrain"),
            "X-CloudScheduler-ScheduleTime": datetime.datetime.now(datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
    )
    assert job["method"] == "POST"
    return path, headers, b"{}"


def test_scheduler_flush_closes_the_window_a_notification_opened(fresh: Stack) -> None:
    push = {"Content-Type": "application/json"}
    for generation, name in enumerate(("daily/2026-11-27/a.csv", "daily/2026-11-27/b.csv"), 1):
        push["Authorization"] = f"Bearer {fresh.token(PUSH_SA, aud=EVENT_URL)}"
        status, answer = fresh.post(
            "/", push, _push_body(name, generation), front=fresh.event, url=EVENT_URL
        )
        assert status == 200, answer
    assert fresh.vertex.jobs == {}

    deadline = time.monotonic() + 20
    flushed: list[dict[str, Any]] = []
    while not flushed:
        path, headers, body = _scheduler_request(fresh)
        status, answer = fresh.post(path, headers, body)
        assert status == 200, answer
        assert isinstance(answer, dict)
        flushed = answer["flushed"]
        if not flushed:
            assert time.monotonic() < deadline, "the window never became due"
            time.sleep(0.2)  # quiet_seconds is 1: poll until it has passed
    [decision] = flushed
    assert decision["decision"] == "submitted", decision
    [job] = fresh.vertex.jobs.values()
    manifest_uri = job["runtimeConfig"]["parameterValues"]["data_uri"]
    assert manifest_uri.startswith(f"gs://{ARTIFACTS}/pipeline-root/manifests/batch/")
    manifest = json.loads(_download(fresh.gcs_url, manifest_uri))
    assert {o["name"] for o in manifest["objects"]} == {
        "daily/2026-11-27/a.csv",
        "daily/2026-11-27/b.csv",
    }
    # Cloud Run checked the scheduler's Authorization and removed its signature.
    exchange = fresh.http.exchanges[-1]
    assert exchange.checked_header == "Authorization"
    assert exchange.forwarded["authorization"].endswith(".SIGNATURE_REMOVED_BY_GOOGLE")


def test_the_schedulers_token_starts_no_run(fresh: Stack) -> None:
    _, headers, _ = _scheduler_request(fresh)
    status, answer = fresh.post(
        "/",
        headers,
        json.dumps({"kind": "code", "commit_sha": COMMIT, "image_uri": IMAGE}).encode(),
    )
    assert status == 401 and isinstance(answer, dict) and SEND_BOTH in answer["reason"]
    assert fresh.vertex.jobs == {}


# --- everyone else ------------------------------------------------------------------------------------

CODE_BODY = json.dumps({"kind": "code", "commit_sha": COMMIT, "image_uri": IMAGE}).encode()


def _both(token: str) -> dict[str, str]:
    return {
        "X-Serverless-Authorization": f"Bearer {token}",
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
    }


@pytest.mark.parametrize(
    ("make_headers", "path", "status", "where", "reason"),
    [
        pytest.param(
            lambda s: _both(s.token(OUTSIDER_SA)),
            "/",
            403,
            "front end",
            f"serviceAccount:{OUTSIDER_SA} lacks roles/run.invoker",
            id="outsider",
        ),
        pytest.param(
            lambda s: _both(s.token(OUTSIDER_SA)),
            "/flush",
            403,
            "front end",
            f"serviceAccount:{OUTSIDER_SA} lacks roles/run.invoker",
            id="outsider-flush",
        ),
        pytest.param(
            lambda s: _both(s.token(OPERATOR)),
            "/",
            403,
            "function",
            f"caller {OPERATOR} is not an allowed invoker",
            id="invoker-not-allowed",
        ),
        pytest.param(
            lambda s: _both(s.token(BUILD_SA, aud="https://other-123.europe-west1.run.app")),
            "/",
            401,
            "front end",
            "audience 'https://other-123.europe-west1.run.app' is not this service",
            id="wrong-audience",
        ),
        pytest.param(
            lambda s: {
                **_both(s.token(BUILD_SA)),
                "Authorization": f"Bearer {s.token(BUILD_SA, aud=EVENT_URL)}",
            },
            "/",
            401,
            "function",
            f"ID token audience does not match this service (expected {HTTP_URL})",
            id="authorization-for-another-audience",
        ),
        pytest.param(
            lambda s: {"Content-Type": "application/json"},
            "/",
            403,
            "front end",
            "no ID token",
            id="no-token",
        ),
        pytest.param(
            lambda s: {
                "Authorization": f"Bearer {s.token(BUILD_SA)}",
                "Content-Type": "application/json",
            },
            "/",
            401,
            "function",
            f"Cloud Run removed the signature of the ID token: {SEND_BOTH}",
            id="stripped-without-the-serverless-header",
        ),
        pytest.param(
            lambda s: {
                "X-Serverless-Authorization": f"Bearer {s.token(OPERATOR)}",
                "Authorization": "Bearer "
                + forge(
                    {
                        "iss": "https://accounts.google.com",
                        "aud": HTTP_URL,
                        "email": SCHEDULER_SA,
                        "email_verified": True,
                        "iat": int(time.time()),
                        "exp": int(time.time()) + 600,
                    }
                ),
            },
            "/flush",
            401,
            "function",
            "the ID token in Authorization has no signature (SIGNATURE_REMOVED_BY_GOOGLE), and "
            "Cloud Run checked X-Serverless-Authorization instead: send the signed ID token in "
            "Authorization",
            id="forged-authorization-behind-a-valid-serverless-header",
        ),
    ],
)
def test_refused(
    fresh: Stack, make_headers: Any, path: str, status: int, where: str, reason: str
) -> None:
    got, answer = fresh.post(path, make_headers(fresh), CODE_BODY)
    assert got == status, answer
    [exchange] = fresh.http.exchanges
    if where == "front end":
        assert not exchange.reached_container and exchange.reason == reason
    else:
        assert exchange.reached_container
        assert isinstance(answer, dict) and answer["reason"] == reason, answer
    assert fresh.vertex.jobs == {}
    assert fresh.vertex.requests_for("create") == []


def test_a_public_service_is_still_closed_to_forged_tokens(stack: Stack) -> None:
    """Were allUsers ever granted roles/run.invoker, tokens would reach the container as sent:
    a forged "stripped" token still starts no run."""
    stack.vertex.reset()
    upstream = f"http://{stack.http.upstream.netloc}"
    public = FakeCloudRun(
        upstream, service_urls=[HTTP_URL], invokers=[], certs=stack.http.certs, public=True
    ).start()
    try:
        claims = {
            "iss": "https://accounts.google.com",
            "aud": HTTP_URL,
            "email": BUILD_SA,
            "email_verified": True,
            "iat": int(time.time()),
            "exp": int(time.time()) + 600,
        }
        headers = {"Authorization": f"Bearer {forge(claims)}", "Content-Type": "application/json"}
        status, answer = stack.post("/", headers, CODE_BODY, front=public)
        assert status == 401, answer
        assert stack.vertex.jobs == {}
    finally:
        public.stop()


# --- run outcomes: the outcome topic's push subscription, as outcomes.tf configures it ------------

PROBE = """\
import json
import os

import functions_framework


@functions_framework.cloud_event
def probe(event):
    with open(os.environ["PROBE_OUT"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"source": event["source"], "type": event["type"]}) + "\\n")
"""


def _outcome_push_body() -> bytes:
    """A run-outcome message as the outcome topic's push subscription posts it."""
    message = {
        "attributes": {"kind": "run-outcome"},
        "data": base64.b64encode(
            json.dumps({"job_id": "mnist-x", "state": "FAILED"}).encode()
        ).decode(),
        "messageId": "41",
        "publishTime": "2026-11-27T10:00:01.000Z",
    }
    body = {"message": message, "subscription": f"projects/{PROJECT}/subscriptions/outcomes-push"}
    return json.dumps(body).encode()


def test_run_outcomes_reach_the_event_function_naming_the_outcome_topic(tmp_path: Path) -> None:
    """The push endpoint's path makes functions-framework name the topic in the CloudEvent's
    source, and that source is exactly the RETRAIN_OUTCOME_TOPIC the event function is given
    (a topic's id is projects/<project>/topics/<name>:
    https://registry.terraform.io/providers/hashicorp/google/latest/docs/resources/pubsub_topic).
    The token's audience is the service URL, as outcomes.tf pins it: Pub/Sub's default, the whole
    endpoint, is not an audience Cloud Run accepts."""
    from tests.deploy.terraform_values import Module

    terraform = Module(
        REPO / "deploy" / "terraform",
        {"project_id": PROJECT, "function_http_zip": "h.zip", "function_gcs_zip": "g.zip"},
    )
    topic_name = terraform.local("outcome_topic_name")
    outcome_topic = f"projects/{PROJECT}/topics/{topic_name}"
    uri = "${google_cloudfunctions2_function.event.service_config[0].uri}"
    endpoint = terraform.value(
        terraform.raw_locals["outcome_push_endpoint"].replace(uri, EVENT_URL)
    )
    assert endpoint == f"{EVENT_URL}/projects/{PROJECT}/topics/retrain-run-outcomes"
    oidc = terraform.resource("google_pubsub_subscription", "outcomes_push")["push_config"][0][
        "oidc_token"
    ][0]
    assert oidc["audience"] == uri

    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "main.py").write_text(PROBE)
    out = tmp_path / "events.jsonl"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "NO_PROXY": "127.0.0.1,localhost",
        "PROBE_OUT": str(out),
    }
    key = Key("kid-google-outcomes")
    with _function(
        "probe", tmp_path / "probe" / "main.py", env, tmp_path / "probe.log"
    ) as upstream:
        front = FakeCloudRun(
            upstream,
            service_urls=[EVENT_URL],
            invokers=[f"serviceAccount:{PUSH_SA}"],
            certs={key.kid: key.cert_pem},
        ).start()
        try:

            def push(path: str, audience: str) -> int:
                token = mint(key, now=time.time(), aud=audience, email=PUSH_SA)
                status, _, _ = front.request(
                    "POST",
                    EVENT_URL + path,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                    body=_outcome_push_body(),
                )
                return status

            path = endpoint.removeprefix(EVENT_URL)
            assert push(path, EVENT_URL) == 200
            assert push(path, endpoint) == 401  # Pub/Sub's default audience: refused
            assert push("/", EVENT_URL) == 200  # the data subscription's path
        finally:
            front.stop()
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["type"] for e in seen] == ["google.cloud.pubsub.topic.v1.messagePublished"] * 2
    assert seen[0]["source"] == f"//pubsub.googleapis.com/{outcome_topic}"
    assert seen[1]["source"] != seen[0]["source"]  # without the path, no topic


def _run_outcome_push(job_id: str, state: str, message: str) -> bytes:
    """A run-outcome message (schemas/run-outcome.schema.json) as the exit task publishes it and
    the outcome topic's push subscription posts it."""
    report = {
        "kind": "retrain-trigger.run-outcome/v1",
        "job_id": job_id,
        "job": f"projects/{PROJECT}/locations/{REGION}/pipelineJobs/{job_id}",
        "state": state,
        "error": {"code": 9 if state != "SUCCEEDED" else 0, "message": message},
        "reported_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "reporter": "exit-handler",
    }
    message_body = {
        "attributes": {"retrain-message": "run-outcome"},
        "data": base64.b64encode(json.dumps(report).encode()).decode(),
        "messageId": "77",
        "publishTime": "2026-11-27T10:00:01.000Z",
    }
    body = {
        "message": message_body,
        "subscription": f"projects/{PROJECT}/subscriptions/retrain-run-outcomes-push",
    }
    return json.dumps(body).encode()


def test_a_run_outcome_through_cloud_run_ends_the_run_once(
    fresh: Stack,
    firestore_emulator: FirestoreEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real event function behind the front end, given RETRAIN_OUTCOME_TOPIC as Terraform
    gives it: the outcome push at the outcome topic's path (outcomes.tf's push endpoint, the
    token's audience the service URL) ends the run in the Firestore store, once."""
    # A code change of its own (the function remembers the jobs it created in other tests).
    body = {"kind": "code", "commit_sha": "f" * 40, "image_uri": IMAGE}
    status, answer = fresh.post("/", _both(fresh.token(BUILD_SA)), json.dumps(body).encode())
    assert status == 200 and isinstance(answer, dict), answer
    assert answer["decision"] == "submitted", answer
    job_id = answer["job_id"]
    push = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {fresh.token(PUSH_SA, aud=EVENT_URL)}",
    }
    body = _run_outcome_push(job_id, "FAILED", "The failed tasks are: [train].")
    for _ in range(2):  # a redelivery changes nothing
        status, answer = fresh.post(
            "/" + OUTCOME_TOPIC, push, body, front=fresh.event, url=EVENT_URL
        )
        assert status == 200, answer
    from retrain_trigger.store.firestore import FirestoreStore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    store = FirestoreStore(project=PROJECT)
    try:
        record = store.get_run(job_id)
    finally:
        store.close()
    assert record is not None
    assert (record.state, record.failed_task, record.reporter) == (
        "FAILED",
        "train",
        "exit-handler",
    )
    lines = [
        json.loads(line)
        for line in (fresh.tmp / "event.log").read_text().splitlines()
        if line.startswith("{") and '"run_outcome"' in line
    ]
    assert [(line["job_id"], line["run_state"]) for line in lines] == [(job_id, "FAILED")]
