"""Pure transformations of deq_core results into tables and small arrays the plots draw.

No Streamlit, no torch import: tensors arrive inside deq_core's dataclasses and
leave as numpy arrays or pandas frames (``np.asarray`` on a CPU tensor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------- tables as a person reads them

PERCENT_DECIMALS = 1  # one percent format on every page: "96.0%", never "96%" beside "96.67%"


def percent(value: float | None, decimals: int = PERCENT_DECIMALS) -> str:
    """A share in the app's one percent format ("96.0%"); "n/a" for a missing value."""
    if value is None or value != value:
        return "n/a"
    return f"{value:.{decimals}%}"


def points_phrase(gap: float, decimals: int = 1) -> str:
    """A difference of two shares in words: "1.5 points more", "0.3 points fewer", or "the same".

    A gap that rounds to zero at the shown precision is a tie: "0.0 points more" reads as a
    win that is not there.
    """
    points = round(abs(gap) * 100, decimals)
    if points == 0:
        return "the same"
    return f"{points:.{decimals}f} points {'more' if gap > 0 else 'fewer'}"


def against_phrase(gap: float, decimals: int = 1) -> str:
    """``gap`` (a share minus another) before "the best baseline": "1.5 points more than", "as many as"."""
    phrase = points_phrase(gap, decimals)
    return "as many as" if phrase == "the same" else f"{phrase} than"


@dataclass(frozen=True)
class Column:
    """How one column of a raw table is shown.

    Attributes:
        title: the header a person reads (no underscores).
        kind: "percent" (a share, shown x100 with ``decimals``), "number", "integer",
            "scientific" (a tolerance or residual), "text" or "bool".
        decimals: digits after the point for percent and number columns.
        help: the header's tooltip.
    """

    title: str
    kind: str = "number"
    decimals: int = 1
    help: str = ""

    def format(self) -> str | None:
        """printf format for Streamlit's NumberColumn (None: not a number column)."""
        return {
            "percent": f"%.{self.decimals}f%%",
            "number": f"%.{self.decimals}f",
            "integer": "%d",
            "scientific": "%.0e",
        }.get(self.kind)


@dataclass(frozen=True)
class Display:
    """A table ready to show: readable headers, values rounded as shown, formats per header.

    ``frame`` is also what the CSV download holds, so the file says what the screen says
    (percent columns are in percent there too, their header says so).
    """

    frame: pd.DataFrame
    formats: dict[str, str]
    helps: dict[str, str]


def display(frame: pd.DataFrame, columns: Mapping[str, Column]) -> Display:
    """The listed columns of ``frame`` in the listed order, renamed and rounded (absent ones skipped)."""
    out, formats, helps = {}, {}, {}
    for name, column in columns.items():
        if name not in frame:
            continue
        values = frame[name]
        if column.kind == "percent":
            values = (pd.to_numeric(values, errors="coerce") * 100).round(column.decimals)
        elif column.kind == "number":
            values = pd.to_numeric(values, errors="coerce").round(column.decimals)
        elif column.kind == "integer":
            values = pd.to_numeric(values, errors="coerce").round(0).astype("Int64")
        title = f"{column.title} (%)" if column.kind == "percent" else column.title
        out[title] = values.to_numpy() if column.kind != "integer" else values
        if column.format():
            formats[title] = column.format()
        if column.help:
            helps[title] = column.help
    return Display(pd.DataFrame(out, index=frame.index).reset_index(drop=True), formats, helps)


def lab_history_display(history: Sequence[Mapping], class_names: Sequence[str]) -> Display:
    """The Modality lab's kept variants, numbered from 1, shares in the one percent format."""
    frame = pd.DataFrame([{k: v for k, v in h.items() if k != "settings"} for h in history])
    frame.insert(0, "variant", range(1, len(frame) + 1))
    columns = {
        "variant": Column("variant", "integer"), "case": Column("case", "text"),
        "description": Column("what changed", "text"), "decision": Column("decision", "text"),
        "confidence": Column("confidence", "percent"), "iterations": Column("iterations", "integer"),
        "equilibrium_shift": Column("shift", "percent", help="||z*_variant − z*_reference|| / ||z*_reference||"),
        **{f"P({c})": Column(f"P({c})", "percent") for c in class_names},
    }  # fmt: skip
    return display(frame, columns)


