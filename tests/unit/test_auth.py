"""authenticate(): ID tokens verified by google-auth against certificates served on 127.0.0.1."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from retrain_trigger import auth
from retrain_trigger.auth import Caller, CertificatesUnavailable, authenticate
from retrain_trigger.config import AuthConfig
from retrain_trigger.errors import ConfigError, Forbidden, Unauthenticated

SERVICE = "https://retrain-abc123-uc.a.run.app"
URL = SERVICE + "/"
INVOKER = "builder@my-project.iam.gserviceaccount.com"
SECRET = "s3cret-s3cret-s3cret"


# --- keys, certificates and tokens ---------------------------------------------------------------


class Key:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.private, hashes.SHA256())
        )
        self.cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        self.private_pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@pytest.fixture(scope="module")
def key() -> Key:
    return Key("kid-google-1")


@pytest.fixture(scope="module")
def other_key() -> Key:
    return Key("kid-google-2")


def mint(
    key: Key,
    *,
    kid: str | None = "",
    header: dict[str, str] | None = None,
    **claims: Any,
) -> str:
    """An ID token like Google's; a claim given as None is left out."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": SERVICE,
        "sub": "109876543210",
        "azp": "109876543210",
        "email": INVOKER,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    signer = crypt.RSASigner.from_string(key.private_pem, key_id=key.kid if kid == "" else kid)
    return jwt.encode(signer, payload, header=header).decode()


def exact(message: str) -> str:
    """A ``match=`` pattern for exactly this message."""
    return f"^{re.escape(message)}$"


def tamper(token: str) -> str:
    """The same token with one character of its signature changed."""
    head, signature = token.rsplit(".", 1)
    swapped = "B" if signature[20] == "A" else "A"
    return f"{head}.{signature[:20]}{swapped}{signature[21:]}"


class CertsServer:
    """Serves ``{kid: PEM certificate}`` like https://www.googleapis.com/oauth2/v1/certs."""

    def __init__(self) -> None:
        self.certs: dict[str, str] = {}
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(outer.certs).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Cache-Control", "public, max-age=19800, must-revalidate")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/oauth2/v1/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[CertsServer]:
    server = CertsServer()
    yield server
    server.close()


@pytest.fixture
def certs(server: CertsServer, key: Key) -> Iterator[CertsServer]:
    server.certs = {key.kid: key.cert_pem}
    server.status = 200
    server.hits = 0
    auth._certs_cache.clear()
    yield server
    auth._certs_cache.clear()


@pytest.fixture
def environ(certs: CertsServer) -> dict[str, str]:
    return {auth.CERTS_URL_ENV: certs.url, "K_SERVICE": "retrain"}


def iam(
    token: str | None,
    environ: dict[str, str],
    *,
    url: str = URL,
    headers: dict[str, str] | None = None,
    **config: Any,
) -> Caller:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return authenticate(
        AuthConfig(mode="iam", **config), headers=sent, body=b"{}", url=url, environ=environ
    )


# --- iam -----------------------------------------------------------------------------------------


def test_valid_id_token(key: Key, environ: dict[str, str]) -> None:
    caller = iam(mint(key), environ, allowed_invokers=(INVOKER,))
    assert caller == Caller(
        mode="iam", subject="109876543210", email=INVOKER, detail=f"audience {SERVICE}"
    )


