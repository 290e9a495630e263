"""Check that a model's explanations are faithful, on a split of its dataset.

    python -m deq_core.faithfulness --model assets/models/inspection-deq --json

Measures, over the chosen cases:

* completeness_pass_rate: Integrated Gradients add up to F(x) - F(baseline) within 1%;
* deletion_agreement_decidable (the target): dropping the modality with the largest
  Shapley value lowers the target probability more than dropping the one with the
  smallest, on the decidable cases only, those whose two single drops differ by more
  than ``NEAR_TIE`` (deletion_decidable_n counts them). Where two inputs each settle a
  case, dropping either costs nothing and even the ideal classifier's drops tie
  (``benchmarks/deletion_ceiling.py``): such a case says nothing about the ranking;
* deletion_agreement: the same share over every ranked case, a tie counting as a failure
  (kept for comparison with earlier releases);
  deletion_disagreements counts the cases where it does not, by "largest > smallest"
  modality pair (where the Shapley ranking and the single drops part ways);
  deletion_near_ties counts those of them whose two drops are within ``NEAR_TIE`` of
  each other (reported beside the target, not part of it: where two inputs each
  settle the case, even the ideal classifier's drops tie, see
  ``benchmarks/deletion_ceiling.py``);
* ideal_top_agreement: where the dataset knows the truth of a case (a reference,
  ``deq_core.data.references``: the inspection generator's ideal classifier), the share
  of cases whose largest Shapley value is on the reference's top input for the class
  explained; cases where the reference ties at the top are left out (ideal_top_n counts
  the rest); None for a dataset without references. ``--compare FOLDER ...`` computes it
  (and the decidable deletion agreement) for other models on the same cases, so the
  DEQ can be held to "no lower than any baseline's";
* randomization_spearman: Adebayo et al. (2018) model-randomisation test, mean |Spearman|
  between the trained model's attributions and those of the same architecture with fresh
  weights (same input standardisation); low means the attributions depend on what the
  model learned;
* batch_invariance_max_abs_diff: attributions with internal batch size 1 vs 64;
* explain_seconds_median: wall time of one full ``explain_case``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from deq_core.explain.attribution import DEFAULT_STEPS, integrated_gradients
from deq_core.engine.adapter import trust_for
from deq_core.engine.checkpoint import ModelLoadError, load_model
from deq_core.data import MultimodalDataset, load_dataset
from deq_core.data.references import dataset_reference
from deq_core.explain.explanation import Explanation, explain_case
from deq_core.engine.model import FusionModel, build_model
from deq_core.explain.shapley import ModalityShapley, modality_shapley

# The targets for the shipped DEQ models, docs/targets.md (explain time: the inspection model, 2-core CPU).
TARGETS = {
    "completeness_pass_rate": (">=", 0.95),
    "deletion_agreement_decidable": (">=", 0.90),
    "ideal_top_agreement": (">=", 0.85),
    "randomization_spearman": ("<", 0.3),
    "batch_invariance_max_abs_diff": ("<=", 1e-5),
    "explain_seconds_median": ("<=", 1.0),
}
STANDARDISATION_BUFFERS = ("input_mean", "center", "scale")
NEAR_TIE = 0.01  # two single drops this close cost the same to a reader of probabilities
TOP_TIE = 1e-9  # reference Shapley values this close tie at the top (as benchmarks/deletion_ceiling.py)
SHAPLEY_BATCH = 64


@dataclass(frozen=True)
class Compared:
    """Another model's ranking figures on the same cases (``--compare``).

    Attributes:
        ideal_top_agreement: as ``Faithfulness.ideal_top_agreement``; None without references.
        ideal_top_n: the cases behind it.
        deletion_agreement_decidable: as ``Faithfulness.deletion_agreement_decidable``.
        deletion_decidable_n: the cases behind it.
    """

    ideal_top_agreement: float | None
    ideal_top_n: int
    deletion_agreement_decidable: float | None
    deletion_decidable_n: int


@dataclass(frozen=True)
class Faithfulness:
    """The faithfulness contract (``--json`` prints exactly these keys).

    ``completeness_pass_rate_settled`` counts only cases whose every solve converged,
    separating integration error from solver error; None when there are none.
    """

    model: str
    architecture: str
    dataset: str
    split: str
    n: int
    n_steps: int
    baseline: str
    completeness_pass_rate: float
    completeness_pass_rate_settled: float | None
    relative_delta_median: float | None
    deletion_agreement_decidable: float | None
    deletion_decidable_n: int
    deletion_agreement: float | None
    deletion_disagreements: dict[str, int]
    deletion_near_ties: int
    ideal_top_agreement: float | None
    ideal_top_n: int
    randomization_spearman: float | None
    batch_invariance_max_abs_diff: float
    batch_invariance_cases: int
    explain_seconds_median: float
    explain_cpu_seconds_median: float
    solves_converged_fraction: float
    reliable_fraction: float
    compared: dict[str, Compared] = dataclasses.field(default_factory=dict)

    def ideal_top_no_lower_than_compared(self) -> bool | None:
        """The target beside ``ideal_top_agreement``: no compared model ranks the reference's top input first more often.

        None when there is nothing to compare (no reference, or no compared model with one).
        """
        others = [c.ideal_top_agreement for c in self.compared.values() if c.ideal_top_agreement is not None]
        if self.ideal_top_agreement is None or not others:
            return None
        return self.ideal_top_agreement >= max(others)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def randomized_copy(model: FusionModel, seed: int = 0) -> FusionModel:
    """The same architecture with freshly initialised weights but the trained input standardisation.

    Keeping the standardisation (and training means) makes the two models see the
    same inputs and the same baselines, so only the learned weights differ.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_model(model.config)
    with torch.no_grad():
        for trained, new in zip(model.encoders, fresh.encoders):
            for name in STANDARDISATION_BUFFERS:
                getattr(new, name).copy_(getattr(trained, name))
    return fresh.to(model.device).eval()


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of a 1-D tensor, ties sharing their average rank (as Spearman needs)."""
    order = x.argsort(stable=True)
    _, inverse, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0)
    average = (ends - counts + ends - 1).double() / 2
    ranks = torch.empty(x.numel(), dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two equally long vectors; NaN when either is constant."""
    ra, rb = average_ranks(a.reshape(-1).cpu()), average_ranks(b.reshape(-1).cpu())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float(ra @ rb) / denominator if denominator > 0 else math.nan