MODEL_COLUMNS = {
    "model": Column("model", "text"),
    "accuracy": Column("accuracy", "percent", help="Share of test cases decided correctly."),
    "macro_f1": Column("macro F1", "number", 3, "F1 score averaged over classes, so rare classes count as much as common ones."),
    "false_alarm_rate": Column("false alarms", "percent", help="Share of good parts flagged as faulty."),
    "miss_rate": Column("misses", "percent", help="Share of faulty parts passed as good."),
    "latency_ms": Column("latency ms", "number", 1, "Median time to decide one case on this machine."),
    "iterations_mean": Column("iterations", "number", 1, "Mean solver steps per case; feed-forward models have none."),
    "iterations_p95": Column("p95 iter.", "integer", help="95% of cases need at most this many solver steps."),
    "converged_fraction": Column("converged", "percent", help="Share of cases whose solve met its tolerance."),
}

# The solver, residual mode and iteration limit are the settings above the table, the same on every row.
SWEEP_COLUMNS = {
    "tolerance": Column("tolerance", "scientific", help="The solver stops once the residual falls below this."),
    "recommended": Column("recommended", "bool", help="The loosest tolerance with no flipped decision."),
    "accuracy": Column("accuracy", "percent"),
    "flips": Column("flips", "integer", help="Decisions that differ from a very tight solve."),
    "flip_rate": Column("flipped", "percent", help="Flips as a share of the test cases."),
    "iterations_mean": Column("iterations", "number", 1, "Mean solver steps per case."),
    "iterations_p95": Column("p95 iter.", "integer", help="95% of cases need at most this many."),
    "converged_fraction": Column("converged", "percent", help="Share of cases whose solve met the tolerance."),
    "latency_ms": Column("latency ms", "number", 1, "Median single-case time on this machine."),
}

COMPUTE_COLUMNS = {
    "f_evaluations": Column("f evaluations", "integer", help="Evaluations of the fusion step each model may use per case."),
    "deq_accuracy": Column("DEQ accuracy", "percent"),
    "weight_tied_accuracy": Column("weight-tied accuracy", "percent"),
    "deq_evaluations_used": Column("DEQ steps used", "number", 1, "The DEQ stops once it has settled, so it may use fewer."),
    "deq_relative_residual": Column("DEQ residual", "scientific"),
    "weight_tied_relative_residual": Column("weight-tied residual", "scientific"),
}

# Eight columns fit beside the sidebar at 1280 px; the CSV of every setting (the rows table) has the rest.
ROBUSTNESS_SUMMARY_COLUMNS = {
    "model": Column("model", "text"),
    "modality": Column("input", "text"),
    "clean_accuracy": Column("clean", "percent", help="Accuracy on the untouched cases."),
    "worst_accuracy": Column("worst", "percent", help="Lowest accuracy at any severity."),
    "retained_accuracy": Column("retained", "percent", help="Area under accuracy vs severity divided by clean accuracy: the share of accuracy kept."),
    "effective_robustness": Column("vs late fusion", "number", 3, "Accuracy above late fusion's curve shifted to this model's clean accuracy, summed over severities."),
    "effective_robustness_fit": Column("vs trend", "number", 3, "Accuracy above the line fitted through all models' clean vs damaged accuracy (Taori et al.)."),
    "iterations_mean": Column("iterations", "number", 1, "Mean solver steps per case."),
}

ROBUSTNESS_ROW_COLUMNS = {
    "model": Column("model", "text"),
    "modality": Column("input", "text"),
    "corruption": Column("damage", "text"),
    "severity": Column("severity", "number", 2),
    "accuracy": Column("accuracy", "percent"),
    "iterations_mean": Column("iterations", "number", 1),
    "equilibrium_shift": Column("shift", "percent", help="How far the decided-from state moves from the clean one, relative."),
}

STABILITY_COLUMNS = {
    "case": Column("case", "text"),
    "spectral_radius": Column("spectral radius", "number", 3),
    "iterations": Column("iterations", "integer"),
    "contraction_rate": Column("solver rate", "number", 3, help="Observed shrink of the residual per step."),
    "unique": Column("unique", "bool", help="All starts reached the same equilibrium."),
    "equilibria": Column("equilibria", "integer"),
    "wrong": Column("wrong", "bool", help="The decision is wrong."),
}


# --------------------------------------------------------------------------- evaluation and cost