def test_short_issuer_and_any_invoker_when_none_configured(key: Key, environ: dict) -> None:
    caller = iam(mint(key, iss="accounts.google.com", email=None), environ)
    assert (caller.subject, caller.email) == ("109876543210", "")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda k, o: mint(k, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
            "ID token has expired",
            id="expired",
        ),
        pytest.param(
            lambda k, o: mint(k, iat=int(time.time()) + 600, exp=int(time.time()) + 4200),
            "ID token is not valid yet (issued in the future)",
            id="issued-in-the-future",
        ),
        pytest.param(
            lambda k, o: mint(k, aud="https://other-service-uc.a.run.app"),
            f"ID token audience does not match this service (expected {SERVICE})",
            id="wrong-audience",
        ),
        pytest.param(
            lambda k, o: mint(k, aud=SERVICE + ".evil.example"),
            f"ID token audience does not match this service (expected {SERVICE})",
            id="audience-suffix",
        ),
        pytest.param(
            lambda k, o: mint(o, kid=k.kid),
            "ID token signature is invalid",
            id="wrong-signer",
        ),
        pytest.param(
            lambda k, o: mint(o),
            "ID token is signed by an unknown key",
            id="unknown-kid",
        ),
        pytest.param(
            lambda k, o: mint(k, kid=None),
            "ID token has no key id (kid)",
            id="no-kid",
        ),
        pytest.param(
            lambda k, o: mint(k, header={"alg": "HS256"}),
            "ID token must be signed with RS256",
            id="hs256",
        ),
        pytest.param(
            lambda k, o: mint(k, iss="https://securetoken.google.com/my-project"),
            "ID token issuer is not Google (accounts.google.com)",
            id="wrong-issuer",
        ),
        pytest.param(
            lambda k, o: mint(k, iss=None),
            "ID token issuer is not Google (accounts.google.com)",
            id="no-issuer",
        ),
        pytest.param(
            lambda k, o: mint(k, exp=None),
            "ID token lacks the iat or exp claim",
            id="no-exp",
        ),
        pytest.param(
            lambda k, o: tamper(mint(k)),
            "ID token signature is invalid",
            id="tampered-signature",
        ),
    ],
)
def test_invalid_id_token_is_unauthenticated(
    make: Any, message: str, key: Key, other_key: Key, environ: dict[str, str]
) -> None:
    token = make(key, other_key)
    with pytest.raises(Unauthenticated, match=exact(message)) as caught:
        iam(token, environ)
    assert caught.value.status == 401
    assert token not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        pytest.param(None, "missing Authorization header: expected 'Bearer <ID token>'", id="none"),
        pytest.param(
            "", "malformed Authorization header: expected 'Bearer <ID token>'", id="empty"
        ),
        pytest.param(
            "Bearer",
            "malformed Authorization header: expected 'Bearer <ID token>'",
            id="bearer-only",
        ),
        pytest.param(
            "Bearer ",
            "malformed Authorization header: expected 'Bearer <ID token>'",
            id="bearer-space",
        ),
        pytest.param(
            "Basic dXNlcjpwYXNz",
            "malformed Authorization header: expected 'Bearer <ID token>'",
            id="basic",
        ),
        pytest.param(
            "Bearer a.b.c extra",
            "malformed Authorization header: expected 'Bearer <ID token>'",
            id="three-parts",
        ),
        pytest.param(
            "garbage", "malformed Authorization header: expected 'Bearer <ID token>'", id="garbage"
        ),
        pytest.param("Bearer not-a-jwt", "malformed ID token: not a JWT", id="not-a-jwt"),
        pytest.param("Bearer a.b.c", "malformed ID token: not a JWT", id="bad-segments"),
        pytest.param("Bearer a.b.c=", "malformed ID token: not a JWT", id="padding"),
        pytest.param(
            "Bearer " + "A" * 5000 + "." + "B" * 5000 + ".C",
            "malformed ID token: longer than 4096 characters",
            id="10kb",
        ),
    ],
)
def test_malformed_authorization_header(
    header: str | None, message: str, environ: dict[str, str], certs: CertsServer
) -> None:
    headers = {} if header is None else {"Authorization": header}
    with pytest.raises(Unauthenticated, match=exact(message)):
        iam(None, environ, headers=headers)
    assert certs.hits == 0


def test_scheme_and_header_name_are_case_insensitive(key: Key, environ: dict) -> None:
    headers = {"authorization": f"bearer  {mint(key)} "}
    assert iam(None, environ, headers=headers).mode == "iam"


@pytest.mark.parametrize(
    ("email", "verified", "message"),
    [
        (
            "intruder@other.iam.gserviceaccount.com",
            True,
            "caller intruder@other.iam.gserviceaccount.com is not an allowed invoker",
        ),
        (INVOKER, False, f"caller {INVOKER} has no verified email"),
        (INVOKER, "false", f"caller {INVOKER} has no verified email"),
        (INVOKER, None, f"caller {INVOKER} has no verified email"),
        (
            None,
            True,
            "the ID token has no email claim: mint it with the email included "
            "(metadata server: format=full; generateIdToken: includeEmail)",
        ),
    ],
)
def test_caller_not_allowed_is_forbidden(
    key: Key, environ: dict, email: str | None, verified: Any, message: str
) -> None:
    token = mint(key, email=email, email_verified=verified)
    with pytest.raises(Forbidden, match=exact(message)) as caught:
        iam(token, environ, allowed_invokers=("someone@example.com", INVOKER))
    assert caught.value.status == 403


