"""Train the torchdeq fusion example on the inspection data and write its model folder.

    python examples/torchdeq_fusion/train.py                       # the shipped model (a few minutes on 1 CPU)
    python examples/torchdeq_fusion/train.py --epochs 1 --cases 64 --out /tmp/tiny   # a tiny one (tests)

The folder it writes (``model/`` beside this script by default) is what the lens opens:
``adapter.json`` naming ``torchdeq_fusion.model:build``, ``config.json`` (the modalities,
classes and solver the lens uses), ``weights.safetensors``, ``checksums.json``, and a copy
of the ``torchdeq_fusion`` package, so the folder is self-contained.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from deq_core.data import load_dataset  # noqa: E402
from deq_core.engine import ModelConfig, SolverSettings  # noqa: E402
from deq_core.engine import save_adapter  # noqa: E402
from torchdeq_fusion.model import build  # noqa: E402

SHIPPED = HERE.parents[1] / "assets" / "models" / "inspection-deq" / "config.json"


def example_config(width: int) -> ModelConfig:
    """The inspection modalities and classes (those of the shipped DEQ), at width ``width``."""
    shipped = ModelConfig.from_dict(json.loads(SHIPPED.read_text()))
    return ModelConfig(architecture="deq", modalities=shipped.modalities, class_names=shipped.class_names,
                       width=width, groups=1, dataset="inspection", normal_class=shipped.normal_class,
                       solver=SolverSettings(method="anderson", tol=1e-4, max_iter=40))  # fmt: skip


def train(out: Path, epochs: int, cases: int | None, width: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    config = example_config(width)
    data = load_dataset("inspection", "train", modalities=config.modalities)
    if cases is not None and cases < len(data):
        data = data.subset(list(range(cases)))
    model = build(config, {})
    with torch.no_grad():  # training statistics: the lens's "absent" input and corruption scale
        for i, (m, x) in enumerate(zip(config.modalities, data.inputs)):
            if m.kind != "text":
                getattr(model, f"mean_{i}").copy_(x.float().mean(0))
                getattr(model, f"scale_{i}").copy_(x.float().std().clamp_min(1e-6))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    start, losses = time.perf_counter(), []
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(data), generator=generator).split(64):
            logits = model(*(x[batch] for x in data.inputs))
            loss = torch.nn.functional.cross_entropy(logits, data.labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        print(f"epoch {_ + 1}/{epochs}: loss {sum(losses[-10:]) / len(losses[-10:]):.3f}", flush=True)
    model.eval()
    test = load_dataset("inspection", "test", modalities=config.modalities)
    with torch.no_grad():
        accuracy = float((model(*test.inputs).argmax(1) == test.labels).float().mean())
    metrics = {"test_accuracy": accuracy, "epochs": epochs, "train_cases": len(data), "seconds": time.perf_counter() - start}
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(HERE / "torchdeq_fusion", out / "code" / "torchdeq_fusion",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    save_adapter(model, config, out, "torchdeq_fusion.model:build", code="code",
                 extra_files={"metrics.json": json.dumps(metrics, indent=2) + "\n"})  # fmt: skip
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "model")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cases", type=int, default=None, help="train on the first N training cases (default all)")
    parser.add_argument("--width", type=int, default=32)
    args = parser.parse_args(argv)
    metrics = train(args.out, args.epochs, args.cases, args.width)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
