"""A stand-in for Cloud Run's front end: the part of Google's serving path between a caller and a
private service's container, as Google documents it, on 127.0.0.1 over TLS.

What it does with each request, and where Google says so:

- **Routing.** Requests are routed by ``Host``; a host that is not one of the service's answers
  404. TLS ends here; the container gets plain HTTP with ``X-Forwarded-Proto: https``.
- **IAM check** (https://cloud.google.com/run/docs/authenticating/service-to-service#acquire-token):
  the ID token is taken from ``X-Serverless-Authorization`` when that header is present, otherwise
  from ``Authorization`` (``Bearer <token>``). It must be signed by Google (RS256, here: by one of
  the test keys in ``certs``), issued by ``accounts.google.com``, unexpired, and minted for one of
  the service's URLs or custom audiences
  (https://cloud.google.com/run/docs/configuring/custom-audiences); its principal
  (``serviceAccount:<email>`` or ``user:<email>``) must hold ``roles/run.invoker`` on the service,
  i.e. be one of ``invokers``. No token: 403; a token that fails those checks: 401; a valid token
  of someone who is not an invoker: 403
  (https://cloud.google.com/run/docs/troubleshooting#unauthorized-client). The container is never
  reached in those cases.
- **Signature removal** (same page, and
  https://cloud.google.com/run/docs/troubleshooting#signature-removed): the header that was
  checked reaches the container as ``Bearer <header>.<payload>.SIGNATURE_REMOVED_BY_GOOGLE``. The
  other header, when both were sent, passes on unchanged.
- **Headers** (https://cloud.google.com/functions/docs/reference/headers): hop-by-hop headers
  (``Connection``, ``Keep-Alive``, ``Proxy-Authorization``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``) and any ``X-Google-*`` header a client sends are dropped;
  ``X-Cloud-Trace-Context`` (when absent), ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are
  added; everything else, the body included, is forwarded as sent.
- ``public=True`` models ``allUsers`` holding ``roles/run.invoker`` (or the invoker check turned
  off): no token is checked or altered, so whatever the caller wrote reaches the container.

``exchanges`` records, per request, the status the caller got and the headers the container saw.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import json
import secrets
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

__all__ = ["REMOVED_SIGNATURE", "Exchange", "FakeCloudRun"]

REMOVED_SIGNATURE = "SIGNATURE_REMOVED_BY_GOOGLE"
SERVERLESS_AUTHORIZATION = "X-Serverless-Authorization"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
CLOCK_SKEW = 30


@dataclass
class Exchange:
    """One request through the front end."""

    method: str
    path: str
    status: int
    reason: str = ""
    checked_header: str = ""
    forwarded: dict[str, str] = field(default_factory=dict)

    @property
    def reached_container(self) -> bool:
        return bool(self.forwarded)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tls_files(hosts: list[str], folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the service's hosts, and its key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "frontend.pem", folder / "frontend.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class FakeCloudRun:
    """Cloud Run's front end for one private service whose container listens at ``upstream``.

    ``service_urls`` are the service's ``https://…run.app`` URLs (each is an accepted audience and
    a routed host); ``invokers`` are the IAM members holding ``roles/run.invoker``; ``certs`` maps
    key ids to the PEM certificates of the keys that "Google" signs ID tokens with.
    """

    def __init__(
        self,
        upstream: str,
        *,
        service_urls: Iterable[str],
        invokers: Iterable[str],
        certs: Mapping[str, str],
        custom_audiences: Iterable[str] = (),
        public: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstream = urlsplit(upstream)
        self.service_urls = [u.rstrip("/") for u in service_urls]
        self.hosts = [urlsplit(u).hostname or "" for u in self.service_urls]
        self.invokers = set(invokers)
        self.certs = dict(certs)
        self.audiences = {a.rstrip("/") for a in [*self.service_urls, *custom_audiences]}
        self.public = public
        self.clock = clock
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._folder = Path(tempfile.mkdtemp(prefix="fake-cloud-run-"))
        self.ca_file, key_file = _tls_files(self.hosts, self._folder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeCloudRun:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this front end's certificate."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """Sends a request for ``url`` (one of the service's URLs plus a path) through this
        front end, the way a client resolving the service's host to it would."""
        parts = urlsplit(url)
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=timeout, context=self._sni_context(parts.hostname)
        )
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", parts.netloc)
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def _sni_context(self, hostname: str | None) -> ssl.SSLContext:
        context = self.client_context()
        # The connection goes to 127.0.0.1; the certificate names the service's host.
        context.check_hostname = False
        return context

    # -- the front end -----------------------------------------------------------------------

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def _check(self, headers: Mapping[str, str]) -> tuple[str, str]:
        """The header Cloud Run checks and its token, or _Refused (401/403)."""
        name = SERVERLESS_AUTHORIZATION if SERVERLESS_AUTHORIZATION.lower() in headers else ""
        name = name or ("Authorization" if "authorization" in headers else "")
        if not name:
            raise _Refused(403, "no ID token")
        parts = headers[name.lower()].split()
        if len(parts) != 2 or parts[0].lower() != "bearer" or parts[1].count(".") != 2:
            raise _Refused(401, f"{name} is not 'Bearer <ID token>'")
        token = parts[1]
        claims = self._verified_claims(token)
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise _Refused(403, "the token names no principal")
        kind = "serviceAccount" if email.endswith(".gserviceaccount.com") else "user"
        if f"{kind}:{email}" not in self.invokers:
            raise _Refused(403, f"{kind}:{email} lacks roles/run.invoker")
        return name, token

    def _verified_claims(self, token: str) -> dict[str, Any]:
        head, payload, signature = token.split(".")
        try:
            header = json.loads(_b64decode(head))
            claims = json.loads(_b64decode(payload))
            raw_signature = _b64decode(signature)
        except ValueError:
            raise _Refused(401, "not a JWT") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _Refused(401, "not a JWT")
        pem = self.certs.get(str(header.get("kid")))
        if header.get("alg") != "RS256" or pem is None:
            raise _Refused(401, "not signed by a Google key")
        public_key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        try:
            public_key.verify(
                raw_signature, f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise _Refused(401, "bad signature") from None
        now = self.clock()
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise _Refused(401, "not issued by Google")
        if not now - CLOCK_SKEW <= float(claims.get("exp", 0)) or now + CLOCK_SKEW < float(
            claims.get("iat", 0)
        ):
            raise _Refused(401, "expired or not yet valid")
        audience = claims.get("aud")
        if not isinstance(audience, str) or audience.rstrip("/") not in self.audiences:
            raise _Refused(401, f"audience {audience!r} is not this service")
        return claims

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _refuse(self, status: int, reason: str, checked: str = "") -> None:
                front._record(Exchange(self.command, self.path, status, reason, checked))
                title = "401 Unauthorized" if status == 401 else "403 Forbidden"
                text = (
                    "Your client does not have permission to the requested URL"
                    if status == 401
                    else f"Your client does not have permission to get URL {self.path} from "
                    "this server"
                )
                html = f"<html><head><title>{title}</title></head><body>{text}</body></html>"
                headers = {"Content-Type": "text/html; charset=UTF-8"}
                if status == 401:
                    headers["WWW-Authenticate"] = (
                        'Bearer error="invalid_token" '
                        'error_description="The access token could not be verified"'
                    )
                self._answer(status, html.encode(), headers)

            def _proxy(self) -> None:
                body = self._body()
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                if host not in front.hosts:
                    front._record(Exchange(self.command, self.path, 404, "unknown host"))
                    self._answer(404, b"<html>404 Not Found</html>", {"Content-Type": "text/html"})
                    return
                received = {k.lower(): v for k, v in self.headers.items()}
                checked = ""
                if not front.public:
                    try:
                        checked, token = front._check(received)
                    except _Refused as refused:
                        self._refuse(refused.status, refused.reason)
                        return
                    head, payload, _ = token.split(".")
                    received[checked.lower()] = f"Bearer {head}.{payload}.{REMOVED_SIGNATURE}"
                forwarded = {
                    k: v
                    for k, v in received.items()
                    if k not in HOP_BY_HOP and not k.startswith("x-google-")
                }
                forwarded.setdefault(
                    "x-cloud-trace-context", f"{secrets.token_hex(16)}/{secrets.randbits(63)};o=1"
                )
                client = self.client_address[0]
                previous = forwarded.get("x-forwarded-for")
                forwarded["x-forwarded-for"] = f"{previous}, {client}" if previous else client
                forwarded["x-forwarded-proto"] = "https"
                forwarded["content-length"] = str(len(body))
                upstream = http.client.HTTPConnection(
                    front.upstream.hostname or "127.0.0.1", front.upstream.port or 80, timeout=120
                )
                try:
                    upstream.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in forwarded.items():
                        upstream.putheader(name, value)
                    upstream.endheaders(body)
                    response = upstream.getresponse()
                    answer = response.read()
                    front._record(
                        Exchange(self.command, self.path, response.status, "", checked, forwarded)
                    )
                    self._answer(response.status, answer, dict(response.getheaders()))
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _proxy

        return Handler
