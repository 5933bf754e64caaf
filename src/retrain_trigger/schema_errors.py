"""A msgspec ``ValidationError`` of retrain.yaml, said in this project's one notation.

:func:`problem` gives the field path (``routes[0] (churn).data.include[1]``, with the route's name)
and a message made from the field's declaration in :mod:`retrain_trigger.schema` (its type,
bounds, choices, pattern), never from the library's wording; unknown fields get a "did you mean".
Imported only when a configuration has a problem.
"""

import difflib
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import inspect as mi

_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+|\.\.\.)\]")
_NAMED = re.compile(r"field `([^`]+)`")


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def _info(info: Any) -> tuple[Any, Mapping[str, Any]]:
    """The type under its metadata, and the metadata's ``extra``."""
    extra: Mapping[str, Any] = {}
    while isinstance(info, mi.Metadata):
        extra = {**(info.extra or {}), **extra}
        info = info.type
    return info, extra


def _fields(info: Any) -> dict[str, Any]:
    info, _ = _info(info)
    if isinstance(info, mi.UnionType):
        for member in info.types:
            if isinstance(_info(member)[0], mi.StructType):
                return _fields(member)
    return {f.name: f.type for f in info.fields} if isinstance(info, mi.StructType) else {}


def _step(info: Any, key: str | int) -> Any:
    """The declared type one step down a path (a struct's field, a list's item, a dict's value)."""
    info, _ = _info(info)
    if isinstance(info, mi.UnionType):
        for member in info.types:
            found = _step(member, key)
            if found is not None:
                return found
        return None
    if isinstance(info, mi.StructType) and isinstance(key, str):
        return _fields(info).get(key)
    if isinstance(info, mi.ListType) and isinstance(key, int):
        return info.item_type
    if isinstance(info, mi.DictType) and isinstance(key, str):
        return info.value_type
    return None


def field_path(tokens: list[str | int], data: Any) -> str:
    """``routes[0] (churn).data.include[1]``: dotted names, ``[index]``, a route's name."""
    out = ""
    node = data
    for token in tokens:
        if isinstance(token, int):
            out += f"[{token}]"
            node = node[token] if isinstance(node, list) and token < len(node) else None
            if out == f"routes[{token}]" and isinstance(node, Mapping):
                name = node.get("name")
                if isinstance(name, str) and name:
                    out += f" ({name})"
        else:
            out = f"{out}.{token}" if out else token
            node = node.get(token) if isinstance(node, Mapping) else None
    return out


def describe(info: Any, value: Any, *, where: str = "") -> str:
    """What a value of the declared type ``info`` must be, said of ``value``."""
    info, extra = _info(info)
    if isinstance(info, mi.UnionType):
        kinds = {type(_info(m)[0]) for m in info.types} - {mi.NoneType}
        if kinds == {mi.ListType, mi.StrType}:
            return "must be a list of non-empty strings"
        if mi.StructType in kinds:
            return f"must be a mapping, got {_type_name(value)}"
        return "must be a string, number or boolean"
    if isinstance(info, mi.LiteralType):
        return f"must be one of {', '.join(map(str, info.values))}, got {value!r}"
    if isinstance(info, mi.BoolType):
        return f"must be true or false, got {value!r}"
    if isinstance(info, mi.IntType):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number, got {value!r}"
        return f"must be between {info.ge} and {info.le}, got {value}"
    if isinstance(info, mi.FloatType):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        low = f"above {info.gt}" if info.gt is not None else f"at least {info.ge}"
        return f"must be a number {low} and at most {info.le}, got {value}"
    if isinstance(info, mi.StrType):
        if not isinstance(value, str):
            return f"must be a string, got {_type_name(value)}"
        if info.max_length is not None and len(value) > info.max_length:
            return f"is longer than {info.max_length} characters"
        return str(extra.get("problem", "is not valid: {value}")).format(value=repr(value))
    if isinstance(info, mi.ListType):
        if where == "routes":
            return "must be a non-empty list of routes"
        return f"must be a list, got {_type_name(value)}"
    if isinstance(info, mi.StructType | mi.DictType):
        return f"must be a mapping, got {_type_name(value)}"
    return f"is not valid: {value!r}"


def problem(error: msgspec.ValidationError, root: Any, data: Any) -> tuple[str, str]:
    """``(field path, message)`` of a conversion error of ``data`` into the struct ``root``."""
    match = _AT.match(str(error))
    assert match is not None
    text, path = match.group("problem"), match.group("path") or ""
    tokens: list[str | int] = []
    info: Any = mi.type_info(root)
    value: Any = data
    declared: tuple[type, str] | None = None  # the struct field last stepped into
    for name, index in _TOKEN.findall(path):
        token: str | int
        if index == "...":  # a mapping's value; msgspec does not say which: the first not scalar
            bad = [k for k, v in value.items() if isinstance(v, list | dict)]
            token = str(bad[0]) if isinstance(value, Mapping) and bad else "?"
        else:
            token = int(index) if index else name
        plain = _info(info)[0] if info is not None else None
        if isinstance(plain, mi.UnionType):
            members = [_info(m)[0] for m in plain.types]
            plain = next((m for m in members if isinstance(m, mi.StructType)), plain)
        if isinstance(plain, mi.StructType) and isinstance(token, str):
            declared = (plain.cls, token)
        info = _step(info, token) if info is not None else None
        tokens.append(token)
        if isinstance(token, int):
            value = value[token] if isinstance(value, list) and token < len(value) else None
        else:
            value = value.get(token) if isinstance(value, Mapping) else None
    where = field_path(tokens, data)
    named = _NAMED.search(text)
    if text.startswith("Object missing required field") and named:
        return field_path([*tokens, named.group(1)], data), "is required"
    if text.startswith("Object contains unknown field") and isinstance(value, Mapping):
        known = sorted(_fields(info))
        unknown = sorted(str(k) for k in value if k not in known)
        hints = [
            f"{name} (did you mean {close[0]}?)" if close else name
            for name in unknown
            for close in [difflib.get_close_matches(name, known, n=1)]
        ]
        return where or "(top level)", (
            f"unknown field(s) {', '.join(hints)}; known: {', '.join(known)}"
        )
    if declared is not None and isinstance(_info(info)[0], mi.LiteralType):
        return where, f"must be one of {', '.join(_choices(*declared))}, got {value!r}"
    return where or "(top level)", describe(info, value, where=where)


def _choices(cls: type, name: str) -> list[str]:
    """A Literal field's values in the order they are declared (``type_info`` sorts them)."""
    hint = typing.get_type_hints(cls, include_extras=True)[name]
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return [str(value) for value in typing.get_args(hint)]
