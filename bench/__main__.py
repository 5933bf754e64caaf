"""``python -m bench [--quick] [--only NAME ...] [--json PATH]``: run, print the table, write JSON."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import figures, window
from bench._env import Bench
from bench._procs import REPO
from bench._report import Row, machine, table, write_json

FIGURES = {
    "cold": figures.cold_start,
    "warm": figures.warm,
    "storm": figures.storm,
    "memory": figures.memory,
    "inproc": figures.inproc,
    "window": None,  # set below: bench/window.py (the Firestore emulator and both stores)
    "e2e": None,  # set below: it needs the local stack, not the shared fakes
    "ui": None,  # set below: the status page over its own store
}
FIGURES["window"] = window.window
LATEST = REPO / "bench" / "results" / "latest.json"

BASELINE_NOTES = [
    "baseline: bench/baseline/main.py under the same functions-framework, against the same fakes",
    "baseline Vertex calls: aiplatform.init(api_endpoint='http://127.0.0.1:PORT', "
    "api_transport='rest', credentials=AnonymousCredentials()) - the REST transport keeps the "
    "http:// scheme, no TLS terminator needed",
    "baseline GCS calls (template read, pipeline-root bucket exists/reload): fake-gcs-server via "
    "STORAGE_EMULATOR_HOST",
    "baseline Resource Manager project-number lookup (no local peer): patched to the constant "
    "fake-gcs-server reports; this only makes the baseline faster",
]


def _cpus(args: argparse.Namespace) -> tuple[int | None, set[int] | None]:
    if args.no_pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    cpu = args.cpu if args.cpu is not None else available[-1]
    if cpu not in available:
        raise SystemExit(f"--cpu {cpu}: not one of the CPUs available ({available})")
    return cpu, set(available) - {cpu}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark retrain-trigger against the naive aiplatform.PipelineJob function.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer events and runs (about 3 min)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these figures (repeatable or comma-separated): {', '.join(FIGURES)}",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--cpu", type=int, default=None, help="CPU to pin the functions to (default: the last)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the functions to a CPU")
    parser.add_argument("--runs", type=int, default=None, help="cold starts per variant (>= 5)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and its logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        print(
            f"unknown figure(s): {', '.join(unknown)}; known: {', '.join(FIGURES)}", file=sys.stderr
        )
        return 2
    sizes = figures.Sizes.quick() if args.quick else figures.Sizes.full()
    if args.runs is not None:
        if args.runs < 5:
            print("--runs must be at least 5", file=sys.stderr)
            return 2
        sizes = dataclasses.replace(sizes, cold_runs=args.runs)
    cpu, aux = _cpus(args)
    document: dict[str, Any] = {
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "mode": "quick" if args.quick else "full",
        "machine": machine(REPO, function_cpu=cpu),
        "notes": BASELINE_NOTES,
        "sizes": vars(sizes),
        "figures": {},
        "rows": [],
    }
    rows: list[Row] = []
    began = time.monotonic()
    failed = False
    shared = [n for n in names if n not in ("e2e", "ui")]
    if shared:
        with Bench(cpu=cpu, aux_cpus=aux, keep=args.keep) as bench:
            for name in shared:
                print(f"... {name}", file=sys.stderr, flush=True)
                t0 = time.monotonic()
                try:
                    figure_rows, details = FIGURES[name](bench, sizes)  # type: ignore[misc]
                except Exception as exc:  # one broken figure must not hide the others
                    failed = True
                    traceback.print_exc()
                    figure_rows = [Row(name, "", f"not measured ({type(exc).__name__}: {exc})")]
                    figure_rows[0].failed_checks.append(str(exc))
                    details = {"error": f"{type(exc).__name__}: {exc}"}
                details["seconds"] = round(time.monotonic() - t0, 1)
                document["figures"][name] = details
                rows.extend(figure_rows)
            if args.keep:
                document["work_folder"] = str(bench.root)
    if "e2e" in names:
        print("... e2e", file=sys.stderr, flush=True)
        from bench import e2e

        figure_rows, details = e2e.measure(quick=args.quick)
        document["figures"]["e2e"] = details
        rows.extend(figure_rows)
    if "ui" in names:
        print("... ui", file=sys.stderr, flush=True)
        from bench import ui

        t0 = time.monotonic()
        try:
            figure_rows, details = ui.measure(repeats=10 if args.quick else ui.REPEATS)
        except Exception as exc:  # one broken figure must not hide the others
            failed = True
            traceback.print_exc()
            figure_rows = [Row("status page", "ms", f"not measured ({type(exc).__name__}: {exc})")]
            figure_rows[0].failed_checks.append(str(exc))
            details = {"error": f"{type(exc).__name__}: {exc}"}
        details["seconds"] = round(time.monotonic() - t0, 1)
        document["figures"]["ui"] = details
        rows.extend(figure_rows)

    document["rows"] = [row.to_dict() for row in rows]
    document["seconds"] = round(time.monotonic() - began, 1)
    write_json(LATEST, document)
    if args.json is not None:
        write_json(args.json, document)

    print()
    print(table(rows))
    print()
    info = document["machine"]
    print(
        f"{info['cpu']}, {info['cpus']} CPUs, Python {info['python']}; functions pinned to CPU "
        f"{cpu if cpu is not None else '(not pinned)'}; {document['mode']} run, "
        f"{document['seconds']:.0f} s"
    )
    for note in BASELINE_NOTES:
        print(f"- {note}")
    notes = [f"- {row.figure}: {row.note}" for row in rows if row.note]
    if notes:
        print("\n".join(notes))
    print(f"\nJSON: {LATEST}" + (f" and {args.json}" if args.json else ""))
    misses = [row for row in rows if row.ok is False]
    for row in misses:
        print(f"FAIL {row.figure}: {'; '.join(row.failed_checks) or 'target missed'}")
    return 1 if (failed or misses) else 0


if __name__ == "__main__":
    raise SystemExit(main())
