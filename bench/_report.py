"""Rows of the result table, their targets, the printed table and the JSON document."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One figure: ours next to the baseline, and the target it is held to.

    ``target`` is one of ``("ratio<=", x)``, ``("ratio>=", x)``, ``("<=", x)``, ``(">=", x)``,
    ``("==", x)`` or ``None`` (reported only). Ratios are ours / baseline.
    """

    figure: str
    unit: str
    ours: float | str | None
    baseline: float | str | None = None
    target: tuple[str, float] | None = None
    note: str = ""
    failed_checks: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if isinstance(self.ours, int | float) and isinstance(self.baseline, int | float):
            return self.ours / self.baseline if self.baseline else None
        return None

    @property
    def ok(self) -> bool | None:
        if self.failed_checks:
            return False
        if self.target is None:
            return None
        op, value = self.target
        if op.startswith("ratio"):
            actual = self.ratio
            op = op[len("ratio") :]
        else:
            actual = self.ours if isinstance(self.ours, int | float) else None
        if actual is None:
            return False
        return {
            "<=": actual <= value,
            ">=": actual >= value,
            "==": actual == value,
        }[op]

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op, value = self.target
        number = f"{value:g}"
        if op.startswith("ratio"):
            return f"{op[len('ratio') :].replace('<=', '≤').replace('>=', '≥')} {number}×"
        sign = {"<=": "≤", ">=": "≥", "==": "="}[op]
        return f"{sign} {number} {self.unit}".rstrip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "unit": self.unit,
            "ours": self.ours,
            "baseline": self.baseline,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "target": self.target_text() or None,
            "ok": self.ok,
            "note": self.note or None,
            "failed_checks": self.failed_checks or None,
        }


def _value(value: float | str | None, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit in ("ev/s",):
        text = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    elif unit == "s":
        text = f"{value:.3f}" if value < 10 else f"{value:.1f}"
    elif unit in ("ms", "MiB"):
        text = f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    else:
        text = f"{value:g}"
    return f"{text} {unit}".rstrip()


def _ratio(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "-"
    return f"{ratio:.2f}×" if ratio < 100 else f"{ratio:.0f}×"


def table(rows: Sequence[Row]) -> str:
    head = ("figure", "ours", "baseline", "ratio", "target", "result")
    body = []
    for row in rows:
        verdict = {True: "pass", False: "FAIL", None: ""}[row.ok]
        body.append(
            (
                row.figure,
                _value(row.ours, row.unit),
                _value(row.baseline, row.unit),
                _ratio(row),
                row.target_text(),
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in body:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _memory_total_mib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024, 0)
    except OSError:
        pass
    return 0.0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "functions-framework",
        "google-cloud-aiplatform",
        "google-cloud-storage",
        "google-api-core",
        "protobuf",
        "gunicorn",
        "flask",
        "cloudevents",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


def _git_commit(repo: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        return ""


def machine(repo: Path, *, function_cpu: int | None) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_mib": _memory_total_mib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "function_pinned_to_cpu": function_cpu,
        "load_average_at_start": _load_average(),
        "packages": _versions(),
        "commit": _git_commit(repo),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(path)
