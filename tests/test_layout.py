"""The layout is the architecture: who may import what.

- ``deq_core`` never imports streamlit (the library runs in CLIs, notebooks and workers).
- The app's pages import only ``deq_core`` itself (its public API) and ``app.*``.
- The rest of the app, the benchmarks and the scripts import only public namespaces:
  ``deq_core``, its subpackages ``engine``, ``explain``, ``audit``, ``data`` (their
  ``__init__``), and the command modules ``train`` and ``evaluate``; never a name that
  starts with an underscore.
- Every name a public namespace exports resolves.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {"deq_core", "deq_core.engine", "deq_core.explain", "deq_core.audit", "deq_core.data", "deq_core.train",
          "deq_core.evaluate", "deq_core.cli", "deq_core.cache", "deq_core.figures", "deq_core.testing",
          "deq_core.batch", "deq_core.edge"}  # fmt: skip


def _deq_imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names) of every import of deq_core in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "deq_core":
            found.append((node.lineno, node.module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "deq_core":
                    found.append((node.lineno, alias.name, ()))
    return found


def _violations(paths, allowed: set[str]) -> list[str]:
    out = []
    for path in paths:
        for line, module, names in _deq_imports(path):
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
            if module not in allowed:
                out.append(f"{where} imports {module} (allowed: {', '.join(sorted(allowed))})")
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private:
                out.append(f"{where} imports private names {private} from {module}")
    return out


def test_pages_import_only_the_public_package():
    pages = sorted((ROOT / "app" / "pages").glob("*.py"))
    assert pages
    assert _violations(pages, {"deq_core"}) == []


def test_app_benchmarks_and_scripts_import_only_public_namespaces():
    paths = [
        *sorted((ROOT / "app").glob("*.py")),
        *sorted((ROOT / "benchmarks").glob("*.py")),
        *sorted((ROOT / "scripts").glob("*.py")),
        *sorted((ROOT / "sample_data").glob("*/*.py")),
    ]
    assert len(paths) > 10
    assert _violations(paths, PUBLIC) == []


def test_the_checker_catches_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from deq_core.engine.solvers import solve\nfrom deq_core.engine import _hidden\n")
    problems = _violations([bad], PUBLIC)
    assert len(problems) == 2
    assert "imports deq_core.engine.solvers" in problems[0] and "['_hidden']" in problems[1]


def test_the_library_never_imports_streamlit():
    for path in sorted((ROOT / "deq_core").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])  # fmt: skip
            assert not any(m.split(".")[0] == "streamlit" for m in modules), f"{path} imports streamlit"


def test_importing_the_package_loads_no_streamlit_and_no_heavy_optional_parts():
    code = ("import sys, deq_core; heavy = [m for m in ('streamlit', 'sklearn', 'pandas', 'deq_core.audit.report') "
            "if m in sys.modules]; print(heavy)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("namespace", sorted(PUBLIC - {"deq_core.cli", "deq_core.cache", "deq_core.figures"}))
def test_every_exported_name_resolves(namespace):
    module = importlib.import_module(namespace)
    exported = getattr(module, "__all__", None)
    if namespace in ("deq_core", "deq_core.engine", "deq_core.explain", "deq_core.audit", "deq_core.data", "deq_core.batch"):
        assert exported, f"{namespace} declares no __all__"
    missing = [name for name in exported or () if not hasattr(module, name)]
    assert missing == [], f"{namespace} exports names that do not resolve: {missing}"


def test_the_batch_package_imports_no_ray_or_pyarrow_and_its_namespace_no_torch():
    code = ("import sys, deq_core.batch; heavy = [m for m in ('ray', 'pyarrow', 'torch') if m in sys.modules]; "
            "import deq_core.batch.run, deq_core.batch.triage, deq_core.batch.cli; "
            "print(heavy + [m for m in ('ray', 'pyarrow') if m in sys.modules])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_export_tables_list_every_public_name_of_their_modules():
    """A new public function lands in its namespace (``python scripts/public_names.py`` rewrites the tables)."""
    out = subprocess.run([sys.executable, "scripts/public_names.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
