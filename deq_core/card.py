"""The model card (Mitchell et al. 2019), generated from what the project measured.

An auditor asks for one document per model: what it is, what it is for, how well
it does on whom, how it breaks, and what it should not be used for. The measured
sections come from the model folder (config, ``metrics.json``) and from fresh,
seeded measurements on its test split: evaluation disaggregated by class, a quick
robustness sweep, faithfulness checks of the explanations and the share of cases
whose fixed point is stable and unique (``Lens.stability``). The judgement
sections (intended use, ethics, caveats) are the owner's: they are read from an
optional ``card.json`` in the model folder and otherwise printed as clearly marked
placeholders, never invented.

``build_card`` measures (cached on disk by checksum, data and options, so a second
card or the Overview's download is instant), ``card_markdown`` writes the Hugging
Face layout (YAML front matter, then Markdown), ``card_html`` a self-contained page
and ``deq_core.pdf.card_pdf`` a PDF. ``deq-lens card --model M --out DIR`` writes all
three.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CARD_FIELDS_FILE = "card.json"
CACHE_NAMESPACE = "model-card"
CARD_VERSION = "1"  # bump when the measurements change, so cached cards are not reused
PLACEHOLDER = "[TO BE COMPLETED BY THE MODEL OWNER]"

# owner field -> (section it belongs to, what the owner is asked for)
OWNER_FIELDS: dict[str, str] = {
    "owner": "who owns and answers for the model (team, contact)",
    "license": "the licence the weights are released under (e.g. apache-2.0, or 'other')",
    "intended_use": "the decisions the model is meant to support and who acts on them",
    "out_of_scope": "uses the model must not be put to",
    "factors": "the groups, conditions and instruments performance may depend on in deployment",
    "training_data": "where the training data came from, how it was collected and labelled",
    "ethical_considerations": "risks to people, safety or fairness, and how they are mitigated",
    "caveats": "known limitations and recommendations for the people who use the decisions",
}


class CardFieldsError(ValueError):
    """A ``card.json`` that cannot be used: the message names the key and what is wrong."""


def read_owner_fields(folder: str | Path) -> dict[str, str | None]:
    """The owner's free text from ``card.json`` (None for every field not given).

    Unknown keys and non-text values are refused rather than dropped, so a typo in a
    key does not silently leave a placeholder on the card.
    """
    path = Path(folder) / CARD_FIELDS_FILE
    fields: dict[str, str | None] = dict.fromkeys(OWNER_FIELDS)
    if not path.is_file():
        return fields
    try:
        given = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CardFieldsError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(given, dict):
        raise CardFieldsError(f"{path}: expected an object of fields, got {type(given).__name__}")
    for key, value in given.items():
        if key not in OWNER_FIELDS:
            raise CardFieldsError(f"{path}: unknown field {key!r}; the fields are {', '.join(OWNER_FIELDS)}")
        if not isinstance(value, str):
            raise CardFieldsError(f"{path}: field {key!r} must be text, got {type(value).__name__}")
        fields[key] = value.strip() or None
    return fields


# --------------------------------------------------------------------------- measurements


def per_class_metrics(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> list[dict]:
    """Precision, recall (the class's accuracy), F1 and support of each class (rows true, columns predicted)."""
    matrix = np.asarray(confusion, dtype=float)
    rows = []
    for k, name in enumerate(classes):
        support, called, hit = matrix[k].sum(), matrix[:, k].sum(), matrix[k, k]
        precision = hit / called if called else None
        recall = hit / support if support else None
        f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (0.0 if support else None)
        rows.append({"class": name, "support": int(support), "precision": precision, "recall": recall, "f1": f1})
    return rows


def _spread(n: int, count: int) -> list[int]:
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int)).tolist()


def stability_share(lens, cases: int = 100, starts: int = 8, data=None) -> dict | None:
    """Share of ``cases`` test cases (spread evenly) whose fixed point is locally stable and unique.

    None for a model that decides from no fixed point. Uses ``Lens.stability``, so
    the cases the Inspect page already assessed are not solved again.
    """
    if lens.config.architecture != "deq" or not lens.equilibrium:
        return None
    data = data if data is not None else lens.data()
    rows = _spread(len(data), cases)
    stable = unique = both = 0
    for row in rows:
        found = lens.stability(lens.case(data.ids[row], data=data), starts=starts)
        is_stable, is_unique = bool(found.local.stable), bool(found.uniqueness.unique)
        stable, unique, both = stable + is_stable, unique + is_unique, both + (is_stable and is_unique)
    n = len(rows)
    return {"cases": n, "starts": starts, "stable_fraction": stable / n, "unique_fraction": unique / n,
            "stable_unique_fraction": both / n, "command": f"deq-lens stability --model {lens.folder} --cases {n}"}  # fmt: skip


