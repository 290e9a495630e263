"""Which evidence the inspection errors share: each error grouped by what its inputs truly show.

    python benchmarks/inspection_errors.py --model assets/models/inspection-late [--split val] [--json PATH]

The inspection generator records, for every case, what each modality actually
shows (a bright or dark line, a branched crack, a temperature ramp, a specific,
vague or wrong note ...). This groups a model's errors by that ground truth, and
for late fusion, whose heads each read one modality, prints what the photo head
says on average for each kind of photo. It is how docs/experiments.md found that most
errors are dark straight lines called cracks (``--image-pooling``). Use it on the
validation split to compare recipes; the test split is for reporting.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from deq_core.engine import load_model  # noqa: E402
from deq_core.data import MultimodalDataset, load_dataset  # noqa: E402
from deq_core.data import CaseEvidence, inspection, inspection_cases  # noqa: E402
from deq_core.evaluate import predict  # noqa: E402
from deq_core.engine import FusionModel  # noqa: E402


def error_evidence(model: FusionModel, data: MultimodalDataset, evidence: list[CaseEvidence]) -> Counter:
    """Errors counted by (truth, predicted, photo, sensors, note kind, note about)."""
    predictions = predict(model, data)
    errors = Counter()
    for i in (~predictions.correct).nonzero()[0]:
        shows = evidence[i]
        errors[(inspection.CLASS_NAMES[predictions.labels[i]], inspection.CLASS_NAMES[predictions.predicted[i]],
                shows.photo, shows.sensors, shows.note, shows.note_about)] += 1  # fmt: skip
    return errors


@torch.no_grad()
def photo_head_means(
    model: FusionModel, data: MultimodalDataset, evidence: list[CaseEvidence]
) -> dict[str, dict[str, float]]:
    """Late fusion only: the photo head's mean class probabilities for each kind of photo."""
    photo = [m.name for m in model.config.modalities].index("photo")
    probabilities = torch.softmax(model.eval().modality_logits(list(data.inputs))[:, photo], dim=-1)
    kinds = [shows.photo for shows in evidence]
    means = {}
    for kind in sorted(set(kinds)):
        rows = torch.tensor([k == kind for k in kinds])
        means[kind] = {name: float(p) for name, p in zip(inspection.CLASS_NAMES, probabilities[rows].mean(dim=0))}
    return means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="an inspection model folder")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.model, "cpu")
    if model.config.dataset != "inspection":
        parser.error(f"{args.model} was trained on {model.config.dataset!r}; this reads the inspection generator")
    data = load_dataset("inspection", args.split, modalities=model.config.modalities)
    evidence = [case.evidence for case in inspection_cases(args.split)]  # row i of data is case i
    n, errors = len(data), error_evidence(model, data, evidence)
    print(f"{args.model.name} on {args.split}: {sum(errors.values())} errors of {n}")
    print("count  truth -> predicted | photo | sensors | note (about)")
    for (truth, said, photo, sensors, note, about), count in errors.most_common():
        print(f"{count:5d}  {truth} -> {said} | {photo} | {sensors} | {note} ({about})")
    heads = photo_head_means(model, data, evidence) if model.config.architecture == "late" else None
    if heads:
        print("photo head, mean probability per kind of photo:")
        for kind, means in heads.items():
            top = sorted(means.items(), key=lambda item: -item[1])[:3]
            print(f"  {kind:15s} " + ", ".join(f"{name} {p:.2f}" for name, p in top))
    if args.json:
        rows = [{"truth": k[0], "predicted": k[1], "photo": k[2], "sensors": k[3], "note": k[4], "note_about": k[5],
                 "count": c} for k, c in errors.most_common()]  # fmt: skip
        args.json.write_text(json.dumps({"model": args.model.name, "split": args.split, "n": n, "errors": rows,
                                         "photo_head": heads}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
