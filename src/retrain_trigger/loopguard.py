"""The loop guard: a pipeline never retrains on its own output.

A pipeline that writes where a data route looks would retrain on its own output (a model registry
inside ``data/**`` starts a run at every registration). So, when the configuration loads,
:func:`written_locations` works out every ``gs://`` location each route's pipeline writes (its
root, ``writes``, or its fixed ``gs://`` parameters that hold no data source) and warns about data
globs that can see one; and for each event, :func:`skip_reason` skips objects under any of them,
under ``ignore_prefixes``, or stamped by a pipeline run. Locations match on ``/`` boundaries
(:func:`under`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from retrain_trigger.errors import ConfigError

if TYPE_CHECKING:
    from retrain_trigger.config import Config, Route
    from retrain_trigger.model import Trigger

# Objects carrying this metadata key were written by a pipeline run.
GENERATED_METADATA_KEYS = ("retrain-trigger-run", "kfp-run-id")


def under(uri: str, location: str) -> bool:
    """Whether ``uri`` is ``location`` or lies below it, on ``/`` boundaries:
    ``gs://b/models/v1`` is under ``gs://b/models``, ``gs://b/models-old/v1`` is not."""
    base = location.rstrip("/")
    return bool(base) and (uri == base or uri.startswith(base + "/"))


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard, cut back to the last ``/``."""
    cut = len(pattern)
    for char in "*?[":
        pos = pattern.find(char)
        if pos != -1:
            cut = min(cut, pos)
    prefix = pattern[:cut]
    if cut < len(pattern):
        prefix = prefix[: prefix.rfind("/") + 1]
    return prefix


def skip_reason(config: Config, trigger: Trigger) -> str:
    """The reason this object must not trigger (written by a pipeline), or ``""``.

    Covers every ``gs://`` location any route's pipeline writes to (``Route.written``: the
    pipeline root, ``writes``, and fixed ``gs://`` parameters that are not a data source), matched
    on path boundaries, then ``ignore_prefixes`` and the metadata pipelines stamp on outputs.
    """
    uri = trigger.gcs_uri
    for route in config.routes:
        for location, origin in route.written:
            if under(uri, location):
                return f"loop guard: {uri} is under {location} ({origin} of route {route.name})"
    for prefix in config.ignore_prefixes:
        if uri.startswith(prefix):
            return f"loop guard: {uri} is under ignored prefix {prefix}"
    for key in GENERATED_METADATA_KEYS:
        if key in trigger.metadata:
            return f"loop guard: object was written by a pipeline run (metadata {key})"
    return ""


def written_locations(
    source: str, routes: tuple[Route, ...]
) -> tuple[tuple[Route, ...], tuple[str, ...]]:
    """Each route with ``written`` filled in, and warnings about data globs that see them.

    Without ``writes``, every fixed ``gs://`` parameter counts as written by the pipeline (a
    model registry, an export folder ...) unless it names a data source: a route's dataset or
    a folder holding one. A route's data may never lie wholly under a written location.
    """
    sources = [loc for route in routes for loc in _data_locations(route)]
    warnings: list[str] = []
    out = []
    for route in routes:
        written: list[tuple[str, str]] = []
        if route.pipeline_root.startswith("gs://"):
            written.append((route.pipeline_root, "pipeline_root"))
        if route.writes is not None:
            written += [(uri, "writes") for uri in route.writes]
        else:
            for name, value in route.parameters.items():
                if not isinstance(value, str) or not value.startswith("gs://") or "{" in value:
                    continue
                if any(under(loc, value) for loc in sources):
                    warnings.append(
                        f"route {route.name}: parameter {name} ({value}) holds a data source, so "
                        "it is not counted as written by the pipeline; if the pipeline writes "
                        "below it, list those folders under writes"
                    )
                    continue
                written.append((value, f"parameter {name}"))
        out.append(msgspec.structs.replace(route, written=tuple(dict.fromkeys(written))))
    for route in out:
        locations = _data_locations(route, includes_only=True)
        if not locations:
            continue
        dead = 0
        for location in locations:
            covering = ""
            for other in out:
                for uri, origin in other.written:
                    what = f"{uri} ({origin} of route {other.name})"
                    if under(location, uri):
                        covering = covering or what
                    elif under(uri, location):
                        warnings.append(
                            f"route {route.name}: its data globs can see {what}; objects there "
                            "never trigger (loop guard)"
                        )
            if covering:
                dead += 1
                warnings.append(
                    f"route {route.name}: data under {location} never triggers: it lies under "
                    f"{covering}, which the loop guard skips"
                )
        if dead == len(locations):
            raise ConfigError(
                "every object this route's data rule matches lies under a location its pipeline "
                "or another route's writes (see the loop guard in the README); move the data, "
                "or set writes to the folders the pipeline really writes",
                source=source,
                field=f"{route.where}.data",
            )
    return tuple(out), tuple(dict.fromkeys(warnings))


def _data_locations(route: Route, *, includes_only: bool = False) -> list[str]:
    """``gs://`` prefixes a route's data comes from: each include's literal prefix (and ``uri``)."""
    if route.data is None:
        return []
    rule = route.data
    locations = [f"gs://{rule.bucket}/{literal_prefix(p)}" for p in rule.include]
    if rule.uri and not includes_only:
        locations.append(rule.uri)
    return locations