def _robustness(lens, data, severities: Sequence[float], cache_dir: str | Path | None = None) -> list[dict]:
    from deq_core.explain import robustness

    report = lens.robustness(None, data, severities, cache_dir=cache_dir or robustness.default_cache_dir())
    keep = ("modality", "clean_accuracy", "worst_accuracy", "relative_robustness", "retained_accuracy")
    return [{k: (None if isinstance(r[k], float) and np.isnan(r[k]) else r[k]) for k in keep}
            for r in report.summary.to_dict("records")]  # fmt: skip


def _faithfulness(lens, data, cases: int) -> dict:
    from deq_core.explain import faithfulness

    found, _ = faithfulness.measure(lens.model, data, cases=cases, name=lens.name, progress=False)
    keep = ("n", "n_steps", "baseline", "completeness_pass_rate", "deletion_agreement", "randomization_spearman",
            "batch_invariance_max_abs_diff", "reliable_fraction")  # fmt: skip
    return {k: getattr(found, k) for k in keep}


@dataclass(frozen=True)
class CardOptions:
    """How much to measure: the card states each figure's case count and the command that re-measures it."""

    stability_cases: int = 100
    faithfulness_cases: int = 8
    robustness_severities: tuple[float, ...] = (0.0, 0.5, 1.0)

    def __post_init__(self) -> None:
        for name in ("stability_cases", "faithfulness_cases"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if 0.0 not in self.robustness_severities:
            raise ValueError("the robustness severities must include 0 (the clean accuracy the others are compared with)")


def measure(lens, options: CardOptions = CardOptions(), use_cache: bool = True,
            robustness_cache: str | Path | None = None, data=None) -> dict:  # fmt: skip
    """Every measured figure of the card, as plain JSON values (cached on disk).

    ``robustness_cache``: the robustness sweep's cache folder (default: the CLI's), so
    a sweep the app or ``deq-lens robustness`` already ran is read, not repeated.
    ``data``: the split to measure on (default: the model's whole test split).
    """
    from deq_core.cache import DiskCache, data_fingerprint, key

    data = data if data is not None else lens.data()
    entry = key(CARD_VERSION, lens.checksum, data_fingerprint(data), options)
    cache = DiskCache(CACHE_NAMESPACE) if use_cache else None
    if cache is not None and (found := cache.get_json(entry)) is not None:
        return found
    evaluation, _ = lens.evaluate(data)
    measured = {
        "evaluation": {k: v for k, v in evaluation.to_dict().items() if k != "confusion_matrix"}
        | {"confusion_matrix": evaluation.confusion_matrix},
        "per_class": per_class_metrics(evaluation.confusion_matrix, evaluation.classes),
        "robustness": _robustness(lens, data, options.robustness_severities, robustness_cache),
        "robustness_severities": list(options.robustness_severities),
        "faithfulness": _faithfulness(lens, data, options.faithfulness_cases),
        "stability": stability_share(lens, options.stability_cases, data=data),
    }
    measured = json.loads(json.dumps(measured, default=_plain))
    if cache is not None:
        cache.put_json(entry, measured)
    return measured


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


# --------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class ModelCard:
    """One model's card: details from its folder, measured figures, and the owner's text."""

    name: str
    folder: str
    checksum: str
    architecture: str
    dataset: str
    classes: tuple[str, ...]
    normal_class: str | None
    modalities: tuple[dict, ...]
    training: dict
    measured: dict
    owner: dict[str, str | None]
    package_version: str
    options: dict = field(default_factory=dict)
    # ModelConfig.describe_encoders(): models of one dataset compare on equal terms only
    # when they read the inputs with the same encoders, so the card names them.
    encoders: str = ""

    @property
    def missing_owner_fields(self) -> list[str]:
        return [k for k, v in self.owner.items() if not v]

    def owner_text(self, name: str) -> str:
        return self.owner.get(name) or f"{PLACEHOLDER} {OWNER_FIELDS[name].capitalize()}."

    def to_dict(self) -> dict:
        return asdict(self)


def build_card(lens, options: CardOptions = CardOptions(), use_cache: bool = True,
               robustness_cache: str | Path | None = None, data=None) -> ModelCard:  # fmt: skip
    """Measure ``lens``'s model (or read the cached figures) and gather its folder's details."""
    from deq_core import __version__

    folder = Path(lens.folder) if lens.folder else None
    metrics = {}
    if folder is not None and (folder / "metrics.json").is_file():
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    training = {k: metrics[k] for k in ("best_epoch", "val_accuracy", "train_cases", "val_cases", "training_seconds",
                                        "device", "torch", "selected_on") if k in metrics}  # fmt: skip
    training["settings"] = metrics.get("settings", {})
    config = lens.config
    owner = read_owner_fields(folder) if folder else dict.fromkeys(OWNER_FIELDS)  # a bad card.json fails before measuring
    return ModelCard(
        name=lens.name, folder=str(folder or ""), checksum=lens.checksum, architecture=config.architecture,
        dataset=Path(config.dataset).name or "?", classes=tuple(config.class_names), normal_class=config.normal_class,
        modalities=tuple({"name": m.name, "kind": m.kind, "shape": list(m.shape)} for m in config.modalities),
        training=training, measured=measure(lens, options, use_cache, robustness_cache, data),
        owner=owner,
        package_version=__version__, options=asdict(options), encoders=config.describe_encoders(),
    )  # fmt: skip


# --------------------------------------------------------------------------- sections (one source for MD, HTML, PDF)


@dataclass(frozen=True)
class Block:
    """A paragraph (``text``), a bullet list (``items``) or a table (``header`` + ``rows``)."""

    kind: str  # "p", "list", "table"
    text: str = ""
    items: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    placeholder: bool = False


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _owner(card: ModelCard, name: str) -> Block:
    return Block("p", card.owner_text(name), placeholder=not card.owner.get(name))


def sections(card: ModelCard) -> list[Section]:
    """The card's sections in Mitchell et al.'s order, measured figures and owner text alike."""
    m, ev = card.measured, card.measured["evaluation"]
    t = card.training
    settings = t.get("settings", {})
    details = [
        f"Name: {card.name}; architecture: {card.architecture} fusion ({'deep-equilibrium' if card.architecture == 'deq' else 'baseline'}).",
        "Inputs: " + ", ".join(f"{x['name']} ({x['kind']} {'x'.join(map(str, x['shape']))})" for x in card.modalities) + ".",
        *([f"Encoders: {card.encoders}."] if card.encoders else []),
        f"Classes: {', '.join(card.classes)}" + (f" (normal class: {card.normal_class})." if card.normal_class else "."),
        f"Weights and config SHA-256: {card.checksum}.",
        f"Owner: {card.owner_text('owner')}",
        f"Licence: {card.owner_text('license')}",
        f"Generated by deq-lens {card.package_version} from {card.folder}.",
    ]  # fmt: skip
    per_class = Block("table", header=("class", "cases", "precision", "recall", "F1"), rows=tuple(
        (r["class"], str(r["support"]), _pct(r["precision"]), _pct(r["recall"]), _num(r["f1"])) for r in m["per_class"]))  # fmt: skip
    overall = [f"Accuracy {_pct(ev['accuracy'])}, macro F1 {_num(ev['macro_f1'])}, expected calibration error "
               f"{_num(ev['ece'])} on {ev['n']} {ev['split']} cases (command: deq-lens evaluate --model {card.folder})."]  # fmt: skip
    if ev.get("false_alarm_rate") is not None:
        overall.append(f"False alarms (normal parts flagged): {_pct(ev['false_alarm_rate'])}; misses (faulty parts "
                       f"passed): {_pct(ev['miss_rate'])}.")  # fmt: skip
    if ev.get("iterations_mean") is not None:
        overall.append(f"Solver: {ev['iterations_mean']:.1f} iterations on average, {_pct(ev['converged_fraction'])} of "
                       "solves met their tolerance.")  # fmt: skip
    overall.append(f"Median latency of one decision: {ev['latency_ms_median']:.1f} ms on the machine that made this card.")
    robust = Block("table", header=("input degraded", "clean acc.", "worst acc.", "relative robustness", "keeps"), rows=tuple(
        (r["modality"], _pct(r["clean_accuracy"]), _pct(r["worst_accuracy"]), _num(r["relative_robustness"]),
         _pct(r["retained_accuracy"])) for r in m["robustness"]))  # fmt: skip
    f = m["faithfulness"]
    faith = [
        f"Completeness (attributions sum to the output change): {_pct(f['completeness_pass_rate'])} of {f['n']} cases "
        f"({f['n_steps']} integration steps, {f['baseline']} baseline).",
        f"Deletion agreement (removing the top-ranked input hurts most): {_pct(f['deletion_agreement'])}.",
        f"Randomisation check (Spearman against a randomised model; low is good): {_num(f['randomization_spearman'])}.",
        f"Reliable explanations: {_pct(f['reliable_fraction'])}. Command: deq-lens faithfulness --model {card.folder}.",
    ]  # fmt: skip
    s = m.get("stability")
    stability = ([f"{_pct(s['stable_unique_fraction'])} of {s['cases']} test cases have a unique, stable equilibrium "
                  f"(locally stable {_pct(s['stable_fraction'])}, unique from {s['starts']} starts "
                  f"{_pct(s['unique_fraction'])}). Command: {s['command']}."]
                 if s else ["This model decides in one feed-forward pass: it has no fixed point to be stable or unique."])  # fmt: skip
    training = [
        f"{t.get('train_cases', '?')} training cases of {card.dataset}; model selected on {t.get('val_cases', '?')} "
        f"{t.get('selected_on', 'validation')} cases (best epoch {t.get('best_epoch', '?')} of {settings.get('epochs', '?')}, "
        f"validation accuracy {_pct(t.get('val_accuracy'))}).",
        f"Training took {t.get('training_seconds', '?')} s on {t.get('device', '?')} (torch {t.get('torch', '?')}); seed "
        f"{settings.get('seed', '?')}, width {settings.get('width', '?')}, learning rate {settings.get('learning_rate', '?')}, "
        f"modality dropout {settings.get('modality_dropout', '?')}.",
    ]  # fmt: skip
    return [
        Section("Model details", (Block("list", items=tuple(details)),)),
        Section("Intended use", (_owner(card, "intended_use"), Block("p", "Out of scope: " + card.owner_text("out_of_scope"),
                                                                     placeholder=not card.owner.get("out_of_scope")))),  # fmt: skip
        Section("Factors", (Block("p", f"Measured here: performance by class ({len(card.classes)} classes) and by which "
                                       "input is degraded. In deployment:"), _owner(card, "factors"))),  # fmt: skip
        Section("Metrics", (Block("list", items=tuple(overall)),)),
        Section("Metrics by class", (per_class,)),
        Section("Evaluation data", (Block("p", f"The {ev['split']} split of {card.dataset}: {ev['n']} cases, never used "
                                               "for training or model selection."),)),  # fmt: skip
        Section("Training data", (Block("list", items=tuple(training)), _owner(card, "training_data"))),
        Section("Quantitative analyses: robustness", (
            Block("p", f"Each input degraded on its own at severities {', '.join(f'{x:g}' for x in m['robustness_severities'])} "
                       f"(command: deq-lens robustness --model {card.folder})."), robust)),  # fmt: skip
        Section("Quantitative analyses: faithfulness of the explanations", (Block("list", items=tuple(faith)),)),
        Section("Quantitative analyses: stability of the equilibrium", (Block("list", items=tuple(stability)),)),
        Section("Ethical considerations", (_owner(card, "ethical_considerations"),)),
        Section("Caveats and recommendations", (_owner(card, "caveats"),)),
    ]


# --------------------------------------------------------------------------- Markdown (Hugging Face layout) and HTML


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def front_matter(card: ModelCard) -> str:
    """Hugging Face model-card metadata: licence, tags, datasets, and the measured results as model-index."""
    ev = card.measured["evaluation"]
    results = [("accuracy", ev["accuracy"]), ("f1", ev["macro_f1"])]
    s = card.measured.get("stability")
    lines = [
        "---",
        f"license: {_yaml_str(card.owner.get('license') or 'unknown')}",
        "library_name: deq-fusion-lens",
        "tags:", "  - multimodal", "  - deep-equilibrium" if card.architecture == "deq" else f"  - {card.architecture}-fusion",
        "  - model-card", "datasets:", f"  - {_yaml_str(card.dataset)}",
        "metrics:", "  - accuracy", "  - f1",
        "model-index:", f"  - name: {_yaml_str(card.name)}", "    results:", "      - task:",
        "          type: multimodal-classification", "        dataset:", f"          name: {_yaml_str(card.dataset)}",
        f"          type: {_yaml_str(card.dataset)}", f"          split: {_yaml_str(ev['split'])}", "        metrics:",
    ]  # fmt: skip
    for name, value in results:
        lines += [f"          - type: {name}", f"            value: {value:.4f}"]
    if s:
        lines += ["          - type: stable_unique_equilibrium_share", f"            value: {s['stable_unique_fraction']:.4f}"]
    lines.append("---")
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def card_markdown(card: ModelCard) -> str:
    """The card as Markdown with YAML front matter, the layout the Hugging Face Hub reads."""
    out = [front_matter(card), "", f"# Model card: {card.name}", ""]
    if card.missing_owner_fields:
        out += [f"> Fields marked {PLACEHOLDER} are for the model owner to complete in "
                f"`{CARD_FIELDS_FILE}` in the model folder: {', '.join(card.missing_owner_fields)}.", ""]  # fmt: skip
    for section in sections(card):
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if block.kind == "p":
                out += [block.text, ""]
            elif block.kind == "list":
                out += [f"- {item}" for item in block.items] + [""]
            else:
                out += ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
                out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in block.rows] + [""]
    return "\n".join(out).rstrip() + "\n"


