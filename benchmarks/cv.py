"""Compare training recipes by k-fold cross-validation on the non-test rows.

    python benchmarks/cv.py --dataset handwritten --model deq [--folds 4] [--set dropout=0.3 ...] [--json PATH]

The shipped validation split is small (160 rows on Handwritten) and every DEQ
recipe scores 100% on it, so it cannot tell recipes apart. This pools the train
and validation splits (1600 rows on Handwritten), cuts them into stratified folds
(seeded), trains the recipe once per fold with that fold held out (the held-out
fold also picks the epoch, as the validation split does in training) and reports
accuracy and loss over all pooled rows. The test split is never loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from deq_core.data import MultimodalDataset, load_dataset  # noqa: E402
from deq_core.train import TrainingSettings, train_model  # noqa: E402


def pooled(train: MultimodalDataset, val: MultimodalDataset) -> MultimodalDataset:
    """Train and validation rows as one dataset (same modalities and classes)."""
    return dataclasses.replace(
        train,
        split="train+val",
        inputs=tuple(torch.cat([a, b]) for a, b in zip(train.inputs, val.inputs)),
        labels=torch.cat([train.labels, val.labels]),
        ids=train.ids + val.ids,
        texts={k: train.texts[k] + val.texts[k] for k in train.texts},
    )


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Row indices of each fold: every class shuffled (seeded) and dealt round-robin."""
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    for label in labels.unique().tolist():
        rows = (labels == label).nonzero().flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)].tolist()
        for i, row in enumerate(rows):
            parts[i % folds].append(row)
    return [torch.tensor(sorted(p)) for p in parts]


def parse_overrides(pairs: list[str]) -> dict:
    fields = {f.name: f.type for f in dataclasses.fields(TrainingSettings)}
    defaults = TrainingSettings()
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            raise SystemExit(f"--set {pair}: unknown setting {key!r}; choose from {sorted(fields)}")
        default = getattr(defaults, key)
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise SystemExit(f"--set {pair}: {key} takes true or false")
            overrides[key] = value.lower() == "true"
        else:
            overrides[key] = type(default)(value)
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="handwritten")
    parser.add_argument("--model", default="deq")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="TrainingSettings overrides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = TrainingSettings(**parse_overrides(args.set))
    train = load_dataset(args.dataset, "train")
    data = pooled(train, load_dataset(args.dataset, "val", modalities=train.modalities))
    folds = stratified_folds(data.labels, args.folds, args.fold_seed)
    rows, correct, loss = [], 0, 0.0
    for k, held_out in enumerate(folds):
        keep = torch.cat([f for j, f in enumerate(folds) if j != k])
        _, _, metrics = train_model(args.dataset, args.model, settings, "cpu", False, data.subset(keep), data.subset(held_out))
        n = len(held_out)
        correct += round(metrics["val_accuracy"] * n)
        loss += metrics["val_loss"] * n
        rows.append({"fold": k, "cases": n, "accuracy": metrics["val_accuracy"], "loss": metrics["val_loss"],
                     "best_epoch": metrics["best_epoch"]})  # fmt: skip
        print(f"fold {k}: accuracy {metrics['val_accuracy']:.4f} loss {metrics['val_loss']:.4f} "
              f"(best epoch {metrics['best_epoch']}, {metrics['training_seconds']:.0f} s)", flush=True)  # fmt: skip
    n = len(data)
    overrides = " ".join(args.set) or "defaults"
    print(f"{args.dataset}-{args.model} [{overrides}]: cross-validated accuracy {100 * correct / n:.2f} % "
          f"({n - correct} errors in {n}), loss {loss / n:.4f}; fold accuracy sd "
          f"{100 * statistics.stdev(r['accuracy'] for r in rows):.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"settings": dataclasses.asdict(settings), "folds": rows,
                                         "accuracy": correct / n, "loss": loss / n}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
