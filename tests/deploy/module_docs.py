"""The inputs and outputs tables of deploy/terraform/README.md, generated from variables.tf and
outputs.tf so that they cannot drift: ``python -m tests.deploy.module_docs`` rewrites the tables
between their markers, and tests/deploy/test_module_docs.py fails when they differ.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "deploy" / "terraform"
README = TERRAFORM / "README.md"
MARKERS = {
    "inputs": ("<!-- BEGIN INPUTS (python -m tests.deploy.module_docs) -->", "<!-- END INPUTS -->"),
    "outputs": (
        "<!-- BEGIN OUTPUTS (python -m tests.deploy.module_docs) -->",
        "<!-- END OUTPUTS -->",
    ),
}


def _blocks(name: str, kind: str) -> dict[str, dict[str, Any]]:
    parsed = hcl2.loads((TERRAFORM / name).read_text(encoding="utf-8"))
    return {k.strip('"'): v for block in parsed.get(kind, []) for k, v in block.items()}


def _plain(value: Any) -> Any:
    """An HCL value as written: quoted strings unquoted, expressions without ``${}``."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k.strip('"'): _plain(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return json.loads(value)
        if value.startswith("${") and value.endswith("}"):
            return value[2:-1]
    return value


def _cell(text: str) -> str:
    """One table cell of Markdown: one line, no column break, no angle brackets read as HTML."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"`` {text} ``"


def inputs_table() -> str:
    variables = _blocks("variables.tf", "variable")
    rows = ["| Name | Description | Type | Default | Required |", "| --- | --- | --- | --- | --- |"]
    ordered = sorted(variables, key=lambda n: ("default" in variables[n], n))
    for name in ordered:
        body = variables[name]
        description = _cell(_plain(body["description"]))
        type_ = _plain(body["type"])
        if "default" in body:
            default = _code(json.dumps(_plain(body["default"]), ensure_ascii=False))
            required = "no"
        else:
            default, required = "n/a", "yes"
        rows.append(f"| `{name}` | {description} | `{type_}` | {default} | {required} |")
    return "\n".join(rows)


def outputs_table() -> str:
    outputs = _blocks("outputs.tf", "output")
    rows = ["| Name | Description |", "| --- | --- |"]
    for name in sorted(outputs):
        rows.append(f"| `{name}` | {_cell(_plain(outputs[name]['description']))} |")
    return "\n".join(rows)


def render(text: str) -> str:
    """The README with both tables replaced by freshly generated ones."""
    for key, table in (("inputs", inputs_table()), ("outputs", outputs_table())):
        begin, end = MARKERS[key]
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"{README.name} has no {begin} ... {end} markers")
        replacement = f"{begin}\n{table}\n{end}"
        text = pattern.sub(lambda _, new=replacement: new, text)
    return text


def main() -> int:
    text = README.read_text(encoding="utf-8")
    updated = render(text)
    if updated != text:
        README.write_text(updated, encoding="utf-8")
        print(f"{README.relative_to(REPO)}: tables rewritten")
    else:
        print(f"{README.relative_to(REPO)}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
