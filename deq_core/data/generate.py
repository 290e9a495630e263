"""``deq-lens data generate``: N generated cases written as a dataset folder, for batch audits and benchmarks.

    deq-lens data generate --dataset inspection --n 20000 --out cases/ [--seed 1] [--split test]

The folder is in the documented format (``deq_core.data.folder``: ``dataset.json``,
``manifest.csv``, one PNG / CSV per case), so ``load_folder`` and ``deq-lens batch``
read it like any production export. Case ``i`` depends only on ``(seed, split, i)``,
so the same command writes the same folder byte for byte, and ``--n`` only cuts it.
The default seed is 1, not the shipped models' 0, so generated cases are new to them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from .base import MultimodalDataset

GENERATORS = ("inspection",)
DEFAULT_SEED = 1


def generate_inspection_cases(n: int, seed: int = DEFAULT_SEED, split: str = "test") -> MultimodalDataset:
    """The first ``n`` inspection cases of ``split`` at ``seed`` (labels cycle through the classes)."""
    from deq_core.engine.text import tokenize

    from . import inspection
    from .readers import pixels_to_tensor

    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    cases = [inspection.inspection_case(split, i, seed) for i in range(n)]
    modalities = inspection.inspection_modalities()
    notes = tuple(case.note for case in cases)
    return MultimodalDataset(
        name=inspection.DATASET_NAME,
        split=split,
        modalities=modalities,
        class_names=inspection.CLASS_NAMES,
        inputs=(
            pixels_to_tensor(np.stack([case.photo for case in cases]))[:, None],
            torch.from_numpy(np.stack([case.sensors for case in cases])),
            torch.tensor([tokenize(note, modalities[2].vocabulary, inspection.NOTE_MAX_TOKENS) for note in notes],
                         dtype=torch.int64),  # fmt: skip
        ),
        labels=torch.tensor([case.label for case in cases], dtype=torch.int64),
        ids=tuple(case.case_id for case in cases),
        texts={"note": notes},
        normal_class=inspection.NORMAL_CLASS,
    )


def generate_folder(dataset: str, n: int, out: str | Path, seed: int = DEFAULT_SEED, split: str = "test") -> Path:
    """Write ``n`` generated cases of ``dataset`` as a dataset folder at ``out`` (refuses a non-empty folder)."""
    from .folder import export_folder

    if dataset not in GENERATORS:
        raise ValueError(f"no generator for dataset {dataset!r} (choose from {', '.join(GENERATORS)})")
    return export_folder(generate_inspection_cases(n, seed, split), out)


def main(argv: list[str] | None = None, prog: str = "python -m deq_core.data.generate") -> int:
    """``deq-lens data generate``."""
    parser = argparse.ArgumentParser(prog=prog, description="Dataset tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write N generated cases as a dataset folder")
    gen.add_argument("--dataset", default="inspection", choices=GENERATORS)
    gen.add_argument("--n", type=int, required=True, help="number of cases")
    gen.add_argument("--out", type=Path, required=True, help="new (or empty) folder to write")
    gen.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"generator seed (default {DEFAULT_SEED})")
    gen.add_argument("--split", default="test", choices=("train", "val", "test"), help="the split's random stream")
    args = parser.parse_args(argv)
    try:
        folder = generate_folder(args.dataset, args.n, args.out, args.seed, args.split)
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.n} {args.dataset} cases to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
