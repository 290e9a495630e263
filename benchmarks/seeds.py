"""Train one model recipe with several seeds and report test accuracy as mean +- std.

    python benchmarks/seeds.py --dataset handwritten --model deq --seeds 0 1 2 3 4 [--json PATH]
    python benchmarks/seeds.py --dataset inspection --model deq --dropout 0.3 --epochs 30 \
        --path-jacobian-weight 2 --modality-dropout 0.3 --unimodal-weight 0.25

Each seed trains with the shipped recipe (deq_core.train defaults plus the flags
given here), selects its epoch on the validation split, and is evaluated once on the
test split. Nothing is written except the optional JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from deq_core.data import load_dataset  # noqa: E402
from deq_core.engine import IMAGE_POOLINGS  # noqa: E402
from deq_core.evaluate import evaluate  # noqa: E402
from deq_core.train import TrainingSettings, train_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="handwritten")
    parser.add_argument("--model", default="deq")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=TrainingSettings.epochs)
    parser.add_argument("--dropout", type=float, default=TrainingSettings.dropout)
    parser.add_argument("--jacobian-weight", type=float, default=TrainingSettings.jacobian_weight)
    parser.add_argument("--path-jacobian-weight", type=float, default=TrainingSettings.path_jacobian_weight)
    parser.add_argument("--modality-dropout", type=float, default=TrainingSettings.modality_dropout)
    parser.add_argument("--unimodal-weight", type=float, default=TrainingSettings.unimodal_weight)
    parser.add_argument("--unimodal-modalities", default=TrainingSettings.unimodal_modalities)
    parser.add_argument("--image-pooling", default=TrainingSettings.image_pooling, choices=IMAGE_POOLINGS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = load_dataset(args.dataset, "train")
    val = load_dataset(args.dataset, "val", modalities=train.modalities)
    test = load_dataset(args.dataset, "test", modalities=train.modalities)
    rows = []
    for seed in args.seeds:
        settings = TrainingSettings(
            seed=seed, epochs=args.epochs, dropout=args.dropout, jacobian_weight=args.jacobian_weight,
            path_jacobian_weight=args.path_jacobian_weight, modality_dropout=args.modality_dropout,
            unimodal_weight=args.unimodal_weight, unimodal_modalities=args.unimodal_modalities,
            image_pooling=args.image_pooling,
        )
        model, _, metrics = train_model(args.dataset, args.model, settings, "cpu", False, train, val)
        result, _ = evaluate(model, test, name=f"{args.dataset}-{args.model}-seed{seed}")
        rows.append({"seed": seed, "val_accuracy": metrics["val_accuracy"], "val_loss": metrics["val_loss"],
                     "test_accuracy": result.accuracy, "iterations_median": result.iterations_median,
                     "settled_fraction": result.settled_fraction})  # fmt: skip
        print(f"seed {seed}: val {metrics['val_accuracy']:.4f} (loss {metrics['val_loss']:.4f})  test {result.accuracy:.4f}",
              flush=True)  # fmt: skip
    accuracies = [r["test_accuracy"] for r in rows]
    mean = statistics.mean(accuracies)
    std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    # Compare recipes on these two (validation), not on the test line below: choosing on the test set is selection.
    print(f"{args.dataset}-{args.model}: validation accuracy {100 * statistics.mean(r['val_accuracy'] for r in rows):.2f} %, "
          f"loss {statistics.mean(r['val_loss'] for r in rows):.4f} (means over seeds)")  # fmt: skip
    print(f"{args.dataset}-{args.model}: test accuracy {100 * mean:.2f} +- {100 * std:.2f} % over seeds {args.seeds}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "mean": mean, "std": std}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