def deletion_pair(shapley: ModalityShapley) -> tuple[int, int] | None:
    """The modalities with the largest and the smallest Shapley value.

    None when all modalities have the same value (nothing to rank) or there is one modality.
    """
    values = shapley.values
    largest, smallest = int(values.argmax()), int(values.argmin())
    if largest == smallest or float(values[largest] - values[smallest]) == 0.0:
        return None
    return largest, smallest


def deletion_agrees(shapley: ModalityShapley) -> bool | None:
    """Dropping the largest-Shapley modality lowers the target probability more than dropping the smallest.

    None where ``deletion_pair`` is None.
    """
    pair = deletion_pair(shapley)
    if pair is None:
        return None
    largest, smallest = pair
    drop_largest = shapley.full_value - shapley.without(largest)
    drop_smallest = shapley.full_value - shapley.without(smallest)
    return drop_largest > drop_smallest


def deletion_near_tie(shapley: ModalityShapley) -> bool:
    """The single drops of the largest- and smallest-Shapley modality are within ``NEAR_TIE``.

    False where ``deletion_pair`` is None.
    """
    pair = deletion_pair(shapley)
    if pair is None:
        return False
    largest, smallest = pair
    return abs(shapley.without(largest) - shapley.without(smallest)) <= NEAR_TIE