def evaluation_table(evaluations: Mapping[str, object], encoders: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per model from ``deq_core.evaluate.Evaluation`` objects, in the mapping's order.

    ``encoders``: model -> ``ModelConfig.describe_encoders()``, so the table shows whether
    the models compared read their inputs alike ("" where a model is missing).
    """
    rows = []
    for name, e in evaluations.items():
        rows.append(
            {
                "model": name,
                "architecture": e.architecture,
                "encoders": (encoders or {}).get(name, ""),
                "accuracy": e.accuracy,
                "macro_f1": e.macro_f1,
                "false_alarm_rate": e.false_alarm_rate,
                "miss_rate": e.miss_rate,
                "latency_ms": e.latency_ms_median,
                "iterations_mean": e.iterations_mean,
                "iterations_p95": e.iterations_p95,
                "converged_fraction": e.converged_fraction,
                "cases": e.n,
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class CostInputs:
    """The business figures the cost calculator asks for.

    Attributes:
        cases_per_month: parts inspected per month.
        false_alarm_cost: cost of flagging a good part (re-inspection, scrap).
        miss_cost: cost of passing a faulty part (warranty, recall).
        wrong_fault_cost: cost of naming the wrong fault on a faulty part (wasted repair time).
    """

    cases_per_month: float
    false_alarm_cost: float
    miss_cost: float
    wrong_fault_cost: float = 0.0


def error_counts(confusion: Sequence[Sequence[int]], classes: Sequence[str], normal: str | None) -> dict[str, float]:
    """Per-case rates of each kind of error from a confusion matrix (rows true, columns predicted).

    With a normal class: a false alarm is a normal case called faulty, a miss a faulty
    case called normal, a wrong fault a faulty case given another fault. Without one
    every error counts as a wrong answer (``wrong_fault``).
    """
    matrix = np.asarray(confusion, dtype=float)
    n = matrix.sum()
    if n == 0:
        return {"false_alarm": 0.0, "miss": 0.0, "wrong_fault": 0.0}
    if normal is None:
        return {"false_alarm": 0.0, "miss": 0.0, "wrong_fault": float((n - np.trace(matrix)) / n)}
    k = list(classes).index(normal)
    false_alarm = matrix[k].sum() - matrix[k, k]
    miss = matrix[:, k].sum() - matrix[k, k]
    wrong_fault = (n - np.trace(matrix)) - false_alarm - miss
    return {"false_alarm": false_alarm / n, "miss": miss / n, "wrong_fault": wrong_fault / n}


def monthly_cost_table(evaluations: Mapping[str, object], costs: CostInputs, normal: str | None) -> pd.DataFrame:
    """Expected errors and cost per month for each model, from its test confusion matrix."""
    rows = []
    for name, e in evaluations.items():
        rates = error_counts(e.confusion_matrix, e.classes, normal)
        false_alarms = rates["false_alarm"] * costs.cases_per_month
        misses = rates["miss"] * costs.cases_per_month
        wrong = rates["wrong_fault"] * costs.cases_per_month
        rows.append(
            {
                "model": name,
                "architecture": e.architecture,
                "false_alarms_per_month": false_alarms,
                "misses_per_month": misses,
                "wrong_faults_per_month": wrong,
                "false_alarm_cost": false_alarms * costs.false_alarm_cost,
                "miss_cost": misses * costs.miss_cost,
                "wrong_fault_cost": wrong * costs.wrong_fault_cost,
            }
        )
        rows[-1]["monthly_cost"] = rows[-1]["false_alarm_cost"] + rows[-1]["miss_cost"] + rows[-1]["wrong_fault_cost"]
    return pd.DataFrame(rows)


def saving_over(table: pd.DataFrame, model: str, baseline: str) -> float:
    """Monthly cost of ``baseline`` minus that of ``model`` (positive: ``model`` saves money)."""
    cost = table.set_index("model")["monthly_cost"]
    return float(cost[baseline] - cost[model])


# --------------------------------------------------------------------------- robustness

GRADES = (  # (lowest retained accuracy, grade, plain words)
    (0.9, "A", "barely affected"),
    (0.75, "B", "mildly affected"),
    (0.6, "C", "clearly affected"),
    (0.0, "D", "strongly affected"),
)


def grade(retained_accuracy: float) -> tuple[str, str]:
    """Letter and plain words for the share of clean accuracy kept under corruption."""
    for lowest, letter, words in GRADES:
        if retained_accuracy >= lowest:
            return letter, words
    return GRADES[-1][1], GRADES[-1][2]


def robustness_grades(summary: pd.DataFrame, model: str) -> pd.DataFrame:
    """One plain grade per modality of ``model`` from a ``RobustnessReport.summary`` frame."""
    rows = []
    for row in summary[summary["model"] == model].itertuples(index=False):
        letter, words = grade(row.retained_accuracy)
        rows.append(
            {
                "modality": row.modality,
                "grade": letter,
                "verdict": words,
                "clean_accuracy": row.clean_accuracy,
                "worst_accuracy": row.worst_accuracy,
                "retained_accuracy": row.retained_accuracy,
                "sentence": (
                    f"When the {row.modality} input is degraded, the model keeps {row.retained_accuracy:.1%} of its "
                    f"accuracy on average ({words}); at worst it falls to {row.worst_accuracy:.1%}."
                ),
            }
        )
    return pd.DataFrame(rows, columns=["modality", "grade", "verdict", "clean_accuracy", "worst_accuracy",
                                       "retained_accuracy", "sentence"])  # fmt: skip


def dose_response(rows: pd.DataFrame, corruption: str | None = None) -> pd.DataFrame:
    """Accuracy per model x modality x severity; averaged over corruptions unless one is named."""
    data = rows if corruption is None else rows[rows["corruption"] == corruption]
    return (
        data.groupby(["model", "modality", "severity"], sort=False)[["accuracy", "iterations_mean", "equilibrium_shift"]]
        .mean()
        .reset_index()
    )


# --------------------------------------------------------------------------- cases


def case_table(predictions, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per case of ``deq_core.evaluate.Predictions``."""
    frame = pd.DataFrame(
        {
            "case": list(predictions.ids),
            "label": [class_names[i] for i in predictions.labels],
            "predicted": [class_names[i] for i in predictions.predicted],
            "correct": predictions.correct,
            "confidence": predictions.confidence,
        }
    )
    if predictions.iterations is not None:
        frame["iterations"] = predictions.iterations
        frame["relative_residual"] = predictions.relative_residual
        frame["status"] = list(predictions.status)
    return frame


def filter_cases(
    table: pd.DataFrame,
    classes: Sequence[str] = (),
    correctness: str = "all",
    low_confidence_below: float | None = None,
    slow_from_iterations: float | None = None,
) -> pd.DataFrame:
    """Cases matching every filter: true class in ``classes`` (empty: any), ``correctness``
    ``"all"``, ``"correct"`` or ``"wrong"``, confidence below a bound, iterations at least a bound."""
    keep = np.ones(len(table), dtype=bool)
    if classes:
        keep &= table["label"].isin(list(classes)).to_numpy()
    if correctness == "correct":
        keep &= table["correct"].to_numpy()
    elif correctness == "wrong":
        keep &= ~table["correct"].to_numpy()
    if low_confidence_below is not None:
        keep &= (table["confidence"] < low_confidence_below).to_numpy()
    if slow_from_iterations is not None and "iterations" in table:
        keep &= (table["iterations"] >= slow_from_iterations).to_numpy()
    return table[keep]


def case_label(row) -> str:
    """How a case reads in a menu: id, truth, decision and confidence."""
    mark = "✓" if row["correct"] else "✗"
    return f"{row['case']} · {row['label']} → {row['predicted']} {mark} ({row['confidence']:.1%})"


# --------------------------------------------------------------------------- attributions as shown

NOTABLE_SHARE = 0.1  # an input whose largest |attribution| is under this share of the case's largest is "not notable"


def shown_maps(maps: Sequence, kinds: Sequence[str]) -> list[np.ndarray]:
    """Each input's attribution as the Inspect page draws it: a picture summed over its colour channels."""
    out = []
    for attribution_map, kind in zip(maps, kinds):
        values = np.asarray(attribution_map, dtype=float)
        out.append(values.sum(axis=0) if kind == "image" and values.ndim == 3 else values)
    return out


def evidence_notes(maps: Sequence[np.ndarray], names: Sequence[str], share: float = NOTABLE_SHARE) -> dict[str, str]:
    """A sentence for each input that carries no notable evidence for the explained class, by input name.

    Judged against the case's largest |attribution| over every input, the scale every map is drawn on:
    a clean photo's 0.02 beside a sensor reading's 0.4 is noise, not a finding.
    """
    largest = [float(np.nanmax(np.abs(m))) if np.asarray(m).size else 0.0 for m in maps]
    top = max(largest, default=0.0)
    notes = {}
    for name, value in zip(names, largest):
        if top > 0 and value < share * top:
            notes[name] = (f"{name} carries no notable evidence here: its largest attribution, {value:.2g}, is "
                           f"{value / top:.0%} of the case's largest ({top:.2g}); the colours are on the case's scale.")
        elif top == 0:
            notes[name] = f"{name} carries no evidence here: every attribution is zero."
    return notes


ABSENT_INPUT = ("A switched-off (missing) input is replaced by its training average, not by nothing: the gate still "
                "weighs that average, so a missing input keeps a share of the fused state.")


def absent_share_note(names: Sequence[str], shares: Sequence[float], off: Sequence[str]) -> str | None:
    """What a switched-off input's gate share means, in words, or None when every input is on."""
    off = [n for n in names if n in set(off)]
    if not off:
        return None
    share = dict(zip(names, np.asarray(shares, dtype=float)))
    parts = ", ".join(f"{n} {percent(share[n])}" for n in off)
    verb = "is" if len(off) == 1 else "are"
    return (f"{', '.join(off)} {verb} switched off, yet keeps a gate share ({parts}): an absent input is replaced by "
            "its training average, and the gate weighs that average like any input. The share says how much of the "
            "fused state rests on the average, not on evidence from this case.")


# --------------------------------------------------------------------------- trajectories


def residual_frame(trajectory, name: str = "") -> pd.DataFrame:
    """Residuals per iteration of a ``Trajectory``."""
    absolute = np.asarray(trajectory.absolute_residuals, dtype=float)
    relative = np.asarray(trajectory.relative_residuals, dtype=float)
    return pd.DataFrame(
        {"iteration": np.arange(len(absolute)), "absolute": absolute, "relative": relative, "run": name}
    )


def probability_frame(trajectory) -> pd.DataFrame:
    """Long frame: iteration, class, probability."""
    probabilities = np.asarray(trajectory.probabilities, dtype=float)
    steps, classes = probabilities.shape
    return pd.DataFrame(
        {
            "iteration": np.repeat(np.arange(steps), classes),
            "class": np.tile(np.asarray(trajectory.class_names, dtype=object), steps),
            "probability": probabilities.reshape(-1),
        }
    )


NO_GATE_SHARES_NOTE = ("This model does not report gate shares: its adapter has no `gates(z, features)`, so the "
                       "views of the model's own weighting are left out (docs/own-model.md).")  # fmt: skip


def modality_dynamics(trajectory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per iteration, (state change of each modality and the fused state, gate share of each modality).

    The share frame is empty for a model that reports no gates (an adapter without
    ``gates``): its NaN shares are not a chart, and the figure says so instead.
    """
    change = np.asarray(trajectory.state_change(), dtype=float)  # (T-1, N+1)
    share = np.asarray(trajectory.gate_share(), dtype=float)  # (T, N)
    if not trajectory.has_gates:
        share = share[:0]
    parts = [*trajectory.modality_names, "fused"]
    change_frame = pd.DataFrame(
        {
            "iteration": np.repeat(np.arange(1, change.shape[0] + 1), len(parts)),
            "part": np.tile(np.asarray(parts, dtype=object), change.shape[0]),
            "change": change.reshape(-1),
        }
    )
    names = list(trajectory.modality_names)
    share_frame = pd.DataFrame(
        {
            "iteration": np.repeat(np.arange(share.shape[0]), len(names)),
            "modality": np.tile(np.asarray(names, dtype=object), share.shape[0]),
            "share": share.reshape(-1),
        }
    )
    return change_frame, share_frame


@dataclass(frozen=True)
class Path2D:
    """The fused state's path projected on its own two main directions.

    Attributes:
        points: ``(T, 2)`` coordinates of z_fuse at each iteration.
        explained: ``(2,)`` share of the path's variance along each axis.
    """

    points: np.ndarray
    explained: np.ndarray

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"iteration": np.arange(len(self.points)), "pc1": self.points[:, 0], "pc2": self.points[:, 1]})


def principal_path(states: np.ndarray) -> Path2D:
    """PCA of a trajectory ``(T, d)`` fitted on the trajectory itself.

    Axes are signed so the last point has non-negative coordinates (a stable picture
    from run to run); a path that never moves lies at the origin.
    """
    x = np.asarray(states, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"expected a (T, d) trajectory, got shape {x.shape}")
    centred = x - x.mean(axis=0, keepdims=True)
    if len(x) < 2 or not np.any(centred):
        return Path2D(points=np.zeros((len(x), 2)), explained=np.zeros(2))
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    axes = np.zeros((2, x.shape[1]))
    k = min(2, vt.shape[0])
    axes[:k] = vt[:k]
    points = centred @ axes.T
    signs = np.where(points[-1] < 0, -1.0, 1.0)
    variance = singular**2
    explained = np.zeros(2)
    explained[:k] = variance[:k] / variance.sum()
    return Path2D(points=points * signs, explained=explained)


def fused_states(trajectory) -> np.ndarray:
    """``(T, d)`` fused state z_fuse at each iteration."""
    return np.asarray(trajectory.states, dtype=float)[:, -1, :]


def equilibrium_shift(reference, variant) -> float:
    """||z*_variant - z*_reference|| / ||z*_reference|| of the states the two decisions came from."""
    a = np.asarray(reference.states[reference.best_iteration], dtype=float)
    b = np.asarray(variant.states[variant.best_iteration], dtype=float)
    return float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-12))


# --------------------------------------------------------------------------- tuning


def sweep_frame(sweep) -> pd.DataFrame:
    """``deq_core.explain.tuning.ToleranceSweep`` as a table, loosest tolerance first."""
    frame = pd.DataFrame(sweep.rows())
    frame["recommended"] = frame["tolerance"] == sweep.recommended_tol
    return frame


def compute_frame(comparison) -> pd.DataFrame:
    return pd.DataFrame(comparison.rows())


# --------------------------------------------------------------------------- the ideal classifier


def ideal_comparison(shapley, reference) -> pd.DataFrame:
    """The model's modality Shapley values beside the ideal classifier's, for one case.

    ``shapley``: the model's ``ModalityShapley``; ``reference``: ``deq_core.explain.ideal.IdealReference``
    of the same class. One row per input: what it truly shows, the model's value, the ideal's.
    """
    ideal = reference.shapley
    if ideal.target != shapley.target:
        raise ValueError(f"the model explains class {shapley.target}, the ideal reference class {ideal.target}")
    names = list(shapley.modality_names)
    model_values = np.asarray(shapley.values, dtype=float)
    ideal_values = np.asarray(ideal.values, dtype=float)[[ideal.modality_names.index(n) for n in names]]
    return pd.DataFrame(
        {
            "input": names,
            "what it truly shows": [reference.shows[name] for name in names],
            "model": model_values,
            "ideal": ideal_values,
        }
    )


# --------------------------------------------------------------------------- stability of the fixed point


def stability_starts(stability) -> pd.DataFrame:
    """One row per start of ``deq_core.explain.stability.Stability``: where it went and what it decided."""
    u, names = stability.uniqueness, stability.class_names
    return pd.DataFrame(
        {
            "start": list(u.starts),
            "converged": list(u.converged),
            "equilibrium": [c + 1 if c >= 0 else None for c in u.clusters],
            "distance": list(u.distances),
            "decision": [names[d] for d in u.decisions],
        }
    )


def stability_frame(found) -> pd.DataFrame:
    """One row per case of a ``StabilitySurvey``: radius, iterations, solver rate, uniqueness, error."""
    return pd.DataFrame(
        {
            "case": list(found.case_ids),
            "spectral_radius": found.radii,
            "iterations": found.iterations,
            "contraction_rate": [r.local.contraction_rate for r in found.results],
            "unique": [r.uniqueness.unique for r in found.results],
            "equilibria": [r.uniqueness.n_equilibria for r in found.results],
            "wrong": found.errors.astype(bool),
        }
    )


def encoders_caption(table: pd.DataFrame) -> str:
    """One line under the Overview's models table: which image encoder each model uses (models compare on equal
    terms only when they read the inputs alike; issue 19). A line rather than a column, so the table fits 1280 px."""
    if "encoders" not in table or not table["encoders"].astype(bool).any():
        return ""
    groups: dict[str, list[str]] = {}
    for model, encoders in zip(table["model"], table["encoders"]):
        groups.setdefault(str(encoders) or "not stated", []).append(str(model))
    if len(groups) == 1:
        return f"Image pooling: {next(iter(groups))}, the same for every model."
    return "Image pooling: " + "; ".join(f"{kind} ({', '.join(models)})" for kind, models in groups.items()) + \
        ". Models that read the photo differently are not compared on equal terms."
