"""Serving the status page: a threaded WSGI server on one address, in the foreground (``ui``)
or in a background thread (``up``).

It binds 127.0.0.1 unless told otherwise; port 0 takes any free port, and the address actually
bound is what :attr:`UIServer.url` reports (so that callers never race for a port).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Quiet(WSGIRequestHandler):
    """No line per request (``up`` prints decisions and runs on the same terminal)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class UIServer:
    """The status page's WSGI server (werkzeug's, one thread per request). ``log_requests``:
    one line per request on stderr (werkzeug's log)."""

    def __init__(
        self,
        app: Any,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        log_requests: bool = True,
    ) -> None:
        handler = WSGIRequestHandler if log_requests else _Quiet
        # Bound here, so that a port in use is an OSError for the caller (werkzeug's own bind
        # prints and exits the process instead).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=128)
        try:
            self._server = make_server(
                host,
                self._socket.getsockname()[1],
                app,
                threaded=True,
                request_handler=handler,
                fd=self._socket.fileno(),
            )
        except BaseException:
            self._socket.close()
            raise
        self.host = host
        self.port = int(self._socket.getsockname()[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> UIServer:
        """Serves in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="retrain-status-page", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving (the background thread, if any) and closes the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
        self._socket.close()