def deletion_decidable(shapley: ModalityShapley) -> bool:
    """The single drops of the largest- and smallest-Shapley modality differ by more than ``NEAR_TIE``.

    Only such a case can tell a right ranking from a wrong one; False where ``deletion_pair`` is None.
    """
    return deletion_pair(shapley) is not None and not deletion_near_tie(shapley)


def decidable_agreement(shapleys: list[ModalityShapley]) -> tuple[float | None, int]:
    """Deletion agreement over the decidable cases of ``shapleys``, and how many they are (None: none)."""
    verdicts = [bool(deletion_agrees(s)) for s in shapleys if deletion_decidable(s)]
    return (float(np.mean(verdicts)) if verdicts else None), len(verdicts)


def top_agrees(model: ModalityShapley, reference: ModalityShapley) -> bool | None:
    """The model's largest Shapley value is on the reference's top input (matched by name).

    None when the reference's largest value is tied (it names no single top input).
    """
    values = np.asarray(reference.values, dtype=float)
    if np.isclose(values, values.max(), rtol=0, atol=TOP_TIE).sum() != 1:
        return None
    top_reference = reference.modality_names[int(values.argmax())]
    return model.modality_names[int(model.values.argmax())] == top_reference


def reference_top_agreement(
    data: MultimodalDataset, rows: list[int], shapleys: list[ModalityShapley], model: FusionModel
) -> tuple[float | None, int]:
    """Share of ``rows`` whose Shapley top input is the dataset reference's, and the cases behind it.

    ``shapleys[i]`` explains row ``rows[i]``; the reference explains the same class.
    (None, 0) when the dataset has no reference for any of the cases.
    """
    verdicts = []
    for row, shapley in zip(rows, shapleys):
        inputs, texts = _case(data, row, "cpu")
        reference = dataset_reference(
            data.name, data.ids[row], inputs, texts, shapley.target, model.config.modality_names
        )
        if reference is not None and (agrees := top_agrees(shapley, reference.shapley)) is not None:
            verdicts.append(agrees)
    return (float(np.mean(verdicts)) if verdicts else None), len(verdicts)


def ranking_figures(model: FusionModel, data: MultimodalDataset, rows: list[int]) -> Compared:
    """Another model's ranking figures on ``rows`` of ``data`` (Shapley values only, no gradients)."""
    shapleys: list[ModalityShapley] = []
    for batch in torch.tensor(rows).split(SHAPLEY_BATCH):
        inputs = tuple(x[batch].to(model.device) for x in data.inputs)
        shapleys += modality_shapley(model, inputs, cross_check=False)
    top, top_n = reference_top_agreement(data, rows, shapleys, model)
    decidable, decidable_n = decidable_agreement(shapleys)
    return Compared(top, top_n, decidable, decidable_n)


def case_rows(data: MultimodalDataset, cases: int) -> list[int]:
    """``cases`` rows spread evenly over ``data`` (every row when it has no more)."""
    return np.unique(np.linspace(0, len(data) - 1, min(cases, len(data))).astype(int)).tolist()


def batch_invariance(model: FusionModel, inputs, n_steps: int = DEFAULT_STEPS, baseline=None) -> float:
    """Largest |difference| between attributions computed with internal batch size 1 and 64."""
    one = integrated_gradients(model, inputs, baseline=baseline, n_steps=n_steps, internal_batch_size=1)
    many = integrated_gradients(model, inputs, baseline=baseline, n_steps=n_steps, internal_batch_size=64)
    return max(float((a.flat() - b.flat()).abs().max()) for a, b in zip(one, many))


def _case(data: MultimodalDataset, row: int, device) -> tuple[tuple[torch.Tensor, ...], dict[str, str]]:
    inputs = tuple(x[row : row + 1].to(device) for x in data.inputs)
    texts = {name: values[row] for name, values in data.texts.items()}
    return inputs, texts


