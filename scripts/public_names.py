"""The export tables of deq_core.engine, deq_core.explain and deq_core.data, from their modules' public names.

    python scripts/public_names.py          # rewrite the three tables
    python scripts/public_names.py --check  # exit 1 when a table is out of date (tests/test_layout.py runs it)

A subpackage exports every public top-level name (no leading underscore) that exactly
one of its modules defines; a name two modules define means different things in each
(the CLASS_NAMES of two datasets) and stays in its module (``from deq_core.data import
inspection``, then ``inspection.CLASS_NAMES``); a name equal to a module's is left out,
because importing that module would shadow it.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "deq_core"
PACKAGES = ("engine", "explain", "data")
NOT_EXPORTED = {"main", "annotations", "T", "log", "Function"}
TABLE = re.compile(r"^_EXPORTS = \{\n.*?^\}\n", re.S | re.M)


def module_names(path: Path) -> list[str]:
    out = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            out.append(node.name)
        elif isinstance(node, ast.Assign):
            out += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.append(node.target.id)
    return [n for n in out if not n.startswith("_") and n not in NOT_EXPORTED]


def table(package: str) -> dict[str, str]:
    modules = sorted(p.stem for p in (ROOT / package).glob("*.py") if p.stem not in ("__init__", "__main__"))
    found: dict[str, list[str]] = {}
    for module in modules:
        for name in module_names(ROOT / package / f"{module}.py"):
            found.setdefault(name, []).append(module)
    return {name: where[0] for name, where in found.items() if len(where) == 1 and name not in modules}


def rendered(package: str) -> str:
    body = "\n".join(f"    {name!r}: '.{module}'," for name, module in table(package).items())
    return f"_EXPORTS = {{\n{body}\n}}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report tables that are out of date")
    args = parser.parse_args(argv)
    stale = []
    for package in PACKAGES:
        init = ROOT / package / "__init__.py"
        text = init.read_text()
        new = TABLE.sub(lambda _: rendered(package), text, count=1)
        if new != text:
            stale.append(package)
            if not args.check:
                init.write_text(new)
    if stale:
        print(("out of date: " if args.check else "rewrote: ") + ", ".join(f"deq_core.{p}" for p in stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
