"""Tokens, clock and calls shared by the tests of authenticate() (tests/unit/test_auth.py and
tests/integration/test_auth_certificates.py).

Every check of time reads the ``clock`` passed to authenticate(): here always the fixed ``NOW``,
so no result depends on the wall clock or on how long the suite has been running.
"""

from __future__ import annotations

import re
from typing import Any

from retrain_trigger.auth import Caller, authenticate
from retrain_trigger.config import AuthConfig
from tests.fakes import idtokens
from tests.fakes.idtokens import Key

SERVICE = "https://retrain-abc123-uc.a.run.app"
URL = SERVICE + "/"
FLUSH_URL = SERVICE + "/flush"
INVOKER = "builder@my-project.iam.gserviceaccount.com"
SECRET = "s3cret-s3cret-s3cret"
NOW = 1_790_000_000  # 2026-09-21T14:13:20Z; any fixed instant does


def clock() -> float:
    return float(NOW)


def mint(key: Key, *, now: float = NOW, **claims: Any) -> str:
    """An ID token like Google's, issued at ``NOW`` for ``SERVICE`` by ``INVOKER``."""
    claims.setdefault("aud", SERVICE)
    claims.setdefault("email", INVOKER)
    return idtokens.mint(key, now=now, **claims)


def exact(message: str) -> str:
    """A ``match=`` pattern for exactly this message."""
    return f"^{re.escape(message)}$"


def tamper(token: str) -> str:
    """The same token with one character of its signature changed."""
    head, signature = token.rsplit(".", 1)
    swapped = "B" if signature[20] == "A" else "A"
    return f"{head}.{signature[:20]}{swapped}{signature[21:]}"


def iam(
    token: str | None,
    environ: dict[str, str],
    *,
    url: str = URL,
    headers: dict[str, str] | None = None,
    now: float = NOW,
    **config: Any,
) -> Caller:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return authenticate(
        AuthConfig(mode="iam", **config),
        headers=sent,
        body=b"{}",
        url=url,
        environ=environ,
        clock=lambda: float(now),
    )


# --- behind Cloud Run's front end --------------------------------------------------------------
# Cloud Run checks the token in X-Serverless-Authorization when present, else the one in
# Authorization, and removes the signature of the one it checked; the other header passes on
# unchanged (https://cloud.google.com/run/docs/authenticating/service-to-service#acquire-token).

SEND_BOTH = (
    "send the same ID token in X-Serverless-Authorization and in Authorization "
    "('Bearer <ID token>' in both): Cloud Run checks the first and passes the second on signed"
)
STRIPPED = "the ID token in Authorization has no signature (SIGNATURE_REMOVED_BY_GOOGLE)"