def measure(
    model: FusionModel,
    data: MultimodalDataset,
    cases: int = 50,
    n_steps: int = DEFAULT_STEPS,
    baseline: str | None = None,
    invariance_cases: int = 3,
    seed: int = 0,
    name: str = "",
    progress: bool = True,
    compared: dict[str, FusionModel] | None = None,
) -> tuple[Faithfulness, list[Explanation]]:
    """Faithfulness figures over ``cases`` cases spread evenly over ``data``.

    ``compared``: name -> another model on the same dataset, whose ranking figures are
    computed on the same cases (``Faithfulness.compared``).
    """
    rows = case_rows(data, cases)
    randomized = randomized_copy(model, seed)
    warm_inputs, _ = _case(data, rows[0], model.device)
    explain_case(model, warm_inputs, n_steps=n_steps, baseline=baseline)  # first-call overheads are not the case's

    explanations, wall, cpu, correlations = [], [], [], []
    for row in tqdm(rows, desc="explaining", disable=not progress, file=sys.stderr):
        inputs, texts = _case(data, row, model.device)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        explanation = explain_case(model, inputs, texts=texts, n_steps=n_steps, baseline=baseline)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
        explanations.append(explanation)
        (random_attribution,) = integrated_gradients(
            randomized, inputs, target=explanation.target, baseline=baseline, n_steps=n_steps
        )
        correlations.append(spearman(explanation.attribution.flat(), random_attribution.flat()))

    invariance_rows = rows[: max(0, invariance_cases)]
    invariance = 0.0
    for row in tqdm(invariance_rows, desc="batch invariance", disable=not progress, file=sys.stderr):
        inputs, _ = _case(data, row, model.device)
        invariance = max(invariance, batch_invariance(model, inputs, n_steps, baseline))

    attributions = [e.attribution for e in explanations]
    settled = [a for e, a in zip(explanations, attributions) if e.reliability.solves_converged]
    verdicts = [(e.shapley, deletion_agrees(e.shapley)) for e in explanations]
    deletions = [agrees for _, agrees in verdicts if agrees is not None]
    disagreements = Counter(
        " > ".join(shapley.modality_names[i] for i in deletion_pair(shapley))
        for shapley, agrees in verdicts
        if agrees is False
    )
    decidable, decidable_n = decidable_agreement([e.shapley for e in explanations])
    top, top_n = reference_top_agreement(data, rows, [e.shapley for e in explanations], model)
    others = {other: ranking_figures(m, data, rows) for other, m in (compared or {}).items()}
    finite_correlations = [abs(c) for c in correlations if math.isfinite(c)]
    deltas = [a.relative_delta for a in attributions if math.isfinite(a.relative_delta)]
    result = Faithfulness(
        model=name,
        architecture=model.config.architecture,
        dataset=data.name,
        split=data.split,
        n=len(explanations),
        n_steps=n_steps,
        baseline=baseline or "default",
        completeness_pass_rate=float(np.mean([a.complete for a in attributions])),
        completeness_pass_rate_settled=float(np.mean([a.complete for a in settled])) if settled else None,
        relative_delta_median=float(np.median(deltas)) if deltas else None,
        deletion_agreement_decidable=decidable,
        deletion_decidable_n=decidable_n,
        deletion_agreement=float(np.mean(deletions)) if deletions else None,
        deletion_disagreements=dict(disagreements.most_common()),
        deletion_near_ties=sum(deletion_near_tie(shapley) for shapley, agrees in verdicts if agrees is False),
        ideal_top_agreement=top,
        ideal_top_n=top_n,
        randomization_spearman=float(np.mean(finite_correlations)) if finite_correlations else None,
        batch_invariance_max_abs_diff=invariance,
        batch_invariance_cases=len(invariance_rows),
        explain_seconds_median=float(np.median(wall)),
        explain_cpu_seconds_median=float(np.median(cpu)),
        solves_converged_fraction=float(np.mean([e.reliability.solves_converged for e in explanations])),
        reliable_fraction=float(np.mean([e.reliable for e in explanations])),
        compared=others,
    )
    return result, explanations


