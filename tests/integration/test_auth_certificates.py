"""authenticate(): ID tokens checked against certificates served on 127.0.0.1, and tokens whose
signature Cloud Run's front end removed. Tokens, clock and calls are in tests/authkit.py."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from retrain_trigger import auth
from retrain_trigger.auth import Caller, CertificatesUnavailable, authenticate
from retrain_trigger.config import AuthConfig
from retrain_trigger.errors import Forbidden, Unauthenticated
from tests.authkit import (
    FLUSH_URL,
    INVOKER,
    NOW,
    SECRET,
    SEND_BOTH,
    SERVICE,
    STRIPPED,
    URL,
    exact,
    iam,
    mint,
    tamper,
)
from tests.fakes.idtokens import CertsServer, Key, forge, strip

# --- keys, certificates and tokens ---------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> Key:
    return Key("kid-google-1")


@pytest.fixture(scope="module")
def other_key() -> Key:
    return Key("kid-google-2")


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
            lambda k, o: mint(k, now=NOW - 7200),
            "ID token has expired",
            id="expired",
        ),
        pytest.param(
            lambda k, o: mint(k, now=NOW + 600),
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


def test_both_headers_the_signed_authorization_is_verified(key: Key, environ: dict) -> None:
    """What the container sees of Cloud Build's call: X-Serverless-Authorization stripped by
    Cloud Run, Authorization signed and untouched."""
    token = mint(key)
    headers = {"X-Serverless-Authorization": f"Bearer {strip(token)}"}
    caller = iam(token, environ, headers=headers, allowed_invokers=(INVOKER,))
    assert caller == Caller(
        mode="iam", subject="109876543210", email=INVOKER, detail=f"audience {SERVICE}"
    )
    with pytest.raises(Unauthenticated, match=exact("ID token signature is invalid")):
        iam(tamper(token), environ, headers=headers, allowed_invokers=(INVOKER,))


def test_a_signed_token_sent_straight_to_the_container_verifies(key: Key, certs: Any) -> None:
    local = {auth.CERTS_URL_ENV: certs.url}  # no K_SERVICE: a container run locally
    assert iam(mint(key), local, allowed_invokers=(INVOKER,)).email == INVOKER
    assert iam(mint(key), local, url=FLUSH_URL, allowed_invokers=(INVOKER,)).email == INVOKER


def test_a_stripped_token_on_the_run_path_asks_for_both_headers(
    key: Key, environ: dict, certs: CertsServer
) -> None:
    message = f"Cloud Run removed the signature of the ID token: {SEND_BOTH}"
    with pytest.raises(Unauthenticated, match=exact(message)) as caught:
        iam(strip(mint(key)), environ, allowed_invokers=(INVOKER,))
    assert caught.value.status == 401
    for url in (SERVICE + "/flushx", SERVICE + "/other", SERVICE + "/flush/more"):
        with pytest.raises(Unauthenticated, match=exact(message)):
            iam(strip(mint(key)), environ, url=url, allowed_invokers=(INVOKER,))
    assert certs.hits == 0


def test_authorization_missing_with_the_serverless_header_asks_for_both(
    key: Key, environ: dict
) -> None:
    headers = {"X-Serverless-Authorization": f"Bearer {strip(mint(key))}"}
    with pytest.raises(Unauthenticated, match=exact(f"missing Authorization header: {SEND_BOTH}")):
        iam(None, environ, headers=headers, allowed_invokers=(INVOKER,))


@pytest.mark.parametrize("url", [FLUSH_URL, FLUSH_URL + "/", FLUSH_URL + "?x=1"])
def test_scheduler_flush_with_the_token_cloud_run_checked(
    key: Key, environ: dict, certs: CertsServer, url: str
) -> None:
    caller = iam(strip(mint(key)), environ, url=url, allowed_invokers=(INVOKER,))
    assert caller == Caller(
        mode="iam",
        subject="109876543210",
        email=INVOKER,
        detail=f"audience {SERVICE}, signature checked by Cloud Run",
    )
    assert certs.hits == 0


@pytest.mark.parametrize(
    ("token", "environ_extra", "headers", "config", "error", "message"),
    [
        pytest.param(
            lambda k: strip(mint(k)),
            {"K_SERVICE": ""},
            {},
            {"allowed_invokers": (INVOKER,)},
            Unauthenticated,
            f"{STRIPPED}; only Cloud Run's front end removes signatures, and this is not Cloud "
            "Run (K_SERVICE is not set): send the signed ID token",
            id="not-on-cloud-run",
        ),
        pytest.param(
            lambda k: strip(mint(k)),
            {},
            {"X-Serverless-Authorization": "Bearer a.b.SIGNATURE_REMOVED_BY_GOOGLE"},
            {"allowed_invokers": (INVOKER,)},
            Unauthenticated,
            f"{STRIPPED}, and Cloud Run checked X-Serverless-Authorization instead: "
            "send the signed ID token in Authorization",
            id="cloud-run-checked-the-other-header",
        ),
        pytest.param(
            lambda k: strip(mint(k)),
            {},
            {},
            {},
            Unauthenticated,
            f"{STRIPPED}: accepted on /flush only when RETRAIN_ALLOWED_INVOKERS names the callers",
            id="no-allowed-invokers",
        ),
        pytest.param(
            lambda k: strip(mint(k, email="intruder@other.iam.gserviceaccount.com")),
            {},
            {},
            {"allowed_invokers": (INVOKER,)},
            Forbidden,
            "caller intruder@other.iam.gserviceaccount.com is not an allowed invoker",
            id="outsider",
        ),
        pytest.param(
            lambda k: strip(mint(k, email_verified=False)),
            {},
            {},
            {"allowed_invokers": (INVOKER,)},
            Forbidden,
            f"caller {INVOKER} has no verified email",
            id="unverified-email",
        ),
        pytest.param(
            lambda k: strip(mint(k, aud="https://other-service-uc.a.run.app")),
            {},
            {},
            {"allowed_invokers": (INVOKER,), "audience": SERVICE},
            Unauthenticated,
            f"ID token audience does not match this service (expected {SERVICE})",
            id="wrong-audience",
        ),
        pytest.param(
            lambda k: strip(mint(k, now=NOW - 7200)),
            {},
            {},
            {"allowed_invokers": (INVOKER,)},
            Unauthenticated,
            "ID token has expired",
            id="expired",
        ),
        pytest.param(
            lambda k: strip(mint(k, iss="https://securetoken.google.com/p")),
            {},
            {},
            {"allowed_invokers": (INVOKER,)},
            Unauthenticated,
            "ID token issuer is not Google (accounts.google.com)",
            id="wrong-issuer",
        ),
        pytest.param(
            lambda k: strip(mint(k, header={"alg": "HS256"})),
            {},
            {},
            {"allowed_invokers": (INVOKER,)},
            Unauthenticated,
            "ID token must be signed with RS256",
            id="hs256",
        ),
        pytest.param(
            lambda k: "bm90IGpzb24.bm90IGpzb24.SIGNATURE_REMOVED_BY_GOOGLE",
            {},
            {},
            {"allowed_invokers": (INVOKER,)},
            Unauthenticated,
            "malformed ID token: not a JWT",
            id="not-json",
        ),
    ],
)
def test_stripped_token_on_flush_refused(
    key: Key,
    environ: dict,
    token: Any,
    environ_extra: dict[str, str],
    headers: dict[str, str],
    config: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=exact(message)):
        iam(token(key), {**environ, **environ_extra}, url=FLUSH_URL, headers=headers, **config)


def test_a_forged_unsigned_token_never_starts_a_run(environ: dict) -> None:
    """Were the service ever made public, nothing would strip or check tokens before the
    container: a forged token must still be refused on every path that names a run."""
    claims = {
        "iss": "https://accounts.google.com",
        "aud": SERVICE,
        "email": INVOKER,
        "email_verified": True,
        "iat": NOW,
        "exp": NOW + 3600,
    }
    for url in (URL, SERVICE + "/anything"):
        with pytest.raises(Unauthenticated, match="Cloud Run removed the signature"):
            iam(forge(claims), environ, url=url, allowed_invokers=(INVOKER,))


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


def signed(headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> Caller:
    return authenticate(
        AuthConfig(mode="hmac", hmac_secret=SECRET),
        headers=headers,
        body=body,
        url=URL,
        environ={},
        clock=lambda: float(now),
    )


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
