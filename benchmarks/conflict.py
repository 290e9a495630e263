"""How well the triage's conflicting-input signal finds a planted conflict (Handwritten, six views).

    python benchmarks/conflict.py [--share 0.3] [--seed 0] [--threshold 0.05]

In ``--share`` of the 400 test cases one view (chosen at random) is replaced by the
same view of a random case of another digit: that input now argues for another class.
Every case is decided and its modality Shapley values computed in batches
(``deq_core.batch.chunk_records``, no IG, no stability); the conflicting-input signal
fires when some view's Shapley value for the decided class is below ``-threshold``
(``deq_core.batch.TriageWeights.conflict``). Prints recall (planted cases flagged),
precision (flagged cases that were planted), how often the flagged view is the planted
one, and the same at a few other thresholds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
MODEL = ROOT / "assets" / "models" / "handwritten-deq"


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from deq_core import Lens
    from deq_core.batch import RecordOptions, TriageWeights, chunk_records

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--share", type=float, default=0.3, help="share of cases with a planted conflict")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=TriageWeights().conflict)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--chunk", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lens = Lens.open(args.model, device="cpu")
    data = lens.data()
    n, m = len(data), len(lens.modalities)
    rng = np.random.default_rng(args.seed)
    labels = data.labels.numpy()
    planted = np.zeros(n, bool)
    planted[rng.choice(n, int(round(args.share * n)), replace=False)] = True
    view = np.full(n, -1)
    inputs = [x.clone() for x in data.inputs]
    for i in np.flatnonzero(planted):
        view[i] = rng.integers(m)
        donor = rng.choice(np.flatnonzero(labels != labels[i]))
        inputs[view[i]][i] = data.inputs[view[i]][donor]
    options = RecordOptions(ig=False, stability_starts=0)
    rows = []
    for start in range(0, n, args.chunk):
        stop = min(start + args.chunk, n)
        rows += chunk_records(lens, [x[start:stop] for x in inputs], data.ids[start:stop], labels[start:stop].tolist(),
                              [{}] * (stop - start), options)  # fmt: skip
    names = lens.config.modality_names
    shapley = np.array([[r[f"shapley_{v}"] for v in names] for r in rows])
    most_negative, which = shapley.min(axis=1), shapley.argmin(axis=1)
    correct = np.array([r["decision"] == lens.class_names[r_label] for r, r_label in zip(rows, labels)])
    print(f"{n} Handwritten test cases, {planted.sum()} with one view replaced by another digit's "
          f"(share {args.share}, seed {args.seed}), model {args.model.name}")
    print(f"accuracy: clean cases {correct[~planted].mean():.3f}, planted cases {correct[planted].mean():.3f}")
    print(f"{'threshold':>9} {'flagged':>8} {'recall':>7} {'precision':>9} {'right view':>10} {'clean flagged':>13}")
    for threshold in sorted({args.threshold, 0.02, 0.05, 0.1, 0.2}):
        flagged = most_negative < -threshold
        hits = flagged & planted
        recall = hits.sum() / max(planted.sum(), 1)
        precision = hits.sum() / max(flagged.sum(), 1)
        right = (which[hits] == view[hits]).mean() if hits.any() else float("nan")
        mark = " <- triage default" if threshold == TriageWeights().conflict else ""
        print(f"{threshold:>9.2f} {flagged.sum():>8d} {recall:>7.3f} {precision:>9.3f} {right:>10.3f} "
              f"{(flagged & ~planted).sum() / max((~planted).sum(), 1):>13.3f}{mark}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
