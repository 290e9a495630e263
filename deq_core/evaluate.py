"""Evaluate a model folder on a split: a stable JSON contract the app and reports read.

    python -m deq_core.evaluate --model assets/models/inspection-deq --json
    python -m deq_core.evaluate --model assets/models/inspection-deq --compare assets/models/inspection-late

``--compare`` adds a paired test per other model: on how many cases only one of the
two is right, and McNemar's exact p-value for a difference that large by chance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deq_core.engine.adapter import TrustCode, trust_for
from deq_core.engine.checkpoint import ModelLoadError, load_model
from deq_core.engine.config import SolverSettings
from deq_core.data import MultimodalDataset, load_dataset
from deq_core.engine.model import FusionModel

SETTLED_RELATIVE_RESIDUAL = 1e-3  # the figure docs/targets.md asks of every equilibrium
ECE_BINS = 15


@dataclass(frozen=True)
class Predictions:
    """Per-case outputs of a model on a dataset (n cases, C classes).

    ``iterations`` and ``relative_residual`` are None for feed-forward models.
    """

    ids: tuple[str, ...]
    labels: np.ndarray  # (n,)
    predicted: np.ndarray  # (n,)
    probabilities: np.ndarray  # (n, C)
    iterations: np.ndarray | None  # (n,)
    relative_residual: np.ndarray | None  # (n,) of the returned iterate
    status: tuple[str, ...] | None

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels


@dataclass(frozen=True)
class Evaluation:
    """The evaluation contract (``--json`` prints exactly these keys)."""

    model: str
    architecture: str
    dataset: str
    split: str
    n: int
    classes: list[str]
    accuracy: float
    macro_f1: float
    weighted_f1: float
    confusion_matrix: list[list[int]]
    false_alarm_rate: float | None
    miss_rate: float | None
    ece: float
    iterations_mean: float | None
    iterations_median: float | None
    iterations_p95: float | None
    converged_fraction: float | None
    settled_fraction: float | None
    latency_ms_median: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@torch.no_grad()
def predict(
    model: FusionModel, data: MultimodalDataset, solver: SolverSettings | None = None, batch_size: int = 256
) -> Predictions:
    model.eval()
    probabilities, iterations, residuals, status = [], [], [], []
    for start in range(0, len(data), batch_size):
        inputs = [x[start : start + batch_size].to(model.device) for x in data.inputs]
        out = model.run(inputs, solver=solver)
        probabilities.append(torch.softmax(out.logits, dim=1).cpu())
        if out.solve is not None:
            iterations.append(out.solve.iterations.cpu())
            residuals.append(out.solve.final_relative_residual.cpu())
            status.extend(out.solve.status)
    probabilities = torch.cat(probabilities).numpy()
    return Predictions(
        ids=data.ids,
        labels=data.labels.numpy(),
        predicted=probabilities.argmax(axis=1),
        probabilities=probabilities,
        iterations=torch.cat(iterations).numpy() if iterations else None,
        relative_residual=torch.cat(residuals).numpy() if residuals else None,
        status=tuple(status) if status else None,
    )


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def alarm_rates(labels: np.ndarray, predicted: np.ndarray, normal: int) -> tuple[float, float]:
    """(false alarm rate, miss rate): normal cases flagged as faulty; faulty cases passed as normal."""
    normal_cases = labels == normal
    faulty_cases = ~normal_cases
    false_alarm = float((predicted[normal_cases] != normal).mean()) if normal_cases.any() else 0.0
    miss = float((predicted[faulty_cases] == normal).mean()) if faulty_cases.any() else 0.0
    return false_alarm, miss


@torch.no_grad()
def single_case_latency_ms(model: FusionModel, data: MultimodalDataset, cases: int = 30) -> float:
    """Median wall time of one case's prediction (batch of one), after one warm-up call."""
    model.eval()
    rows = np.linspace(0, len(data) - 1, min(cases, len(data))).astype(int)
    model.run([x[:1].to(model.device) for x in data.inputs])
    times = []
    for row in rows:
        inputs = [x[row : row + 1].to(model.device) for x in data.inputs]
        start = time.perf_counter()
        model.run(inputs)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def evaluate(
    model: FusionModel, data: MultimodalDataset, name: str = "", solver: SolverSettings | None = None
) -> tuple[Evaluation, Predictions]:
    from sklearn.metrics import confusion_matrix, f1_score  # here: the app's first page reads evaluations without it

    p = predict(model, data, solver)
    classes = list(model.config.class_names)
    normal = model.config.normal_class
    false_alarm, miss = alarm_rates(p.labels, p.predicted, classes.index(normal)) if normal else (None, None)
    iterations = p.iterations.astype(float) if p.iterations is not None else None
    evaluation = Evaluation(
        model=name,
        architecture=model.config.architecture,
        dataset=data.name,
        split=data.split,
        n=len(data),
        classes=classes,
        accuracy=float(p.correct.mean()),
        macro_f1=float(f1_score(p.labels, p.predicted, average="macro", labels=range(len(classes)), zero_division=0)),
        weighted_f1=float(
            f1_score(p.labels, p.predicted, average="weighted", labels=range(len(classes)), zero_division=0)
        ),
        confusion_matrix=confusion_matrix(p.labels, p.predicted, labels=range(len(classes))).tolist(),
        false_alarm_rate=false_alarm,
        miss_rate=miss,
        ece=expected_calibration_error(p.probabilities, p.labels),
        iterations_mean=float(iterations.mean()) if iterations is not None else None,
        iterations_median=float(np.median(iterations)) if iterations is not None else None,
        iterations_p95=float(np.percentile(iterations, 95)) if iterations is not None else None,
        converged_fraction=float(np.mean([s == "converged" for s in p.status])) if p.status else None,
        settled_fraction=(
            float((p.relative_residual <= SETTLED_RELATIVE_RESIDUAL).mean()) if p.relative_residual is not None else None
        ),
        latency_ms_median=single_case_latency_ms(model, data),
    )
    return evaluation, p


