"""Google-style ID tokens for tests: RSA keys with certificates, tokens signed like Google's, and a
certificate server on 127.0.0.1 that answers like https://www.googleapis.com/oauth2/v1/certs.

Nothing here reads the wall clock unless asked to: :func:`mint` takes the issue time ``now``, and
the certificates' validity (which no verifier of ID tokens checks) is a fixed, wide range.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

__all__ = ["REMOVED_SIGNATURE", "CertsServer", "Key", "forge", "mint", "strip"]

REMOVED_SIGNATURE = "SIGNATURE_REMOVED_BY_GOOGLE"
_VALID_FROM = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_VALID_UNTIL = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """An RSA key and a self-signed certificate, published under ``kid``."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_VALID_FROM)
            .not_valid_after(_VALID_UNTIL)
            .sign(self.private, hashes.SHA256())
        )
        self.cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message, padding.PKCS1v15(), hashes.SHA256())


def mint(
    key: Key,
    *,
    now: float,
    aud: str | None,
    email: str | None,
    kid: str | None = "",
    header: dict[str, Any] | None = None,
    lifetime: int = 3600,
    **claims: Any,
) -> str:
    """An ID token shaped like Google's, issued at ``now``; a claim given as None is left out.

    ``kid=""`` names the signing key's id, ``kid=None`` leaves the key id out.
    """
    payload: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": aud,
        "sub": "109876543210",
        "azp": "109876543210",
        "email": email,
        "email_verified": True,
        "iat": int(now),
        "exp": int(now) + lifetime,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    head: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        head["kid"] = key.kid if kid == "" else kid
    head.update(header or {})
    signed = _b64(json.dumps(head).encode()) + "." + _b64(json.dumps(payload).encode())
    return signed + "." + _b64(key.sign(signed.encode()))


def strip(token: str) -> str:
    """The token as Cloud Run hands it to the container after checking it."""
    head, payload, _ = token.split(".")
    return f"{head}.{payload}.{REMOVED_SIGNATURE}"


def forge(claims: dict[str, Any], *, kid: str = "kid-google-1") -> str:
    """A token that was never signed, written to look stripped: what an attacker can send."""
    head = _b64(json.dumps({"alg": "RS256", "kid": kid, "typ": "JWT"}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}.{REMOVED_SIGNATURE}"


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
