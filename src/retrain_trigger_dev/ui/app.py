"""The status page: a read-only Flask application over :class:`~.data.StatusData`.

Pages: ``/`` (the deployment: routes, recent decisions, open windows, the queue, paused routes),
``/routes/<route>`` (its timeline of decisions, paged and filterable by outcome and object; open
windows; the queued run; runs; the champion's metric over time), ``/decisions`` (the timeline of
every route, filterable by route too) and ``/why?object=gs://bucket/object``.

Safety: Jinja autoescapes every template (object names are user input and are shown as text);
only GET and HEAD are served; each answer carries a strict Content-Security-Policy (scripts,
styles and images from this origin only, no inline script or style, no framing, forms only to
this origin) and ``no-store``. Query parameters are checked (known outcome, bounded text without
control characters, well-formed page tokens): anything else is a 400 page that says what was wrong.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from flask import Flask, Response, abort, render_template, request, url_for

from retrain_trigger.errors import ConfigError, StoreError
from retrain_trigger.store.base import MAX_OBJECT_FILTER, check_route
from retrain_trigger_dev.ui import chart
from retrain_trigger_dev.ui.data import (
    MAX_URI_CHARS,
    OUTCOMES,
    RECENT_DECISIONS,
    StatusData,
    clean_text,
)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
MAX_TOKEN_CHARS = 200


class BadRequest(ValueError):
    """A query parameter the page cannot use; shown on a 400 page."""


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _span(seconds: float | None) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if seconds is None:
        return ""
    total = round(abs(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    if total < 86400:
        return f"{total // 3600} h {total % 3600 // 60} min"
    return f"{total // 86400} d {total % 86400 // 3600} h"


def _size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def _basename(path: str) -> str:
    """The last part of a path or URI (the whole is in the element's title)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] or str(path)


def _arg(name: str, max_bytes: int) -> str:
    try:
        return clean_text(request.args.get(name), name, max_bytes)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _outcome() -> str:
    outcome = _arg("outcome", 32)
    if outcome and outcome not in OUTCOMES:
        raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
    return outcome


def create_app(data: StatusData) -> Flask:
    """The application over one deployment's reads."""
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.jinja_env.autoescape = True  # every template, whatever its name
    app.jinja_env.filters.update(when=_when, span=_span, size=_size, basename=_basename)
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 300
    app.extensions["retrain_status"] = data

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "deployment": data.deployment(),
            "route_names": data.route_names(),
            "outcomes": OUTCOMES,
            "now": data.clock(),
        }

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> tuple[str, int]:
        return render_template("error.html", status=400, message=str(exc)), 400

    @app.errorhandler(StoreError)
    def _store_down(exc: StoreError) -> tuple[str, int]:
        message = f"the state store could not be read: {exc}"
        return render_template("error.html", status=503, message=message), 503

    @app.errorhandler(404)
    def _not_found(exc: Any) -> tuple[str, int]:
        message = getattr(exc, "description", "") or "no such page"
        return render_template("error.html", status=404, message=message), 404

    @app.errorhandler(405)
    def _not_allowed(exc: Any) -> tuple[str, int]:
        return render_template("error.html", status=405, message="the page is read-only"), 405

    @app.errorhandler(500)
    def _failed(exc: Any) -> tuple[str, int]:  # the exception is in the server's log
        message = "the page could not be made; the server's log has the error"
        return render_template("error.html", status=500, message=message), 500

    def timeline(route: str | None, endpoint: str, values: dict[str, Any]) -> dict[str, Any]:
        outcome = _outcome()
        contains = _arg("object", MAX_OBJECT_FILTER)
        token = _arg("page", MAX_TOKEN_CHARS)
        try:
            rows, next_token = data.decisions(
                route=route, outcome=outcome, object_contains=contains, page_token=token
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        kept = {**values, "outcome": outcome or None, "object": contains or None}
        return {
            "rows": rows,
            "outcome": outcome,
            "contains": contains,
            "filtered": bool(outcome or contains),
            "newest_url": url_for(endpoint, **kept) if token else "",
            "older_url": url_for(endpoint, **kept, page=next_token) if next_token else "",
        }

    @app.get("/")
    def overview() -> str:
        pauses = data.pauses()
        routes = [data.summary(route, pauses) for route in data.config.routes]
        recent, _ = data.decisions(limit=RECENT_DECISIONS)
        return render_template(
            "overview.html",
            routes=routes,
            recent=recent,
            pauses=pauses,
            runs=data.runs(limit=10),
        )

    @app.get("/routes/<name>")
    def route_page(name: str) -> str:
        route = data.route(name)
        if route is None:
            abort(404, description=f"no route {name!r} in this deployment's configuration")
        pauses = data.pauses()
        try:
            runs = data.runs(name, page_token=_arg("runs_page", MAX_TOKEN_CHARS))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        champion = data.champion(name)
        return render_template(
            "route.html",
            route=data.summary(route, pauses),
            timeline=timeline(name, "route_page", {"name": name}),
            runs=runs,
            champion=champion,
            chart=chart.build(champion.points),
        )

    @app.get("/decisions")
    def decisions() -> str:
        route = _arg("route", 100)
        if route:
            try:
                check_route(route)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        return render_template(
            "decisions.html",
            route=route,
            timeline=timeline(route or None, "decisions", {"route": route or None}),
        )

    @app.get("/why")
    def why() -> str:
        uri = _arg("object", MAX_URI_CHARS)
        if not uri:
            return render_template("why.html", uri="", report=None)
        try:
            report = data.why(uri)
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        return render_template("why.html", uri=uri, report=report)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    return app


def app_for_config(config: Any) -> Flask:
    """The application over a configuration's store and backend (opened on first use)."""
    from retrain_trigger.service import Service

    return create_app(StatusData.from_service(Service(config), clock=time.time))


def app_from_config(overrides: dict[str, str] | None = None) -> Flask:
    """The application over the configuration the settings name (as the CLI loads it)."""
    from retrain_trigger.config import load_config

    return app_for_config(load_config(overrides=overrides or {}))
