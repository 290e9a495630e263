"""How high deletion agreement can go on inspection: the ideal classifier against the models.

    python benchmarks/deletion_ceiling.py [--split val|test] [--model FOLDER ...] [--cases N] [--json PATH]

Deletion agreement (``deq_core.explain.faithfulness``): dropping the modality with the
largest Shapley value lowers the predicted class's probability more than dropping the
one with the smallest; docs/targets.md holds the shipped DEQs to >= 90% of the decidable
cases (those whose two drops differ by more than ``NEAR_TIE``). This
computes the same figure, with the same code, for the ideal classifier of the
inspection generator (``ideal_posteriors``: each modality's evidence read perfectly,
Bayes' rule, an absent modality simply unobserved) and for each model given, on every
case of the split. It also prints how often each model ranks its inputs as the ideal
does for the class it explains (the input with the largest Shapley value, and the
whole order; cases where the ideal ties at the top are left out), and how well it
predicts from every subset of its inputs (log loss of the true class per coalition;
the ideal's is the best achievable on average). Uses the generator's ground truth, so
inspection only; select on ``val``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deq_core.engine import load_model  # noqa: E402
from deq_core.data import load_dataset  # noqa: E402
from deq_core.data import (  # noqa: E402
    inspection,
    IDEAL_MODALITIES,
    InspectionCase,
    ideal_posteriors,
    inspection_cases,
)
from deq_core.explain import NEAR_TIE, TARGETS, deletion_agrees, deletion_near_tie, deletion_pair  # noqa: E402
from deq_core.explain import decidable_agreement  # noqa: E402
from deq_core.explain import ideal_shapley  # noqa: E402
from deq_core.explain import ModalityShapley, coalition_masks, modality_shapley  # noqa: E402

BATCH = 64


@dataclass(frozen=True)
class DeletionCeiling:
    """One classifier's deletion agreement on every case of a split.

    Attributes:
        name: ``"ideal"`` or the model folder's name.
        accuracy: of the full cases.
        deletion_agreement: as ``deq_core.explain.faithfulness`` computes it; a tie counts as a disagreement.
        disagreements: ``"class: largest > smallest"`` -> cases.
        near_ties: disagreements whose two single drops differ by <= ``NEAR_TIE``.
        agreement_without_near_ties: the agreement with those disagreements left out (a diagnostic).
        deletion_agreement_decidable: the target's figure: the agreement on the cases whose
            two single drops differ by more than ``NEAR_TIE`` (near-tie agreements left out too);
        decidable: the cases behind it.
        coalition_log_loss: coalition (``"photo+note"``, ``"none"`` ...) -> mean -log p(true class).
        ideal_top_agreement: share of cases whose largest Shapley value is on the input where
            the ideal classifier's is, for the class explained (cases where the ideal's
            largest is tied are left out; ``ranked`` counts the rest).
        ideal_ranking_agreement: the same for the whole order of the inputs.
        ranked: the cases behind the two agreements with the ideal.
    """

    name: str
    accuracy: float
    deletion_agreement: float
    disagreements: dict[str, int]
    near_ties: int
    agreement_without_near_ties: float
    deletion_agreement_decidable: float
    decidable: int
    coalition_log_loss: dict[str, float]
    ideal_top_agreement: float
    ideal_ranking_agreement: float
    ranked: int


def coalition_names(modality_names: tuple[str, ...]) -> list[str]:
    """Names of the 2^M coalitions in ``coalition_masks`` order: ``"none"``, ``"photo"``, ..."""
    rows = coalition_masks(len(modality_names)).tolist()
    return ["+".join(n for n, keep in zip(modality_names, row) if keep) or "none" for row in rows]


def summarise(
    name: str, cases: list[InspectionCase], explained: list[ModalityShapley], truth: np.ndarray
) -> DeletionCeiling:
    """``explained``: Shapley values of the predicted class per case; ``truth``: ``(n, 2^M)`` p(true class | S)."""
    labels = [case.label for case in cases]
    disagreements, near_ties, verdicts, top, ranking = Counter(), 0, [], [], []
    for case, shapley in zip(cases, explained):
        ideal = ideal_shapley(case, shapley.target).values.numpy()
        if np.isclose(ideal, ideal.max(), rtol=0, atol=1e-9).sum() == 1:  # the ideal names one top input
            values = shapley.values.numpy()
            top.append(values.argmax() == ideal.argmax())
            ranking.append(np.array_equal(np.argsort(-values), np.argsort(-ideal)))
        agrees = deletion_agrees(shapley)
        if agrees is None:
            continue
        verdicts.append(agrees)
        if not agrees:
            largest, smallest = deletion_pair(shapley)
            names = shapley.modality_names
            disagreements[f"{inspection.CLASS_NAMES[case.label]}: {names[largest]} > {names[smallest]}"] += 1
            near_ties += deletion_near_tie(shapley)
    log_loss = -np.log(np.clip(truth, 1e-12, None)).mean(axis=0)
    decidable_share, decidable = decidable_agreement(list(explained))
    return DeletionCeiling(
        name=name,
        accuracy=float(np.mean([s.target == label for label, s in zip(labels, explained)])),
        deletion_agreement=float(np.mean(verdicts)) if verdicts else math.nan,  # nan: nothing to rank
        disagreements=dict(disagreements.most_common()),
        near_ties=int(near_ties),
        agreement_without_near_ties=sum(verdicts) / decided if (decided := len(verdicts) - near_ties) else math.nan,
        deletion_agreement_decidable=math.nan if decidable_share is None else decidable_share,
        decidable=decidable,
        coalition_log_loss=dict(zip(coalition_names(explained[0].modality_names), log_loss.tolist())),
        ideal_top_agreement=float(np.mean(top)) if top else math.nan,
        ideal_ranking_agreement=float(np.mean(ranking)) if ranking else math.nan,
        ranked=len(top),
    )


def spread_rows(n: int, cases: int | None) -> list[int]:
    """``cases`` rows spread evenly over ``n`` (all of them for None), as the faithfulness command picks them."""
    if cases is None or cases >= n:
        return list(range(n))
    if cases < 1:
        raise ValueError(f"--cases must be positive, got {cases}")
    return np.unique(np.linspace(0, n - 1, cases).astype(int)).tolist()


def ideal_ceiling(split: str, cases: int | None = None) -> DeletionCeiling:
    """The ideal classifier on ``split``: it predicts the full case's most probable class."""
    everything = inspection_cases(split)
    cases = [everything[row] for row in spread_rows(len(everything), cases)]
    labels = [case.label for case in cases]
    posteriors = np.stack([ideal_posteriors(case) for case in cases])  # (n, 2^M, classes)
    explained = [ideal_shapley(case) for case in cases]
    return summarise("ideal", cases, explained, posteriors[np.arange(len(cases)), :, labels])


