"""Reading compiled specs: the program each lightweight component runs, and what it leaves undefined.

A lightweight component's program is its function's source, the helper functions listed in
``additional_funcs``, and KFP's own imports. A helper missing from that list is only noticed when
the step runs (``NameError``), so the tests check every program statically: each name a function
reads as a global must be defined in the program, imported by it, or a builtin.
"""

from __future__ import annotations

import builtins
import symtable
import typing
from pathlib import Path
from typing import Any

import yaml


def load_spec(path: Path) -> dict[str, Any]:
    with open(path) as handle:
        return next(iter(yaml.safe_load_all(handle)))


def programs(spec: dict[str, Any]) -> dict[str, str]:
    """``{executor name: program source}`` of every lightweight Python component in ``spec``."""
    found = {}
    for name, executor in spec["deploymentSpec"]["executors"].items():
        command = executor["container"]["command"]
        if "kfp.dsl.executor_main" in " ".join(command[:-1]):
            found[name] = command[-1]
    return found


def _star_imports(source: str) -> set[str]:
    """Names that the program's ``from M import *`` lines bring in (KFP writes two of them)."""
    import importlib

    names: set[str] = set()
    for line in source.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "from" and parts[2:] == ["import", "*"]:
            module = importlib.import_module(parts[1])
            exported = getattr(module, "__all__", None)
            names.update(exported or (n for n in dir(module) if not n.startswith("_")))
    return names


def undefined_globals(source: str) -> set[str]:
    """Global names read somewhere in ``source`` that nothing in it defines or imports."""
    top = symtable.symtable(source, "<component>", "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    known = defined | set(dir(builtins)) | _star_imports(source) | set(typing.__all__)
    missing = {s.get_name() for s in top.get_symbols() if s.is_referenced()} - known

    def walk(table: symtable.SymbolTable) -> None:
        for child in table.get_children():
            missing.update(
                symbol.get_name()
                for symbol in child.get_symbols()
                if symbol.is_global() and symbol.is_referenced() and symbol.get_name() not in known
            )
            walk(child)

    walk(top)
    return missing
