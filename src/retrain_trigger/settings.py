"""Every environment setting, declared once: its name, type, meaning and the field it overrides.

The configuration loader applies them (``config.load_config``), the command line makes one global
option of each that has a flag (``retrain-trigger --region …``; the flag wins over the variable,
and is passed to the loader, never written into the environment), and the README's settings
table is checked against this declaration by a test. An empty value means unset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from retrain_trigger.errors import ConfigError


class Setting:
    """One environment variable (a plain class: read on every cold start, built without the
    code generation a dataclass does).

    ``type`` is how its text is read: ``str``, ``int`` (a positive whole number), ``float``
    (a positive, finite number of seconds), ``bool`` (``true``/``false``, ``1``/``0``) or
    ``list`` (comma-separated). ``field`` is the configuration field it overrides (a dotted path
    in retrain.yaml), ``""`` when it overrides none. ``flag`` is its global command-line option,
    ``""`` when it has none.
    """

    __slots__ = ("choices", "field", "flag", "meaning", "name", "type")

    def __init__(
        self,
        name: str,
        meaning: str,
        *,
        type: type = str,
        field: str = "",
        flag: str = "",
        choices: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.meaning = meaning
        self.type = type
        self.field = field
        self.flag = flag
        self.choices = choices

    def __repr__(self) -> str:
        return f"Setting({self.name!r})"

    def parse(self, text: str) -> Any:
        """The value of ``text`` (already stripped, not empty); ConfigError when it is not one."""
        if self.type is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise self._error(f"must be true or false, got {text!r}")
            return lowered in ("true", "1")
        if self.type is int:
            if not text.isdigit() or not 0 < int(text) <= 1 << 31:
                raise self._error(f"must be a positive whole number, got {text!r}")
            return int(text)
        if self.type is float:
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if not (math.isfinite(number) and number > 0):
                raise self._error(f"must be a number of seconds, got {text!r}")
            return number
        if self.type is list:
            return [item.strip() for item in text.split(",") if item.strip()]
        return text

    def _error(self, message: str) -> ConfigError:
        return ConfigError(message, source="environment", field=self.name)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "RETRAIN_CONFIG",
        "path of the YAML configuration (default `retrain.yaml`)",
        flag="--config",
    ),
    Setting(
        "GOOGLE_CLOUD_PROJECT",
        "project of the pipeline jobs",
        field="project",
        flag="--project",
    ),
    Setting("RETRAIN_REGION", "Vertex AI region", field="region", flag="--region"),
    Setting(
        "RETRAIN_BACKEND",
        "`vertex` or `local`",
        field="backend",
        flag="--backend",
        choices=("vertex", "local"),
    ),
    Setting(
        "RETRAIN_VERTEX_ENDPOINT",
        "`http://host:port`: REST transport with anonymous credentials, for a local test server",
        field="vertex_endpoint",
        flag="--vertex-endpoint",
    ),
    Setting(
        "RETRAIN_AUTH",
        "`iam` (default), `hmac` or `none`",
        field="auth.mode",
        flag="--auth",
        choices=("iam", "hmac", "none"),
    ),
    Setting(
        "RETRAIN_AUDIENCE",
        "expected ID-token audience (recommended behind a load balancer)",
        field="auth.audience",
        flag="--audience",
    ),
    Setting(
        "RETRAIN_ALLOWED_INVOKERS",
        "comma-separated caller emails",
        type=list,
        field="auth.allowed_invokers",
        flag="--allowed-invokers",
    ),
    Setting(
        "RETRAIN_HMAC_SECRET",
        "shared secret for `hmac`",
        field="auth.hmac_secret",
        flag="--hmac-secret",
    ),
    Setting(
        "RETRAIN_ID_TOKEN_CERTS_URL",
        "certificates that verify ID tokens; Google's by default, override only in tests "
        "(`https://`, or `http://` on loopback)",
        flag="--id-token-certs-url",
    ),
    Setting(
        "RETRAIN_ALLOW_ANONYMOUS_ON_CLOUD_RUN",
        "`true` lets `none` serve where `K_SERVICE` is set",
        type=bool,
        field="auth.allow_anonymous_on_cloud_run",
        flag="--allow-anonymous-on-cloud-run",
    ),
    Setting(
        "RETRAIN_MAX_BODY_BYTES",
        "largest accepted body",
        type=int,
        field="limits.max_body_bytes",
        flag="--max-body-bytes",
    ),
    Setting(
        "RETRAIN_SUBMIT_DEADLINE",
        "seconds one submission may take, retries included",
        type=float,
        field="limits.submit_deadline_seconds",
        flag="--submit-deadline",
    ),
    Setting("RETRAIN_STATE_DIR", "local state folder", field="local.state_dir", flag="--state-dir"),
    Setting(
        "RETRAIN_LOCAL_CONCURRENCY",
        "local runs at once",
        type=int,
        field="local.concurrency",
        flag="--local-concurrency",
    ),
    Setting(
        "RETRAIN_STORE",
        "`sqlite` or `firestore`",
        field="store",
        flag="--store",
        choices=("sqlite", "firestore"),
    ),
    Setting(
        "RETRAIN_FIRESTORE_DATABASE",
        "Firestore database id",
        field="firestore_database",
        flag="--firestore-database",
    ),
    Setting(
        "STORAGE_EMULATOR_HOST",
        "fake-gcs-server URL (set by the local stack); anonymous credentials",
    ),
    Setting("PUBSUB_EMULATOR_HOST", "Pub/Sub emulator `host:port` (set by the local stack)"),
    Setting("FIRESTORE_EMULATOR_HOST", "Firestore emulator `host:port`"),
    Setting(
        "RETRAIN_LOCAL_WORKER",
        "`false`: this process only submits local runs, another (the stack's worker) executes them",
        type=bool,
        field="local.worker",
        flag="--local-worker",
    ),
    Setting(
        "RETRAIN_HISTORY",
        "record every decision (default: on with the `local` backend or the `firestore` store)",
        type=bool,
        field="history.enabled",
        flag="--history",
    ),
    Setting(
        "RETRAIN_HISTORY_TTL_DAYS",
        "days a recorded decision is kept (default 30)",
        type=int,
        field="history.ttl_days",
        flag="--history-ttl-days",
    ),
    Setting(
        "RETRAIN_CLOUD_BUILD_TOPIC",
        "topic whose Cloud Build status messages the event function takes (default `cloud-builds`)",
        field="cloud_build_topic",
        flag="--cloud-build-topic",
    ),
    # -- run outcomes
    Setting(
        "RETRAIN_OUTCOME_TOPIC",
        "topic whose messages the event function takes as run outcomes and champion reports "
        "(`projects/<p>/topics/<t>`)",
        field="outcome_topic",
        flag="--outcome-topic",
    ),
    Setting(
        "RETRAIN_NOTIFICATION_TOPIC",
        "topic run-ended and champion-changed notifications are published to",
        field="notification_topic",
        flag="--notification-topic",
    ),
    Setting(
        "RETRAIN_RUN_CHECK_AFTER",
        "seconds before the flush asks the backend about a run whose outcome has not arrived "
        "(default 3600)",
        type=int,
        field="run_check_after_seconds",
        flag="--run-check-after",
    ),
    Setting("RETRAIN_TOPIC", "backfill topic (printed by `up`)", flag="replay --topic"),
    Setting(
        "RETRAIN_SUBSCRIPTION",
        "subscription to seek (printed by `up`)",
        flag="replay --subscription",
    ),
    Setting(
        "K_SERVICE",
        "set by Cloud Run / Cloud Functions; `auth: none` is refused there, and so is "
        "`store: sqlite` with windows or a concurrency policy",
    ),
)

BY_NAME: Mapping[str, Setting] = {setting.name: setting for setting in SETTINGS}
# The settings that are global command-line options (``replay --topic`` belongs to a command).
GLOBAL_FLAGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.flag.startswith("--"))


def value(env: Mapping[str, str], name: str) -> str:
    """The variable's text, stripped; ``""`` (unset) when it is missing or blank."""
    return (env.get(name) or "").strip()


def overrides(env: Mapping[str, str]) -> dict[str, tuple[Setting, Any]]:
    """``{field: (setting, parsed value)}`` of every set variable that overrides a field."""
    out: dict[str, tuple[Setting, Any]] = {}
    for setting in SETTINGS:
        if setting.field and (text := value(env, setting.name)):
            out[setting.field] = (setting, setting.parse(text))
    return out