_STYLE = """body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1f2328;line-height:1.45}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
th{background:#f6f8fa}.placeholder{background:#fff8c5;border-left:4px solid #d4a72c;padding:.3rem .6rem}
.note{color:#59636e}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem}"""


def card_html(card: ModelCard) -> str:
    """The card as one self-contained HTML page (no scripts, no fonts or styles from the internet)."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>Model card: {e(card.name)}</title>",
           f"<style>{_STYLE}</style></head><body>", f"<h1>Model card: {e(card.name)}</h1>"]  # fmt: skip
    if card.missing_owner_fields:
        out.append(f'<p class="placeholder">Highlighted fields are for the model owner to complete in '
                   f"<code>{CARD_FIELDS_FILE}</code>: {e(', '.join(card.missing_owner_fields))}.</p>")  # fmt: skip
    for section in sections(card):
        out.append(f"<h2>{e(section.title)}</h2>")
        for block in section.blocks:
            if block.kind == "p":
                css = ' class="placeholder"' if block.placeholder else ""
                out.append(f"<p{css}>{e(block.text)}</p>")
            elif block.kind == "list":
                out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>")
            else:
                head = "".join(f"<th>{e(h)}</th>" for h in block.header)
                body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    out.append('<p class="note">Generated by deq-lens from measured data; see docs/model-card.md.</p></body></html>')
    return "\n".join(out)


def write_card(card: ModelCard, out: str | Path, pdf: bool = True) -> dict[str, Path]:
    """Write README.md (the Hub's name for a card), model_card.html, model_card.json and model_card.pdf."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = {"markdown": folder / "README.md", "html": folder / "model_card.html", "json": folder / "model_card.json"}
    written["markdown"].write_text(card_markdown(card), encoding="utf-8")
    written["html"].write_text(card_html(card), encoding="utf-8")
    written["json"].write_text(json.dumps(card.to_dict(), indent=2), encoding="utf-8")
    if pdf:
        from deq_core.pdf import card_pdf

        written["pdf"] = folder / "model_card.pdf"
        written["pdf"].write_bytes(card_pdf(card))
    return written


def main(argv: list[str] | None = None, prog: str = "python -m deq_core.card") -> int:
    """``deq-lens card --model M --out DIR``: measure the model and write its card as Markdown, HTML, JSON and PDF."""
    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("--model", required=True, help="model folder (config.json, weights, metrics.json, optional card.json)")
    parser.add_argument("--out", required=True, help="folder to write README.md, model_card.html/.json/.pdf into")
    parser.add_argument("--stability-cases", type=int, default=CardOptions.stability_cases)
    parser.add_argument("--faithfulness-cases", type=int, default=CardOptions.faithfulness_cases)
    parser.add_argument("--no-pdf", action="store_true", help="skip the PDF")
    parser.add_argument("--no-cache", action="store_true", help="measure again even if a cached card exists")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    from deq_core.lens import Lens

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        options = CardOptions(args.stability_cases, args.faithfulness_cases)  # before loading anything
        lens = Lens.open(args.model)
        card = build_card(lens, options, use_cache=not args.no_cache)
    except (CardFieldsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    written = write_card(card, args.out, pdf=not args.no_pdf)
    ev, s = card.measured["evaluation"], card.measured.get("stability")
    print(f"{card.name}: accuracy {ev['accuracy']:.1%} on {ev['n']} {ev['split']} cases"
          + (f"; unique, stable equilibrium {s['stable_unique_fraction']:.1%} of {s['cases']} cases" if s else ""))  # fmt: skip
    if card.missing_owner_fields:
        print(f"owner fields still placeholders (fill in {Path(args.model) / CARD_FIELDS_FILE}): "
              f"{', '.join(card.missing_owner_fields)}")  # fmt: skip
    for what, path in written.items():
        print(f"  {what:8s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