def meets_target(key: str, value: float | None) -> bool | None:
    if key not in TARGETS or value is None:
        return None
    comparison, bound = TARGETS[key]
    return {">=": value >= bound, "<=": value <= bound, "<": value < bound}[comparison]


def format_table(f: Faithfulness) -> str:
    def show(key: str, value) -> str:
        if value is None:
            return "n/a"
        if key in ("completeness_pass_rate", "completeness_pass_rate_settled", "deletion_agreement",
                   "deletion_agreement_decidable", "ideal_top_agreement", "solves_converged_fraction",
                   "reliable_fraction"):  # fmt: skip
            text = f"{100 * value:.1f}%"
        elif key.endswith("seconds_median"):
            text = f"{value:.3f} s"
        elif key == "deletion_disagreements":
            text = ", ".join(f"{pair}: {count}" for pair, count in value.items()) or "none"
        elif key == "batch_invariance_max_abs_diff":
            text = f"{value:.2e}"
        else:
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
        verdict = meets_target(key, value)
        if verdict is not None:
            comparison, bound = TARGETS[key]
            text += f"   ({'ok' if verdict else 'MISSED'}: target {comparison} {bound:g})"
        if key == "ideal_top_agreement" and (highest := f.ideal_top_no_lower_than_compared()) is not None:
            text += f"   ({'ok' if highest else 'MISSED'}: no lower than any compared model)"
        return text

    def show_compared(name: str, c: Compared) -> str:
        top = "n/a" if c.ideal_top_agreement is None else f"{100 * c.ideal_top_agreement:.1f}%"
        deletion = "n/a" if c.deletion_agreement_decidable is None else f"{100 * c.deletion_agreement_decidable:.1f}%"
        return (f"ideal_top_agreement {top} of {c.ideal_top_n}, "
                f"deletion_agreement_decidable {deletion} of {c.deletion_decidable_n}")  # fmt: skip

    rows = [("model", f"{f.model} ({f.architecture})"), ("data", f"{f.dataset} / {f.split}, {f.n} cases"),
            ("integration", f"{f.n_steps} steps, baseline {f.baseline}")]  # fmt: skip
    skip = {"model", "architecture", "dataset", "split", "n", "n_steps", "baseline", "compared"}
    rows += [(k, show(k, v)) for k, v in f.to_dict().items() if k not in skip]
    rows += [(f"compared: {name}", show_compared(name, c)) for name, c in f.compared.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deq_core.faithfulness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="model folder")
    parser.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--data", default=None, help="dataset name or folder (default: the model's own)")
    parser.add_argument("--cases", type=int, default=50, help="cases, spread evenly over the split")
    parser.add_argument("--n-steps", type=int, default=DEFAULT_STEPS, help="integration steps")
    parser.add_argument("--baseline", default=None, help="attribution baseline (default: zero; padding for text)")
    parser.add_argument("--invariance-cases", type=int, default=3, help="cases for the batch-invariance check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the randomised model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--compare", type=Path, nargs="*", default=[],
                        help="other model folders (same dataset): their ranking figures on the same cases")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    try:
        model = load_model(args.model, device=args.device, trust_code=trust_for(args.trust_code, args.model))
        data = load_dataset(args.data or model.config.dataset, args.split, modalities=model.config.modalities)
        compared = {folder.name: load_model(folder, device=args.device) for folder in args.compare}
        for folder, other in zip(args.compare, compared.values()):
            if other.config.modalities != model.config.modalities:
                raise ValueError(f"{folder} does not take {args.model}'s inputs; --compare needs models of one dataset")
        result, _ = measure(
            model, data, cases=args.cases, n_steps=args.n_steps, baseline=args.baseline,
            invariance_cases=args.invariance_cases, seed=args.seed, name=args.model.name, progress=not args.quiet,
            compared=compared,
        )  # fmt: skip
    except (ModelLoadError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict()) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
