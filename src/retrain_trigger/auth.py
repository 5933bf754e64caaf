"""Who may call the HTTP entry point: one function, three modes.

``iam``
    ``Authorization: Bearer <ID token>``. The token must be signed by Google (RS256, a key id
    published at the certificates URL), unexpired, issued by ``https://accounts.google.com`` or
    ``accounts.google.com``, and minted for this service: ``auth.audience`` when set (Terraform
    sets ``RETRAIN_AUDIENCE``), otherwise the URL of the request (``scheme://host/path``, with or
    without a trailing slash, or the origin ``scheme://host``; the scheme honours
    ``X-Forwarded-Proto`` because Cloud Run terminates TLS). When ``auth.allowed_invokers`` is
    set, the token's ``email`` must be one of them and ``email_verified`` true (403 otherwise).
    Certificates come from ``RETRAIN_ID_TOKEN_CERTS_URL`` (default: Google's
    ``oauth2/v1/certs``), are kept for their ``max-age`` (at most an hour; five minutes when none
    is given) and fetched again early when a token names a key id not seen yet.

``hmac``
    ``X-Retrain-Signature: sha256=<64 hex digits>``, the HMAC-SHA256 of the raw body under
    ``auth.hmac_secret``. With ``X-Retrain-Timestamp: <unix seconds>`` the signed message is
    ``b"<timestamp>." + body`` instead, and the timestamp must be within five minutes of now,
    which bounds replays. Without a timestamp, a body that itself starts with ``<digits>.`` is
    refused: it could be a timestamped message replayed with its header stripped.

``none``
    Anyone: for local development only. Refused on Cloud Run and Cloud Functions (``K_SERVICE``
    set) unless ``auth.allow_anonymous_on_cloud_run`` forces it.

**Behind Cloud Run's front end.** A private Cloud Run service (and so a 2nd gen Cloud Function)
checks the caller's ID token itself: the one in ``X-Serverless-Authorization`` when that header
is present, otherwise the one in ``Authorization``. It then removes the signature of the token it
checked before the request reaches the container (``<header>.<payload>.SIGNATURE_REMOVED_BY_GOOGLE``)
and passes every other header on unchanged
(https://cloud.google.com/run/docs/authenticating/service-to-service#acquire-token,
https://cloud.google.com/run/docs/troubleshooting#signature-removed). A token without its
signature proves nothing by itself: anyone can write one, and it reaches the container untouched
wherever Cloud Run did not check it (``X-Serverless-Authorization`` was checked instead, the
service was made public, its invoker check was turned off, or the container runs elsewhere).
So the design is:

- Callers that can choose their headers (Cloud Build's trigger step, curl, other services) send
  the same ID token twice: ``X-Serverless-Authorization: Bearer <token>`` for Cloud Run's IAM
  check and ``Authorization: Bearer <token>``, which Cloud Run then passes on signed, for this
  module's check. A signed token is always verified here, so nothing depends on the front end.
  Sent straight to a container (local runs) the ``Authorization`` header alone is enough.
- Cloud Scheduler cannot: its OIDC token always travels in ``Authorization``, which Cloud Run
  checks and strips. A stripped token is therefore accepted for ``POST /flush`` only, and only
  when every one of these holds: ``K_SERVICE`` is set (on Cloud Run), no
  ``X-Serverless-Authorization`` header came with it (so ``Authorization`` is the header Cloud
  Run checked), ``auth.allowed_invokers`` is set, and the claims pass the same checks as a
  signed token's (issuer, audience, expiry, verified email among the allowed invokers).
  ``/flush`` takes no input and only closes the windows that are due and starts queued runs whose
  turn came: what the next scheduled call does anyway. Were the service ever opened to
  ``allUsers`` (or its invoker check turned off), a forged token would buy a stranger an early
  flush and nothing else; every request that names a run (``POST /``) still needs a signature
  this module verifies.
- Anywhere else, a stripped token answers 401, telling the caller to send the token in both
  headers.

Missing, malformed, wrong or expired credentials raise ``Unauthenticated`` (401); a valid caller
who is not allowed raises ``Forbidden`` (403). Messages never contain a token or a secret.
google-auth is imported only when an ID token is verified. Every check of time reads the
``clock`` passed to :func:`authenticate` (``time.time`` by default), so tests control it.

(Above ~400 lines on purpose: one security boundary, read top to bottom with the platform behaviour
it relies on; split, each mode's reasoning would lose the front-end rules it depends on.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from retrain_trigger.errors import (
    CertificatesUnavailable,
    ConfigError,
    Forbidden,
    Unauthenticated,
)

if TYPE_CHECKING:
    from retrain_trigger.config import AuthConfig

__all__ = [
    "CERTS_URL_ENV",
    "GOOGLE_CERTS_URL",
    "REMOVED_SIGNATURE",
    "SERVERLESS_AUTHORIZATION",
    "STRIPPED_TOKEN_PATHS",
    "Caller",
    "CertificatesUnavailable",
    "authenticate",
]

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
CERTS_URL_ENV = "RETRAIN_ID_TOKEN_CERTS_URL"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")

# Cloud Run: https://cloud.google.com/run/docs/authenticating/service-to-service#acquire-token
SERVERLESS_AUTHORIZATION = "X-Serverless-Authorization"
REMOVED_SIGNATURE = "SIGNATURE_REMOVED_BY_GOOGLE"
# Paths that accept a token whose signature Cloud Run removed (see the module docstring).
STRIPPED_TOKEN_PATHS = frozenset({"/flush"})

CLOCK_SKEW_SECONDS = 10
MAX_TOKEN_CHARS = 4096
CERTS_DEFAULT_TTL = 300.0
CERTS_MAX_TTL = 3600.0
CERTS_MIN_REFRESH = 30.0
CERTS_FETCH_TIMEOUT = 10.0

SIGNATURE_HEADER = "X-Retrain-Signature"
TIMESTAMP_HEADER = "X-Retrain-Timestamp"
MAX_SIGNATURE_AGE = 300

SEND_BOTH = (
    f"send the same ID token in {SERVERLESS_AUTHORIZATION} and in Authorization "
    "('Bearer <ID token>' in both): Cloud Run checks the first and passes the second on signed"
)

_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_SIGNATURE = re.compile(r"sha256=([0-9a-f]{64})")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_LOOKS_TIMESTAMPED = re.compile(rb"[0-9]+\.")
_MAX_AGE = re.compile(r"max-age=([0-9]+)")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

Clock = Callable[[], float]


@dataclass(frozen=True)
class Caller:
    """Who made the request. ``subject`` is the token's ``sub`` in iam mode."""

    mode: str
    subject: str = ""
    email: str = ""
    detail: str = ""


