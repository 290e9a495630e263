"""How much of a photo's Integrated-Gradients attribution lands on its border, per baseline.

    python scripts/border_attribution.py [--cases 5] [--steps 32]

The image encoder standardises a photo and convolves with zero padding (the training-mean grey);
the default IG baseline, an all-black photo, is the only input with an edge against that padding.
Prints, per case and baseline, the share of the photo's |attribution| on the outer 2-pixel ring
(12% of a 64x64 photo's pixels) and the photo's largest |attribution| beside the other inputs'.
Figures quoted in docs/edges.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from deq_core import Lens
from deq_core.explain import integrated_gradients

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "assets" / "models" / "inspection-deq"))
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lens = Lens.open(args.model)
    data = lens.data("test")
    photo = lens.config.modality_names.index("photo")
    for case_id in data.ids[: args.cases]:
        case = lens.case(case_id, data=data)
        decided = lens.decide(case).prediction
        for name, baseline in (("black (default)", None), ("training mean", {"photo": "mean"})):
            with lens.lock:
                maps = integrated_gradients(lens.model, case.inputs, decided, baseline, n_steps=args.steps)[0].maps
            a = np.abs(np.asarray(maps[photo], dtype=float).sum(axis=0))
            ring = np.zeros_like(a, dtype=bool)
            ring[:2, :] = ring[:, :2] = ring[-2:, :] = ring[:, -2:] = True
            others = max(float(np.abs(np.asarray(m, dtype=float)).max()) for i, m in enumerate(maps) if i != photo)
            print(f"{case_id} baseline {name}: border share {a[ring].sum() / a.sum():.2f} (border {ring.mean():.2f} of "
                  f"pixels); photo max {a.max():.3f}, other inputs max {others:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