@dataclass(frozen=True)
class PairedComparison:
    """Two models' decisions on the same cases, case by case.

    ``p_value`` is McNemar's exact test: under "neither model is better", each case that
    only one of them gets right is equally likely to go either way, so the split of
    ``only_model`` : ``only_other`` is a fair coin's (two-sided binomial test at 1/2).
    Cases both get right or both get wrong say nothing about which is better.
    """

    model: str
    other: str
    n: int
    both_right: int
    only_model: int  # cases only ``model`` decides correctly
    only_other: int
    both_wrong: int
    p_value: float

    @property
    def verdict(self) -> str:
        """The p-value in words, at the usual 5% level."""
        return "could well be chance" if self.p_value >= 0.05 else "unlikely to be chance (p < 0.05)"

    @property
    def difference(self) -> int:
        """Correct cases of ``model`` minus those of ``other``."""
        return self.only_model - self.only_other

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def mcnemar_exact(k: int, n: int) -> float:
    """Two-sided exact binomial p of ``k`` of ``n`` discordant cases under p = 1/2 (McNemar's exact test).

    The same number as ``scipy.stats.binomtest(k, n, 0.5).pvalue`` (symmetric null: twice the
    smaller tail), computed here so the app's first page does not import SciPy for it.
    """
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare_predictions(model: Predictions, other: Predictions, name: str = "", other_name: str = "") -> PairedComparison:
    """Paired comparison of two models' predictions on the same cases (see ``PairedComparison``)."""
    if model.ids != other.ids:
        raise ValueError(
            f"{other_name or 'the other model'} was evaluated on other cases than {name or 'this model'} "
            f"({len(other.ids)} vs {len(model.ids)} cases, or in another order); compare models on the same dataset and split"
        )
    a, b = model.correct, other.correct
    only_model, only_other = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_model + only_other
    p_value = mcnemar_exact(min(only_model, only_other), discordant)
    return PairedComparison(
        model=name, other=other_name, n=len(a), both_right=int((a & b).sum()), only_model=only_model,
        only_other=only_other, both_wrong=int((~a & ~b).sum()), p_value=float(min(1.0, p_value)),
    )  # fmt: skip


def format_comparison(c: PairedComparison) -> str:
    return (
        f"vs {c.other}: {c.difference:+d} correct cases of {c.n} (only {c.model} right: {c.only_model}, "
        f"only {c.other} right: {c.only_other}); McNemar exact p = {c.p_value:.3f}, {c.verdict}"
    )


def evaluate_folder(folder: str | Path, split: str = "test", device: str = "auto", data_path: str | None = None,
                    trust_code: TrustCode = False):  # fmt: skip
    model = load_model(folder, device=device, trust_code=trust_code)
    data = load_dataset(data_path or model.config.dataset, split, modalities=model.config.modalities)
    return evaluate(model, data, name=Path(folder).name)


def format_table(e: Evaluation) -> str:
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.2f}%"

    def num(value, digits=1):
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [
        ("model", f"{e.model} ({e.architecture})"),
        ("data", f"{e.dataset} / {e.split}, {e.n} cases"),
        ("accuracy", pct(e.accuracy)),
        ("macro F1 / weighted F1", f"{e.macro_f1:.4f} / {e.weighted_f1:.4f}"),
        ("false alarms / misses", f"{pct(e.false_alarm_rate)} / {pct(e.miss_rate)}"),
        ("calibration error (ECE)", f"{e.ece:.4f}"),
        ("iterations mean / median / p95", f"{num(e.iterations_mean)} / {num(e.iterations_median)} / {num(e.iterations_p95)}"),
        ("converged / settled (rel. residual <= 1e-3)", f"{pct(e.converged_fraction)} / {pct(e.settled_fraction)}"),
        ("latency per case (median)", f"{e.latency_ms_median:.2f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    header = "confusion matrix (rows: true, columns: predicted)"
    name_width = max(len(c) for c in e.classes)
    lines += ["", header, " " * (name_width + 1) + " ".join(f"{c[:6]:>6}" for c in e.classes)]
    for name, row in zip(e.classes, e.confusion_matrix):
        lines.append(f"{name:>{name_width}} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deq_core.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="model folder")
    parser.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--data", default=None, help="dataset name or folder (default: the model's own)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--compare", nargs="+", type=Path, default=[], metavar="FOLDER",
        help="other model folders: a paired test against each on the same cases",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    trust = trust_for(args.trust_code, args.model)
    try:
        evaluation, predictions = evaluate_folder(args.model, args.split, args.device, args.data, trust)
        comparisons = []
        for folder in args.compare:
            other = load_model(folder, device=args.device, trust_code=trust)  # --trust-code covers --model only
            data = load_dataset(args.data or other.config.dataset, args.split, modalities=other.config.modalities)
            other_predictions = predict(other, data)
            # A folder named like the model (an older copy of it) is named by its path instead.
            other_name = folder.name if folder.name != evaluation.model else str(folder)
            comparisons.append(compare_predictions(predictions, other_predictions, evaluation.model, other_name))
    except (ModelLoadError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        out = evaluation.to_dict()
        if args.compare:
            out["comparisons"] = [c.to_dict() for c in comparisons]
        print(json.dumps(out))
    else:
        print(format_table(evaluation))
        if comparisons:
            print("\n" + "\n".join(map(format_comparison, comparisons)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