def authenticate(
    config: AuthConfig,
    *,
    headers: Mapping[str, str],
    body: bytes,
    url: str,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> Caller:
    """Authenticate one HTTP request, or raise ``Unauthenticated`` / ``Forbidden``.

    ``url`` is the URL the request was made to (Flask's ``request.url``); ``environ`` defaults
    to ``os.environ`` and is read for ``K_SERVICE`` and ``RETRAIN_ID_TOKEN_CERTS_URL``;
    ``clock`` (default ``time.time``) gives the current Unix time for expiry and replay checks.
    """
    environ = os.environ if environ is None else environ
    now = (clock or time.time)()
    if config.mode == "iam":
        return _iam(config, headers, url, environ, now)
    if config.mode == "hmac":
        return _hmac(config, headers, body, now)
    if config.mode == "none":
        return _anonymous(config, environ)
    raise ConfigError(f"must be one of iam, hmac, none, got {config.mode!r}", field="auth.mode")


# --- none --------------------------------------------------------------------------------------


def _anonymous(config: AuthConfig, environ: Mapping[str, str]) -> Caller:
    if not environ.get("K_SERVICE"):
        return Caller(mode="none", detail="anonymous (local development)")
    if config.force_none:
        return Caller(mode="none", detail="anonymous (forced on Cloud Run)")
    raise Unauthenticated(
        "anonymous access (auth mode 'none') is refused on Cloud Run and Cloud Functions "
        "(K_SERVICE is set): use auth mode iam or hmac, or set "
        "RETRAIN_ALLOW_ANONYMOUS_ON_CLOUD_RUN=true to force it"
    )


# --- hmac --------------------------------------------------------------------------------------


def _hmac(config: AuthConfig, headers: Mapping[str, str], body: bytes, now: float) -> Caller:
    secret = config.hmac_secret.encode()
    if len(secret) < 16:
        raise ConfigError(
            "hmac mode needs a secret of at least 16 characters", field="RETRAIN_HMAC_SECRET"
        )
    header = _header(headers, SIGNATURE_HEADER)
    if header is None:
        raise Unauthenticated(
            f"missing {SIGNATURE_HEADER} header: expected 'sha256=<hex HMAC-SHA256 of the body>'"
        )
    match = _SIGNATURE.fullmatch(header.strip().lower())
    if not match:
        raise Unauthenticated(
            f"malformed {SIGNATURE_HEADER} header: expected 'sha256=' and 64 hex digits"
        )
    timestamp = _header(headers, TIMESTAMP_HEADER)
    if timestamp is None:
        if _LOOKS_TIMESTAMPED.match(body):
            raise Unauthenticated(
                f"a body starting with '<digits>.' must be signed with {TIMESTAMP_HEADER}"
            )
        message, detail = body, "signed body"
    else:
        timestamp = timestamp.strip()
        if not _TIMESTAMP.fullmatch(timestamp):
            raise Unauthenticated(f"malformed {TIMESTAMP_HEADER} header: expected unix seconds")
        age = now - int(timestamp)
        if age > MAX_SIGNATURE_AGE:
            raise Unauthenticated(f"signature is older than {MAX_SIGNATURE_AGE} seconds")
        if age < -MAX_SIGNATURE_AGE:
            raise Unauthenticated(
                f"{TIMESTAMP_HEADER} is more than {MAX_SIGNATURE_AGE} seconds in the future"
            )
        message, detail = timestamp.encode() + b"." + body, "signed body and timestamp"
    expected = hmac.new(secret, message, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, bytes.fromhex(match.group(1))):
        raise Unauthenticated(f"{SIGNATURE_HEADER} does not match the body")
    return Caller(mode="hmac", subject="hmac", detail=detail)


# --- iam ---------------------------------------------------------------------------------------


def _iam(
    config: AuthConfig,
    headers: Mapping[str, str],
    url: str,
    environ: Mapping[str, str],
    now: float,
) -> Caller:
    token = _bearer_token(headers)
    audiences = _audiences(config.audience, url, headers)
    if token.rsplit(".", 1)[1] == REMOVED_SIGNATURE:
        claims = _stripped_claims(config, token, audiences, headers, url, environ, now)
        how = ", signature checked by Cloud Run"
    else:
        claims = _verify_id_token(token, audiences, _certs_url(environ), now)
        how = ""

    subject = str(claims.get("sub") or "")
    email = claims.get("email")
    email = email if isinstance(email, str) else ""
    if config.allowed_invokers:
        if not email:
            raise Forbidden(
                "the ID token has no email claim: mint it with the email included "
                "(metadata server: format=full; generateIdToken: includeEmail)"
            )
        if claims.get("email_verified") not in (True, "true"):
            raise Forbidden(f"caller {email} has no verified email")
        allowed = {invoker.lower() for invoker in config.allowed_invokers}
        if email.lower() not in allowed:
            raise Forbidden(f"caller {email} is not an allowed invoker")
    return Caller(mode="iam", subject=subject, email=email, detail=f"audience {claims['aud']}{how}")


def _bearer_token(headers: Mapping[str, str]) -> str:
    header = _header(headers, "Authorization")
    if header is None:
        if _header(headers, SERVERLESS_AUTHORIZATION) is not None:
            raise Unauthenticated(f"missing Authorization header: {SEND_BOTH}")
        raise Unauthenticated("missing Authorization header: expected 'Bearer <ID token>'")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise Unauthenticated("malformed Authorization header: expected 'Bearer <ID token>'")
    token = parts[1]
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated(f"malformed ID token: longer than {MAX_TOKEN_CHARS} characters")
    if not _JWT.fullmatch(token):
        raise Unauthenticated("malformed ID token: not a JWT")
    return token


def _audiences(configured: str, url: str, headers: Mapping[str, str]) -> list[str]:
    """The audiences a token for this service may carry; the first is the canonical one.

    The derived form trusts the Host the request arrived with. Cloud Run routes on it, so it
    names this service there; behind a load balancer, pin ``auth.audience`` instead.
    """
    if configured:
        base = configured.rstrip("/")
        return [base, base + "/"]
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    forwarded = (_header(headers, "X-Forwarded-Proto") or "").split(",")[0].strip().lower()
    if forwarded in ("http", "https"):
        scheme = forwarded
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise Unauthenticated(
            "cannot derive the expected ID token audience from the request URL: "
            "set RETRAIN_AUDIENCE"
        )
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{parts.port}"
    origin = f"{scheme}://{host}"
    path = parts.path.rstrip("/")
    audiences = [origin + path, origin + path + "/", origin, origin + "/"]
    return list(dict.fromkeys(audiences))


def _segment(text: str) -> bytes:
    """One base64url segment of a JWT (padding optional), or ValueError."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def _json_segment(text: str) -> dict[str, Any]:
    try:
        value = json.loads(_segment(text))
    except ValueError:
        raise Unauthenticated("malformed ID token: not a JWT") from None
    if not isinstance(value, dict):
        raise Unauthenticated("malformed ID token: not a JWT")
    return value


def _verify_id_token(
    token: str, audiences: list[str], certs_url: str, now: float
) -> Mapping[str, Any]:
    """Checks signature, times, audience and issuer, in the order google-auth's
    ``jwt.decode`` does, but against ``now`` rather than the machine's clock."""
    head, payload, signature = token.split(".")
    header = _json_segment(head)
    if header.get("alg") != "RS256":
        raise Unauthenticated("ID token must be signed with RS256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthenticated("ID token has no key id (kid)")
    certs = _certs(certs_url, kid)
    if kid not in certs:
        raise Unauthenticated("ID token is signed by an unknown key")
    from google.auth import crypt

    try:
        verifier = crypt.RSAVerifier.from_string(certs[kid])
        valid = verifier.verify(f"{head}.{payload}".encode(), _segment(signature))
    except ValueError:
        valid = False
    if not valid:
        raise Unauthenticated("ID token signature is invalid")
    return _checked_claims(_json_segment(payload), audiences, now)


def _checked_claims(claims: dict[str, Any], audiences: list[str], now: float) -> Mapping[str, Any]:
    issued, expires = claims.get("iat"), claims.get("exp")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (issued, expires)):
        raise Unauthenticated("ID token lacks the iat or exp claim")
    assert isinstance(issued, int | float) and isinstance(expires, int | float)
    if now < issued - CLOCK_SKEW_SECONDS:
        raise Unauthenticated("ID token is not valid yet (issued in the future)")
    if now > expires + CLOCK_SKEW_SECONDS:
        raise Unauthenticated("ID token has expired")
    if claims.get("aud") not in audiences:
        raise Unauthenticated(
            f"ID token audience does not match this service (expected {audiences[0]})"
        )
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise Unauthenticated("ID token issuer is not Google (accounts.google.com)")
    return claims


def _stripped_claims(
    config: AuthConfig,
    token: str,
    audiences: list[str],
    headers: Mapping[str, str],
    url: str,
    environ: Mapping[str, str],
    now: float,
) -> Mapping[str, Any]:
    """The claims of a token whose signature Cloud Run removed, where the design trusts them."""
    stripped = f"the ID token in Authorization has no signature ({REMOVED_SIGNATURE})"
    if not environ.get("K_SERVICE"):
        raise Unauthenticated(
            f"{stripped}; only Cloud Run's front end removes signatures, and this is not Cloud "
            "Run (K_SERVICE is not set): send the signed ID token"
        )
    if _header(headers, SERVERLESS_AUTHORIZATION) is not None:
        raise Unauthenticated(
            f"{stripped}, and Cloud Run checked {SERVERLESS_AUTHORIZATION} instead: "
            "send the signed ID token in Authorization"
        )
    path = urlsplit(url).path.rstrip("/") or "/"
    if path not in STRIPPED_TOKEN_PATHS:
        raise Unauthenticated(f"Cloud Run removed the signature of the ID token: {SEND_BOTH}")
    if not config.allowed_invokers:
        raise Unauthenticated(
            f"{stripped}: accepted on {path} only when RETRAIN_ALLOWED_INVOKERS names the callers"
        )
    head, payload, _ = token.split(".")
    if _json_segment(head).get("alg") != "RS256":
        raise Unauthenticated("ID token must be signed with RS256")
    return _checked_claims(_json_segment(payload), audiences, now)


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Certs:
    keys: Mapping[str, str]
    fetched: float
    expires: float


_certs_lock = threading.Lock()
_certs_cache: dict[str, _Certs] = {}
_transport: Any = None


def _certs_url(environ: Mapping[str, str]) -> str:
    url = environ.get(CERTS_URL_ENV, "").strip() or GOOGLE_CERTS_URL
    parts = urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS
    if not (parts.scheme == "https" and parts.hostname) and not local:
        raise ConfigError(
            f"must be an https:// URL (http:// only for localhost), got {url!r}",
            field=CERTS_URL_ENV,
        )
    return url


def _certs(url: str, kid: str) -> Mapping[str, str]:
    """The ``{key id: PEM certificate}`` map at ``url``, cached; fetched again early (at most
    every ``CERTS_MIN_REFRESH`` seconds) when ``kid`` is not in it, since keys rotate."""
    with _certs_lock:
        now = time.monotonic()
        entry = _certs_cache.get(url)
        if (
            entry is None
            or now >= entry.expires
            or (kid not in entry.keys and now - entry.fetched >= CERTS_MIN_REFRESH)
        ):
            entry = _fetch_certs(url, now)
            _certs_cache[url] = entry
        return entry.keys


def _fetch_certs(url: str, now: float) -> _Certs:
    global _transport
    if _transport is None:
        import google.auth.transport.requests

        _transport = google.auth.transport.requests.Request()
    unavailable = f"cannot fetch the ID token certificates from {url}"
    try:
        response = _transport(url, method="GET", timeout=CERTS_FETCH_TIMEOUT)
    except Exception as exc:  # any transport failure: answered 503, retried by the caller
        raise CertificatesUnavailable(f"{unavailable}: {type(exc).__name__}") from None
    if response.status != 200:
        raise CertificatesUnavailable(f"{unavailable}: HTTP {response.status}")
    try:
        keys = json.loads(response.data)
    except ValueError:
        keys = None
    if (
        not isinstance(keys, dict)
        or not keys
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items())
    ):
        raise CertificatesUnavailable(f"{unavailable}: not a {{key id: PEM certificate}} map")
    max_age = _MAX_AGE.search(response.headers.get("cache-control", "") or "")
    ttl = min(float(max_age.group(1)), CERTS_MAX_TTL) if max_age else CERTS_DEFAULT_TTL
    return _Certs(keys=keys, fetched=now, expires=now + ttl)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name, from Flask's headers or a plain dict."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value
