"""Just enough of Terraform's expression language to compute the values deploy/terraform gives its
monitoring resources: string templates (``${...}``, ``$${`` for a literal ``${``), heredocs,
``var.`` (the defaults, plus what the caller sets), ``local.``, the ``name`` of resources, and the
few functions monitoring.tf calls (join, replace, coalesce, jsonencode, templatefile's path).

Anything else raises :class:`Unsupported`, so a test never reads a value it did not compute.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import hcl2


class Unsupported(AssertionError):
    """An expression this evaluator does not know."""


_STRING = r'"((?:[^"\\]|\\.)*)"'


def unescape(text: str) -> str:
    """The escapes of an HCL quoted string (``\\"``, ``\\\\``, ``\\n``, ``\\t``)."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k.strip('"'): _clean(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class Module:
    """The values of one folder of Terraform, for the given input variables."""

    def __init__(self, folder: Path, inputs: dict[str, Any]) -> None:
        self.folder = folder
        self.raw_variables: dict[str, Any] = {}
        self.raw_locals: dict[str, Any] = {}
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        for path in sorted(folder.glob("*.tf")):
            parsed = hcl2.loads(path.read_text(encoding="utf-8"))
            for block in parsed.get("variable", []):
                for name, body in block.items():
                    self.raw_variables[name.strip('"')] = body
            for block in parsed.get("locals", []):
                self.raw_locals.update({k: v for k, v in block.items() if not k.startswith("__")})
            for block in parsed.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        self.resources[(rtype.strip('"'), name.strip('"'))] = _clean(body)
        self.variables: dict[str, Any] = {}
        for name, body in self.raw_variables.items():
            if name in inputs:
                self.variables[name] = inputs[name]
            elif "default" in body:
                self.variables[name] = self.value(body["default"])
        unknown = set(inputs) - set(self.raw_variables)
        if unknown:
            raise Unsupported(f"inputs the module does not declare: {sorted(unknown)}")
        self._locals: dict[str, Any] = {}

    # --- values ------------------------------------------------------------------------------

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        return self.resources[(rtype, name)]

    def local(self, name: str) -> Any:
        if name not in self._locals:
            self._locals[name] = self.value(self.raw_locals[name])
        return self._locals[name]

    def value(self, raw: Any) -> Any:
        if raw is None or isinstance(raw, (bool, int, float)):
            return raw
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        if isinstance(raw, dict):
            return {k.strip('"'): self.value(v) for k, v in raw.items() if not k.startswith("__")}
        text = str(raw)
        if text.startswith('"<<'):  # a heredoc: <<-EOT ... EOT, indentation removed
            body = text[1:-1].split("\n", 1)[1].rsplit("\n", 1)[0]
            return self.template(textwrap.dedent(body) + "\n")
        if len(text) >= 2 and text[0] == text[-1] == '"':
            return self.template(unescape(text[1:-1]))
        if text.startswith("${") and _closing(text, 2) == len(text) - 1:
            return self.expr(text[2:-1])
        return self.template(text)

    def template(self, text: str) -> str:
        out, i = [], 0
        while True:
            start = text.find("${", i)
            if start < 0:
                out.append(text[i:])
                return "".join(out)
            if start > 0 and text[start - 1] == "$":  # $${ is a literal ${
                out.append(text[i : start - 1] + "${")
                i = start + 2
                continue
            end = _closing(text, start + 2)
            out.append(text[i:start])
            value = self.expr(text[start + 2 : end])
            out.append(_format(value))
            i = end + 1

    def expr(self, expr: str) -> Any:
        expr = expr.strip()
        if re.fullmatch(_STRING, expr):
            return self.template(unescape(expr[1:-1]))
        if re.fullmatch(r"-?\d+(\.\d+)?", expr):
            return float(expr) if "." in expr else int(expr)
        if expr in ("true", "false"):
            return expr == "true"
        match = re.fullmatch(r"(.+?) \? (.+) : (.+)", expr)
        if match:
            return self.expr(match.group(2) if self.expr(match.group(1)) else match.group(3))
        match = re.fullmatch(r"(.+?) == " + _STRING, expr)
        if match:
            return self.expr(match.group(1)) == unescape(match.group(2))
        match = re.fullmatch(r"(.+) \* (\d+)", expr)
        if match:
            return self.expr(match.group(1)) * int(match.group(2))
        match = re.fullmatch(r"var\.(\w+)", expr)
        if match:
            if match.group(1) not in self.variables:
                raise Unsupported(f"var.{match.group(1)} has no default and was not given")
            return self.variables[match.group(1)]
        match = re.fullmatch(r"local\.(\w+)", expr)
        if match:
            return self.local(match.group(1))
        match = re.fullmatch(r"path\.module", expr)
        if match:
            return str(self.folder)
        match = re.fullmatch(r"(google_\w+)\.(\w+)(?:\[0\])?\.name", expr)
        if match:
            return self.value(self.resources[(match.group(1), match.group(2))]["name"])
        match = re.fullmatch(r"replace\((.+), " + _STRING + ", " + _STRING + r"\)", expr)
        if match:
            return str(self.expr(match.group(1))).replace(
                unescape(match.group(2)), unescape(match.group(3))
            )
        match = re.fullmatch(r"join\(" + _STRING + r", \[(.*)\]\)", expr, re.DOTALL)
        if match:
            items = [self.template(unescape(m)) for m in re.findall(_STRING, match.group(2))]
            return unescape(match.group(1)).join(items)
        match = re.fullmatch(r"coalesce\((var\.\w+), " + _STRING + r"\)", expr)
        if match:
            return self.expr(match.group(1)) or self.template(unescape(match.group(2)))
        match = re.fullmatch(r"jsonencode\((" + _STRING + r")\)", expr)
        if match:
            return json.dumps(self.expr(match.group(1)))
        match = re.fullmatch(r"tostring\((.+)\)", expr)
        if match:
            return _format(self.expr(match.group(1)))
        raise Unsupported(f"cannot evaluate ${{{expr}}}")


def _closing(text: str, start: int) -> int:
    """Index of the ``}`` closing an interpolation whose expression starts at ``start``."""
    depth, i, quoted = 0, start, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise Unsupported(f"unclosed interpolation in {text!r}")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render_template(text: str, values: dict[str, str]) -> str:
    """templatefile() for a template of plain ``${name}`` placeholders (``$${`` is a literal)."""
    out, i = [], 0
    while True:
        start = text.find("${", i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        if start > 0 and text[start - 1] == "$":
            out.append(text[i : start - 1] + "${")
            i = start + 2
            continue
        end = text.index("}", start)
        name = text[start + 2 : end]
        if name not in values:
            raise Unsupported(f"template placeholder ${{{name}}} is not given")
        out.append(text[i:start] + values[name])
        i = end + 1


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"(?<!\$)\$\{(\w+)\}", text))
