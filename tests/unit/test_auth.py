"""authenticate() in process: HMAC signatures, the certificates URL and the modes, on the fixed
clock of tests/authkit.py. ID tokens checked against certificates served on 127.0.0.1 are in
tests/integration/test_auth_certificates.py."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from retrain_trigger import auth
from retrain_trigger.auth import Caller, authenticate
from retrain_trigger.config import AuthConfig
from retrain_trigger.errors import ConfigError, Unauthenticated
from tests.authkit import (
    NOW,
    SECRET,
    URL,
    exact,
    iam,
    mint,
)
from tests.fakes.idtokens import Key

# --- keys, certificates and tokens ---------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> Key:
    return Key("kid-google-1")


# --- certificates --------------------------------------------------------------------------------


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
    ts = str(NOW - 60)
    headers = {"X-Retrain-Signature": sign(f"{ts}.".encode() + BODY), "X-Retrain-Timestamp": ts}
    assert signed(headers).detail == "signed body and timestamp"


@pytest.mark.parametrize(
    ("age", "message"),
    [
        (300, None),
        (301, "signature is older than 300 seconds"),
        (-300, None),
        (-301, "X-Retrain-Timestamp is more than 300 seconds in the future"),
    ],
)
def test_hmac_timestamp_window_is_measured_on_the_injected_clock(
    age: int, message: str | None
) -> None:
    ts = str(NOW)
    headers = {"X-Retrain-Signature": sign(f"{ts}.".encode() + BODY), "X-Retrain-Timestamp": ts}
    if message is None:
        assert signed(headers, now=NOW + age).mode == "hmac"
    else:
        with pytest.raises(Unauthenticated, match=exact(message)):
            signed(headers, now=NOW + age)


def test_hmac_is_independent_of_how_long_the_suite_has_run() -> None:
    """The request of the issue's flaky case, checked a day "later": still the same answer."""
    headers = {"X-Retrain-Signature": sign(BODY), "X-Retrain-Timestamp": str(NOW)}
    for now in (NOW, NOW + 299, NOW + 86_400):
        with pytest.raises(Unauthenticated) as caught:
            signed(headers, now=now)
        expected = (
            "X-Retrain-Signature does not match the body"
            if now - NOW <= 300
            else "signature is older than 300 seconds"
        )
        assert str(caught.value) == expected


def test_the_default_clock_is_the_machine_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``clock=``, authenticate() reads time.time() when called, not at import."""
    ts = str(NOW)
    headers = {"X-Retrain-Signature": sign(f"{ts}.".encode() + BODY), "X-Retrain-Timestamp": ts}
    config = AuthConfig(mode="hmac", hmac_secret=SECRET)
    monkeypatch.setattr(auth.time, "time", lambda: float(NOW + 10))
    assert authenticate(config, headers=headers, body=BODY, url=URL, environ={}).mode == "hmac"
    monkeypatch.setattr(auth.time, "time", lambda: float(NOW + 400))
    with pytest.raises(Unauthenticated, match=exact("signature is older than 300 seconds")):
        authenticate(config, headers=headers, body=BODY, url=URL, environ={})


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
            {"X-Retrain-Signature": sign(BODY), "X-Retrain-Timestamp": str(NOW)},
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
                "X-Retrain-Signature": sign(f"{NOW - 301}.".encode() + BODY),
                "X-Retrain-Timestamp": str(NOW - 301),
            },
            BODY,
            "signature is older than 300 seconds",
            id="timestamp-too-old",
        ),
        pytest.param(
            {
                "X-Retrain-Signature": sign(f"{NOW + 3600}.".encode() + BODY),
                "X-Retrain-Timestamp": str(NOW + 3600),
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