def test_allowed_invokers_compare_case_insensitively(key: Key, environ: dict) -> None:
    token = mint(key, email_verified="true")
    assert iam(token, environ, allowed_invokers=(INVOKER.upper(),)).email == INVOKER


@pytest.mark.parametrize(
    ("url", "forwarded", "aud", "ok"),
    [
        ("https://svc.a.run.app/", None, "https://svc.a.run.app", True),
        ("https://svc.a.run.app/", None, "https://svc.a.run.app/", True),
        ("https://svc.a.run.app", None, "https://svc.a.run.app", True),
        ("https://svc.a.run.app:443/", None, "https://svc.a.run.app", True),
        ("https://SVC.a.run.app/", None, "https://svc.a.run.app", True),
        ("http://svc.a.run.app/?x=1", "https", "https://svc.a.run.app", True),
        ("http://svc.a.run.app/", "https, http", "https://svc.a.run.app", True),
        ("http://svc.a.run.app/", None, "http://svc.a.run.app", True),
        ("http://svc.a.run.app/", None, "https://svc.a.run.app", False),
        ("https://svc.a.run.app/hook?x=1", None, "https://svc.a.run.app/hook", True),
        ("https://svc.a.run.app/hook", None, "https://svc.a.run.app/hook/", True),
        ("https://svc.a.run.app/hook/", None, "https://svc.a.run.app/hook", True),
        ("https://svc.a.run.app/hook", None, "https://svc.a.run.app", True),
        ("https://svc.a.run.app/hook", None, "https://svc.a.run.app/hook?x=1", False),
        ("https://svc.a.run.app/hook", None, "https://svc.a.run.app/other", False),
        ("https://svc.a.run.app/", None, "https://other.a.run.app", False),
        ("https://svc.a.run.app/", None, "https://svc.a.run.app.evil.example", False),
        ("https://svc.a.run.app/", None, "svc.a.run.app", False),
        ("http://127.0.0.1:8080/", None, "http://127.0.0.1:8080", True),
        ("http://127.0.0.1:8080/", None, "http://127.0.0.1", False),
    ],
)
def test_audience_from_request_url(
    key: Key, environ: dict, url: str, forwarded: str | None, aud: str, ok: bool
) -> None:
    headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
    token = mint(key, aud=aud)
    if ok:
        assert iam(token, environ, url=url, headers=headers).detail == f"audience {aud}"
    else:
        expected = url.split("?")[0].rstrip("/").replace("//SVC", "//svc").replace(":443", "")
        if forwarded:
            expected = expected.replace("http:", "https:")
        message = f"ID token audience does not match this service (expected {expected})"
        with pytest.raises(Unauthenticated, match=exact(message)):
            iam(token, environ, url=url, headers=headers)


def test_configured_audience_replaces_the_request_url(key: Key, environ: dict) -> None:
    pinned = "https://retrain.example.com"
    assert iam(mint(key, aud=pinned + "/"), environ, audience=pinned).mode == "iam"
    with pytest.raises(
        Unauthenticated,
        match=exact(f"ID token audience does not match this service (expected {pinned})"),
    ):
        iam(mint(key), environ, audience=pinned)


def test_url_without_host_needs_a_configured_audience(key: Key, environ: dict) -> None:
    message = (
        "cannot derive the expected ID token audience from the request URL: set RETRAIN_AUDIENCE"
    )
    with pytest.raises(Unauthenticated, match=exact(message)):
        iam(mint(key), environ, url="/hook")


# --- certificates --------------------------------------------------------------------------------


def test_certificates_are_cached(key: Key, environ: dict, certs: CertsServer) -> None:
    for _ in range(3):
        iam(mint(key), environ)
    assert certs.hits == 1


def test_rotated_key_is_fetched_again(
    key: Key, other_key: Key, environ: dict, certs: CertsServer, monkeypatch: Any
) -> None:
    iam(mint(key), environ)
    certs.certs[other_key.kid] = other_key.cert_pem
    with pytest.raises(Unauthenticated, match=exact("ID token is signed by an unknown key")):
        iam(mint(other_key), environ)  # fetched moments ago: not again
    assert certs.hits == 1
    monkeypatch.setattr(auth, "CERTS_MIN_REFRESH", 0.0)
    assert iam(mint(other_key), environ).mode == "iam"
    assert certs.hits == 2


