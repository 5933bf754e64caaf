"""What the configuration checks refuse when it loads (``check``, a cold start), with the fix:
a glob that cannot compile or match, a marker its own route drops, a ``{placeholder}`` that can
never convert to its parameter's type. Each of these would otherwise fail every event."""

from __future__ import annotations

import re
from typing import Any

from retrain_trigger.globs import glob_match, glob_regex

# --------------------------------------------------------------------------- glob refusals
# A glob is compiled on every event (rules.glob_regex); one that cannot compile, or cannot match
# anything the route is meant for, is refused here, when the file loads, with the fix, so that no
# event is ever answered with an internal error because of the configuration.


def glob_problem(pattern: str, bucket: str = "") -> str:
    """Why ``pattern`` cannot work as an object glob, with its fix; ``""`` when it can."""
    if "://" in pattern:
        scheme, _, rest = pattern.partition("://")
        named, _, name = rest.partition("/")
        fix = f"write {name or '**'!r}" + (f" and set bucket: {named}" if named != bucket else "")
        return (
            f"{pattern!r} is a {scheme}:// URI, but globs match object names inside the route's "
            f"bucket: {fix}"
        )
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            end = pattern.find("]", i + 1)  # as rules.glob_regex reads it
            if end == -1:
                return (
                    f"{pattern!r} opens a character class with '[' at position {i} that is "
                    "never closed: add the ']' (or write '[[]' for a literal '[')"
                )
            body = pattern[i + 1 : end].removeprefix("!")
            if not body:
                return (
                    f"{pattern!r} has an empty character class at position {i}, which matches "
                    "nothing: list the characters between '[' and ']'"
                )
            for low, high in re.findall(r"(.)-(.)", body):
                if low > high:
                    return (
                        f"{pattern!r}: the range {low}-{high} in [{body}] is out of order and "
                        f"matches nothing: write [{high}-{low}]"
                    )
            i = end
        i += 1
    try:
        glob_regex(pattern)
    except re.error as exc:
        return f"{pattern!r} is not a valid glob: {exc}"
    return ""


def _samples(pattern: str, filler: str) -> str:
    """An object name the glob matches: wildcards filled with ``filler``, a class with its first
    character; ``""`` when the glob is too intricate to sample (a negated class)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            i += 3
            continue
        char = pattern[i]
        if char == "*" or char == "?":
            out.append(filler or "x" if char == "?" else filler)
            i += 2 if pattern.startswith("**", i) else 1
            continue
        if char == "[":
            end = pattern.find("]", i + 1)
            body = pattern[i + 1 : end]
            if body.startswith("!") or not body:
                return ""
            out.append(body[0])
            i = end + 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def marker_problem(marker: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    """Why a marker route's marker can never start a run (no include matches it, or its own
    exclude drops it); ``""`` when it can or the globs are too intricate to tell."""
    matched: list[str] = []
    for pattern in include:
        for filler in ("", "x"):
            sample = _samples(pattern, filler)
            if not sample:
                return ""
            folder = sample.rpartition("/")[0]
            for candidate in (f"{folder}/{marker}".lstrip("/"), f"{sample}/{marker}".lstrip("/")):
                if glob_match(candidate, pattern):
                    matched.append(candidate)
    if not matched:
        return (
            f"no include pattern matches the marker {marker!r} ({', '.join(include)}): the "
            f"marker object never arrives, so no run ever starts; add an include such as "
            f"'{_literal(include[0])}**' or name the marker the includes match"
        )
    for candidate in matched:
        if not any(glob_match(candidate, pattern) for pattern in exclude):
            return ""
    hits = [p for p in exclude if any(glob_match(c, p) for c in matched)]
    return (
        f"the route's own exclude {', '.join(map(repr, hits))} drops its marker {marker!r} "
        f"(e.g. {matched[0]}), so no run ever starts: remove the marker from exclude"
    )


def _literal(pattern: str) -> str:
    from retrain_trigger.loopguard import literal_prefix

    return literal_prefix(pattern)


# Placeholders whose value is always a whole number (the others are text, or empty for the
# triggers that lack them).
NUMERIC_FIELDS = frozenset({"size", "generation"})


def placeholder_problem(name: str, kind: str, value: str) -> str:
    """Why ``value`` (a parameter with ``{placeholders}``) can never convert to the pipeline
    parameter's declared ``kind``, with the fix; ``""`` when it can (or may)."""
    found = re.findall(r"{([a-z_]+)}", value)
    if not found or kind == "STRING":
        return ""
    wanted = {"NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number"}.get(kind)
    if wanted and value.strip() in {f"{{{f}}}" for f in NUMERIC_FIELDS}:
        return ""
    what = ", ".join(f"{{{f}}}" for f in found)
    numeric = " or ".join(f"'{{{f}}}'" for f in sorted(NUMERIC_FIELDS))
    if wanted:
        fix = f"set a fixed {wanted.split()[-1]}, or use exactly {numeric}"
    else:
        fix = f"set a fixed {kind.lower()} value, or declare the parameter as a string"
    return (
        f"parameter {name!r} is {wanted or kind.lower()} in the pipeline, but {value!r} fills "
        f"it with {what}, which is text: every run would be refused; {fix}"
    )


# --------------------------------------------------------------------------- warnings
# What loads but probably does not do what was meant: ``check`` prints these, the functions log
# them once at start.

_CODE_FIELDS = ("commit_sha", "image_uri", "build_id", "branch")


def route_warnings(source: str, route: Any) -> list[str]:
    """Warnings about one route's placeholders and data rule, each naming the field and the fix."""
    out: list[str] = []
    where = f"{source}: {route.where}"
    rule = route.data
    window = rule is not None and rule.mode == "window"
    used: dict[str, str] = {}
    for name, value in route.parameters.items():
        for field in re.findall(r"{([a-z_]+)}", value) if isinstance(value, str) else ():
            used.setdefault(field, name)
    if "manifest_uri" in used and not window:
        out.append(
            f"{where}.parameters.{used['manifest_uri']}: {{manifest_uri}} is empty unless "
            "data.mode is window; set data.mode: window, or use {data_uri}"
        )
    if window and "manifest_uri" not in used and "data_uri" not in used:
        out.append(
            f"{where}.parameters: a window route's run is told which objects its window holds "
            "only through {manifest_uri} (or {data_uri}); no parameter uses either"
        )
    if not route.code:
        for field in _CODE_FIELDS:
            if field in used and (rule is not None or route.model):
                out.append(
                    f"{where}.parameters.{used[field]}: {{{field}}} is empty for data and model "
                    "changes, and the route takes no code change (code: false)"
                )
                break
    if rule is not None and rule.mode == "object":
        for i, pattern in enumerate(rule.include):
            if pattern.endswith("/"):
                out.append(
                    f"{where}.data.include[{i}]: {pattern!r} matches only folder placeholders, "
                    f"which never trigger; write {pattern + '**'!r}"
                )
    return out