def model_ceiling(folder: Path, split: str, cases: int | None = None) -> DeletionCeiling:
    """A model's figure on ``split`` (Shapley values only, no gradients); the ideal's rows for ``cases``."""
    model = load_model(folder, "cpu")
    if model.config.dataset != "inspection" or model.config.modality_names != IDEAL_MODALITIES:
        raise ValueError(f"{folder} was trained on {model.config.dataset!r}; this reads the inspection generator")
    data = load_dataset("inspection", split, modalities=model.config.modalities)
    rows = torch.tensor(spread_rows(len(data), cases))
    explained, truth = [], []
    for batch in rows.split(BATCH):
        inputs, labels = tuple(x[batch] for x in data.inputs), data.labels[batch]
        explained += modality_shapley(model, inputs, cross_check=False)
        truth += [s.coalition_values.double().numpy() for s in modality_shapley(model, inputs, labels, False)]
    everything = inspection_cases(split)  # row i of data is case i
    return summarise(folder.name, [everything[row] for row in rows.tolist()], explained, np.stack(truth))


def format_row(row: DeletionCeiling) -> str:
    target = TARGETS["deletion_agreement_decidable"][1]
    lines = [
        f"{row.name}: accuracy {row.accuracy:.2%}, deletion agreement {row.deletion_agreement:.2%} "
        f"(the target, >= {target:.0%}, is on decidable cases), {sum(row.disagreements.values())} disagreements, "
        f"{row.near_ties} of them near ties (single drops within {NEAR_TIE}); "
        f"without the near ties {row.agreement_without_near_ties:.2%}; "
        f"on the {row.decidable} decidable cases {row.deletion_agreement_decidable:.2%}"
    ]
    lines += [f"  {count:4d}  {pair}" for pair, count in row.disagreements.items()]
    lines.append(f"  the ideal's ranking, on {row.ranked} cases: top input {row.ideal_top_agreement:.2%}, "
                 f"whole order {row.ideal_ranking_agreement:.2%}")
    lines.append("  log loss per coalition: " + ", ".join(f"{k} {v:.3f}" for k, v in row.coalition_log_loss.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--model", type=Path, nargs="*", default=[], help="inspection model folders")
    parser.add_argument("--cases", type=int, default=None, help="cases spread over the split (default: all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.cases is not None and args.cases < 1:
        parser.error(f"--cases must be positive, got {args.cases}")
    torch.set_num_threads(1)
    for folder in args.model:
        if not (folder / "config.json").is_file():
            parser.error(f"{folder} is not a model folder (no config.json)")
    rows = [ideal_ceiling(args.split, args.cases)]
    print(f"inspection {args.split}, {'every case' if args.cases is None else f'{args.cases} cases spread over it'}:")
    print(format_row(rows[0]))
    for folder in args.model:
        try:
            rows.append(model_ceiling(folder, args.split, args.cases))
        except ValueError as error:
            parser.error(str(error))
        print(format_row(rows[-1]))
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "cases": args.cases, "near_tie": NEAR_TIE,
                                         "rows": [asdict(r) for r in rows]}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