def test_certificates_unavailable_is_retryable(key: Key, environ: dict, certs: CertsServer) -> None:
    certs.status = 500
    with pytest.raises(
        CertificatesUnavailable,
        match=exact(f"cannot fetch the ID token certificates from {certs.url}: HTTP 500"),
    ) as caught:
        iam(mint(key), environ)
    assert (caught.value.retryable, caught.value.status) == (True, 503)


def test_jwk_certificates_are_refused(key: Key, environ: dict, certs: CertsServer) -> None:
    certs.certs = {"keys": []}  # type: ignore[dict-item]  # a JWK set
    message = (
        f"cannot fetch the ID token certificates from {certs.url}: "
        "not a {key id: PEM certificate} map"
    )
    with pytest.raises(CertificatesUnavailable, match=exact(message)):
        iam(mint(key), environ)


@pytest.mark.parametrize(
    "url", ["http://certs.example.com/", "ftp://127.0.0.1/certs", "file:///etc/certs", "https://"]
)
def test_certs_url_must_be_https(key: Key, url: str) -> None:
    message = (
        "RETRAIN_ID_TOKEN_CERTS_URL: must be an https:// URL (http:// only for localhost), "
        f"got {url!r}"
    )
    with pytest.raises(ConfigError, match=exact(message)):
        iam(mint(key), {auth.CERTS_URL_ENV: url})


def test_google_auth_is_imported_only_when_a_token_is_verified() -> None:
    code = (
        "import sys; from retrain_trigger.auth import authenticate; "
        "from retrain_trigger.config import AuthConfig; "
        "authenticate(AuthConfig(mode='none'), headers={}, body=b'', url='/', environ={}); "
        "print(sorted(m for m in sys.modules if m.startswith(('google.auth', 'requests'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- hmac ----------------------------------------------------------------------------------------

BODY = b'{"kind":"code","commit_sha":"0123abc","image_uri":"us-docker.pkg.dev/p/r/train:1"}'


def sign(message: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed(headers: dict[str, str], body: bytes = BODY) -> Caller:
    return authenticate(
        AuthConfig(mode="hmac", hmac_secret=SECRET), headers=headers, body=body, url=URL, environ={}
    )


def test_hmac_valid() -> None:
    caller = signed({"X-Retrain-Signature": sign(BODY)})
    assert caller == Caller(mode="hmac", subject="hmac", detail="signed body")


@pytest.mark.parametrize(
    "header",
    [sign(BODY).upper(), "sha256=" + sign(BODY)[7:].upper(), f"  {sign(BODY)}  "],
    ids=["uppercase", "uppercase-hex", "spaces"],
)
def test_hmac_signature_is_case_insensitive(header: str) -> None:
    assert signed({"x-retrain-signature": header}).mode == "hmac"


def test_hmac_with_timestamp() -> None:
    ts = str(int(time.time()) - 60)
    headers = {"X-Retrain-Signature": sign(f"{ts}.".encode() + BODY), "X-Retrain-Timestamp": ts}
    assert signed(headers).detail == "signed body and timestamp"


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        pytest.param(
            {},
            BODY,
            "missing X-Retrain-Signature header: expected 'sha256=<hex HMAC-SHA256 of the body>'",
            id="missing",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(BODY, "another-secret-of-20")},
            BODY,
            "X-Retrain-Signature does not match the body",
            id="wrong-secret",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(BODY)},
            BODY + b" ",
            "X-Retrain-Signature does not match the body",
            id="body-changed",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(BODY)[7:]},
            BODY,
            "malformed X-Retrain-Signature header: expected 'sha256=' and 64 hex digits",
            id="no-prefix",
        ),
        pytest.param(
            {"X-Retrain-Signature": "sha1=" + "a" * 40},
            BODY,
            "malformed X-Retrain-Signature header: expected 'sha256=' and 64 hex digits",
            id="sha1",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(BODY)[:-2]},
            BODY,
            "malformed X-Retrain-Signature header: expected 'sha256=' and 64 hex digits",
            id="short",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(BODY) + "00"},
            BODY,
            "malformed X-Retrain-Signature header: expected 'sha256=' and 64 hex digits",
            id="long",
        ),
        pytest.param(
            {"X-Retrain-Signature": "sha256=" + "g" * 64},
            BODY,
            "malformed X-Retrain-Signature header: expected 'sha256=' and 64 hex digits",
            id="not-hex",
        ),
        pytest.param(
            {"X-Retrain-Signature": ""},
            BODY,
            "malformed X-Retrain-Signature header: expected 'sha256=' and 64 hex digits",
            id="empty",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(BODY) + ",sha256=" + "0" * 64},
            BODY,
            "malformed X-Retrain-Signature header: expected 'sha256=' and 64 hex digits",
            id="two-signatures",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(BODY), "X-Retrain-Timestamp": str(int(time.time()))},
            BODY,
            "X-Retrain-Signature does not match the body",
            id="timestamp-not-signed",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(b"1700000000." + BODY)},
            b"1700000000." + BODY,
            "a body starting with '<digits>.' must be signed with X-Retrain-Timestamp",
            id="timestamp-header-stripped",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(b"1." + BODY), "X-Retrain-Timestamp": "1.5"},
            BODY,
            "malformed X-Retrain-Timestamp header: expected unix seconds",
            id="timestamp-malformed",
        ),
        pytest.param(
            {"X-Retrain-Signature": sign(b"1." + BODY), "X-Retrain-Timestamp": "-1"},
            BODY,
            "malformed X-Retrain-Timestamp header: expected unix seconds",
            id="timestamp-negative",
        ),
        pytest.param(
            {
                "X-Retrain-Signature": sign(f"{int(time.time()) - 301}.".encode() + BODY),
                "X-Retrain-Timestamp": str(int(time.time()) - 301),
            },
            BODY,
            "signature is older than 300 seconds",
            id="timestamp-too-old",
        ),
        pytest.param(
            {
                "X-Retrain-Signature": sign(f"{int(time.time()) + 3600}.".encode() + BODY),
                "X-Retrain-Timestamp": str(int(time.time()) + 3600),
            },
            BODY,
            "X-Retrain-Timestamp is more than 300 seconds in the future",
            id="timestamp-in-the-future",
        ),
    ],
)
def test_hmac_refused(headers: dict[str, str], body: bytes, message: str) -> None:
    with pytest.raises(Unauthenticated, match=exact(message)) as caught:
        signed(headers, body)
    assert caught.value.status == 401
    assert SECRET not in str(caught.value)


