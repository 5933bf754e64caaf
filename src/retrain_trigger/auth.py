"""Who may call the HTTP entry point: one function, three modes.

``iam``
    ``Authorization: Bearer <ID token>``. The token must be signed by Google (RS256, a key id
    published at the certificates URL), unexpired, issued by ``https://accounts.google.com`` or
    ``accounts.google.com``, and minted for this service: ``auth.audience`` when set, otherwise
    the URL of the request (``scheme://host/path``, with or without a trailing slash, or the
    origin ``scheme://host``; the scheme honours ``X-Forwarded-Proto`` because Cloud Run
    terminates TLS). When ``auth.allowed_invokers`` is set, the token's ``email`` must be one of
    them and ``email_verified`` true (403 otherwise). Certificates come from
    ``RETRAIN_ID_TOKEN_CERTS_URL`` (default: Google's ``oauth2/v1/certs``), are kept for their
    ``max-age`` (at most an hour; five minutes when none is given) and fetched again early when a
    token names a key id not seen yet.

``hmac``
    ``X-Retrain-Signature: sha256=<64 hex digits>``, the HMAC-SHA256 of the raw body under
    ``auth.hmac_secret``. With ``X-Retrain-Timestamp: <unix seconds>`` the signed message is
    ``b"<timestamp>." + body`` instead, and the timestamp must be within five minutes of now,
    which bounds replays. Without a timestamp, a body that itself starts with ``<digits>.`` is
    refused: it could be a timestamped message replayed with its header stripped.

``none``
    Anyone: for local development only. Refused on Cloud Run and Cloud Functions (``K_SERVICE``
    set) unless ``auth.allow_anonymous_on_cloud_run`` forces it.

Missing, malformed, wrong or expired credentials raise ``Unauthenticated`` (401); a valid caller
who is not allowed raises ``Forbidden`` (403). Messages never contain a token or a secret.
google-auth is imported only when an ID token is verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from retrain_trigger.errors import BackendUnavailable, ConfigError, Forbidden, Unauthenticated

if TYPE_CHECKING:
    from retrain_trigger.config import AuthConfig

__all__ = [
    "CERTS_URL_ENV",
    "GOOGLE_CERTS_URL",
    "Caller",
    "CertificatesUnavailable",
    "authenticate",
]

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
CERTS_URL_ENV = "RETRAIN_ID_TOKEN_CERTS_URL"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")

CLOCK_SKEW_SECONDS = 10
MAX_TOKEN_CHARS = 4096
CERTS_DEFAULT_TTL = 300.0
CERTS_MAX_TTL = 3600.0
CERTS_MIN_REFRESH = 30.0
CERTS_FETCH_TIMEOUT = 10.0

SIGNATURE_HEADER = "X-Retrain-Signature"
TIMESTAMP_HEADER = "X-Retrain-Timestamp"
MAX_SIGNATURE_AGE = 300

_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_SIGNATURE = re.compile(r"sha256=([0-9a-f]{64})")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_LOOKS_TIMESTAMPED = re.compile(rb"[0-9]+\.")
_MAX_AGE = re.compile(r"max-age=([0-9]+)")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class CertificatesUnavailable(BackendUnavailable):
    """The ID token certificates could not be fetched: answered 503, the caller retries."""


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
) -> Caller:
    """Authenticate one HTTP request, or raise ``Unauthenticated`` / ``Forbidden``.

    ``url`` is the URL the request was made to (Flask's ``request.url``); ``environ`` defaults
    to ``os.environ`` and is read for ``K_SERVICE`` and ``RETRAIN_ID_TOKEN_CERTS_URL``.
    """
    environ = os.environ if environ is None else environ
    if config.mode == "iam":
        return _iam(config, headers, url, environ)
    if config.mode == "hmac":
        return _hmac(config, headers, body)
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


def _hmac(config: AuthConfig, headers: Mapping[str, str], body: bytes) -> Caller:
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
        age = time.time() - int(timestamp)
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
    config: AuthConfig, headers: Mapping[str, str], url: str, environ: Mapping[str, str]
) -> Caller:
    token = _bearer_token(headers)
    audiences = _audiences(config.audience, url, headers)
    claims = _verify_id_token(token, audiences, _certs_url(environ))

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
    return Caller(mode="iam", subject=subject, email=email, detail=f"audience {claims['aud']}")


def _bearer_token(headers: Mapping[str, str]) -> str:
    header = _header(headers, "Authorization")
    if header is None:
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


def _verify_id_token(token: str, audiences: list[str], certs_url: str) -> Mapping[str, Any]:
    from google.auth import exceptions, jwt

    try:
        header = jwt.decode_header(token)
    except (exceptions.GoogleAuthError, ValueError):
        raise Unauthenticated("malformed ID token: not a JWT") from None
    if header.get("alg") != "RS256":
        raise Unauthenticated("ID token must be signed with RS256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthenticated("ID token has no key id (kid)")
    certs = _certs(certs_url, kid)
    if kid not in certs:
        raise Unauthenticated("ID token is signed by an unknown key")
    try:
        claims = jwt.decode(
            token,
            certs={kid: certs[kid]},
            audience=audiences,
            clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
        )
    except (exceptions.GoogleAuthError, ValueError) as exc:
        raise Unauthenticated(_reason(str(exc), audiences[0])) from None
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise Unauthenticated("ID token issuer is not Google (accounts.google.com)")
    return claims


def _reason(error: str, audience: str) -> str:
    """Our own words for google-auth's errors, whose messages may quote the token."""
    if error.startswith("Token expired"):
        return "ID token has expired"
    if error.startswith("Token used too early"):
        return "ID token is not valid yet (issued in the future)"
    if error.startswith("Token has wrong audience"):
        return f"ID token audience does not match this service (expected {audience})"
    if error.startswith("Could not verify token signature"):
        return "ID token signature is invalid"
    if error.startswith("Token does not contain required claim"):
        return "ID token lacks the iat or exp claim"
    return "ID token is invalid"


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
