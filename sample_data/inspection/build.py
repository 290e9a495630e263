"""Rebuild ``sample_data/inspection/test/``: the inspection demo's test split as files a person can open.

    python sample_data/inspection/build.py

Generates the test split (seed 0, 50 cases per class) and writes it with
``export_folder``: dataset.json, manifest.csv (notes inline), photos/*.png and
sensors/*.csv. The old folder is replaced only once the new one is complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from deq_core.data import export_folder  # noqa: E402
from deq_core.data import generate_inspection  # noqa: E402


def build(target: Path, seed: int = 0) -> Path:
    """Export the test split to ``target``, replacing what was there."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.build-") as scratch:
        fresh = export_folder(generate_inspection("test", seed=seed), Path(scratch) / target.name)
        if target.exists():
            shutil.rmtree(target)
        fresh.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "test", help="folder to write (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    target = build(args.out.resolve(), args.seed)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