def test_hmac_needs_a_secret() -> None:
    config = AuthConfig(mode="hmac", hmac_secret="short")
    message = "RETRAIN_HMAC_SECRET: hmac mode needs a secret of at least 16 characters"
    with pytest.raises(ConfigError, match=exact(message)):
        authenticate(config, headers={"X-Retrain-Signature": sign(BODY)}, body=BODY, url=URL)


# --- none ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "force", "detail"),
    [
        ({}, False, "anonymous (local development)"),
        ({"K_SERVICE": ""}, False, "anonymous (local development)"),
        ({"K_SERVICE": "retrain"}, True, "anonymous (forced on Cloud Run)"),
    ],
)
def test_none_allowed(environ: dict[str, str], force: bool, detail: str) -> None:
    config = AuthConfig(mode="none", force_none=force)
    caller = authenticate(config, headers={}, body=b"", url=URL, environ=environ)
    assert caller == Caller(mode="none", detail=detail)


def test_none_refused_on_cloud_run() -> None:
    with pytest.raises(
        Unauthenticated,
        match=exact(
            "anonymous access (auth mode 'none') is refused on Cloud Run and Cloud Functions "
            "(K_SERVICE is set): use auth mode iam or hmac, or set "
            "RETRAIN_ALLOW_ANONYMOUS_ON_CLOUD_RUN=true to force it"
        ),
    ):
        authenticate(
            AuthConfig(mode="none"),
            headers={"Authorization": "Bearer x.y.z"},
            body=b"",
            url=URL,
            environ={"K_SERVICE": "retrain", "K_REVISION": "retrain-00001"},
        )


def test_unknown_mode_is_a_configuration_error() -> None:
    message = "auth.mode: must be one of iam, hmac, none, got 'open'"
    with pytest.raises(ConfigError, match=exact(message)):
        authenticate(AuthConfig(mode="open"), headers={}, body=b"", url=URL, environ={})
