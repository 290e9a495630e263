"""Robustness sweep: accuracy, solver iterations and equilibrium shift under corruption.

    python -m deq_core.robustness --model assets/models/inspection-deq [--json] [--quick]

For every modality x corruption x severity (0, 0.1, ..., 1) of the test split, the
model and each baseline of its dataset found beside it (folders ``<dataset>-deq``,
``-weight_tied``, ``-early``, ``-late`` in the same parent folder) are evaluated on
the whole split at once. One row per setting:

    accuracy            fraction of cases predicted correctly
    iterations_mean     mean solver iterations per case (weight-tied: its unroll length); null for early/late
    equilibrium_shift   mean over cases of ||r - r_clean|| / ||r_clean||, where r is the
                        state z of the ``SolveResult`` for DEQ and weight-tied models (the
                        lowest-residual iterate; weight-tied: z_{K-1}), and
                        ``FusionOutput.fused`` for early and late fusion, which have no
                        equilibrium (late: its per-modality logits). Compare it within an
                        architecture, not across.

Summaries, per model x modality (accuracy averaged over the modality's corruptions
at each severity) and per model x modality x corruption. The robustness metrics are
those of MultiBench (Liang et al., NeurIPS 2021, ``eval_scripts/robustness.py``):

    relative_robustness       area under accuracy vs severity (trapezoid rule) over the
                              severity span; with severities 0, 0.1, ..., 1 exactly
                              MultiBench's value before its max-min normalisation
                              across the methods of a leaderboard (not applied here)
    retained_accuracy         relative_robustness / clean accuracy
    effective_robustness      MultiBench's: sum over severities of
                              acc(s) - (acc_late(s) + acc(0) - acc_late(0)), late fusion's
                              curve shifted to this model's clean accuracy; null
                              without a late-fusion model in the sweep. A sum, so it
                              grows with the number of severities (MultiBench uses 11)
    effective_robustness_fit  the original effective robustness of Taori et al. (NeurIPS
                              2020): mean over severities > 0 of the model's distance
                              above the least-squares line of corrupted vs clean accuracy
                              across the sweep's models; null with fewer than 3 models

Results are cached per model (the CLI: in ``deq_core.cache.cache_root() / "robustness"``,
i.e. ``$DEQ_LENS_CACHE/robustness`` or ``~/.cache/deq-lens/robustness``, or ``--cache-dir``;
the library: in ``cache_dir`` when given), keyed by the model's checksum, the data's
``deq_core.cache.data_fingerprint``, severities, corruptions, seed and this code's
version; a repeated run reads them instead of recomputing (``is_cached`` says whether
it would). Only the corrupted modality is encoded again for each
setting, and a corrupted input seen before (``drop`` at every severity) is not run again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from deq_core import __version__
from deq_core.cache import DiskCache, data_fingerprint, key as cache_key
from deq_core.engine.adapter import TrustCode, trust_for
from deq_core.engine.checkpoint import CONFIG, ModelLoadError, load_config, load_model, model_checksum, state_checksum
from deq_core.engine.config import ARCHITECTURES
from deq_core.explain.corrupt import CorruptionSpec, InputReference, apply, available_corruptions
from deq_core.data import MultimodalDataset, load_dataset
from deq_core.engine.model import FusionModel

DEFAULT_SEVERITIES = tuple(round(0.1 * i, 1) for i in range(11))
QUICK_SEVERITIES = (0.0, 0.5, 1.0)
ROW_KEYS = ("model", "modality", "corruption", "severity", "accuracy", "iterations_mean", "equilibrium_shift")
SUMMARY_KEYS = (
    "clean_accuracy", "worst_accuracy", "relative_robustness", "retained_accuracy", "effective_robustness",
    "effective_robustness_fit", "iterations_mean", "equilibrium_shift_mean",
)  # fmt: skip
CACHE_NAMESPACE = "robustness"
_TINY = 1e-12


class _DefaultCache:
    """The type of ``DEFAULT_CACHE_DIR``: "the default folder", told apart from None ("no cache")."""

    def __repr__(self) -> str:
        return "DEFAULT_CACHE_DIR"


DEFAULT_CACHE_DIR = _DefaultCache()
CacheChoice = str | Path | DiskCache | _DefaultCache | None


def default_cache_dir() -> Path:
    """Where the CLI keeps results: ``cache_root() / "robustness"``, read from the environment now."""
    return DiskCache(CACHE_NAMESPACE).folder


def __getattr__(name: str):
    # ``DEFAULT_CACHE``, the folder before deq_core.cache: computed when asked for, so it
    # follows $DEQ_LENS_CACHE, for callers not yet on ``default_cache_dir``.
    if name == "DEFAULT_CACHE":
        return default_cache_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _code_version() -> str:
    """Changes whenever the corruptions or this sweep change, so stale caches are not read."""
    digest = hashlib.sha256(__version__.encode())
    for module in ("corrupt.py", "robustness.py"):
        digest.update((Path(__file__).with_name(module)).read_bytes())
    return digest.hexdigest()[:16]


CODE_VERSION = _code_version()


# --------------------------------------------------------------------------- metrics (pure)


def relative_robustness(severities: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under accuracy vs severity (trapezoid rule) divided by the severity span.

    MultiBench's relative robustness is the same area with steps of 0.1 over [0, 1],
    so for severities 0, 0.1, ..., 1 the two agree. One severity: that accuracy.
    """
    s, a = np.asarray(severities, dtype=float), np.asarray(accuracies, dtype=float)
    order = np.argsort(s)
    s, a = s[order], a[order]
    if len(s) == 1 or s[-1] == s[0]:
        return float(a.mean())
    return float(np.trapezoid(a, s) / (s[-1] - s[0]))


def effective_robustness(accuracies: Sequence[float], baseline_accuracies: Sequence[float]) -> float:
    """MultiBench's effective robustness against a baseline (late fusion there).

    Both curves are accuracies at the same severities, the first one clean (severity 0).
    The baseline's curve is shifted to this model's clean accuracy, and the model's
    distance above it is summed over severities:
    sum_s acc(s) - (base(s) + acc(0) - base(0)).
    """
    a, b = np.asarray(accuracies, dtype=float), np.asarray(baseline_accuracies, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("effective robustness needs two accuracy curves at the same severities")
    return float(np.sum((a - a[0]) - (b - b[0])))  # grouped so that a curve against itself is exactly 0


def effective_robustness_fit(clean: Sequence[float], corrupted: Sequence[float]) -> np.ndarray:
    """Taori et al.'s effective robustness of several models at one corruption level.

    Args:
        clean: ``(models,)`` clean accuracies.
        corrupted: ``(models,)`` accuracies under the corruption.

    Returns:
        ``(models,)`` each model's corrupted accuracy minus the least-squares line
        ``corrupted ~ intercept + slope * clean`` fitted across the models; NaN where
        there are fewer than 3 models or their clean accuracies are all equal (no line).
    """
    x, y = np.asarray(clean, dtype=float), np.asarray(corrupted, dtype=float)
    if x.size < 3 or np.ptp(x) == 0:
        return np.full(x.shape, np.nan)
    slope, intercept = np.polyfit(x, y, 1)
    return y - (intercept + slope * x)


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measurement:
    """What one model does on one batch of n cases."""

    correct: np.ndarray  # (n,) bool
    iterations: np.ndarray | None  # (n,) solver iterations; None for feed-forward models
    representation: torch.Tensor  # (n, k) flattened SolveResult z (equilibrium models) or fused (feed-forward)


@torch.no_grad()
def measure(
    model: FusionModel,
    inputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    batch_size: int | None = None,
    features: torch.Tensor | None = None,
) -> Measurement:
    """Run ``model`` on ``inputs``, ``(n, *shape)`` per modality, in batches of ``batch_size`` (None: one).

    ``features``: the inputs already encoded, ``(n, N, d)``, when the caller has them.
    """
    n = len(labels)
    step = batch_size or max(n, 1)
    correct, iterations, representation = [], [], []
    for start in range(0, n, step):
        window = slice(start, start + step)
        batch = [x[window].to(model.device) for x in inputs]
        out = model.run(batch, features=None if features is None else features[window])
        correct.append((out.logits.argmax(dim=1).cpu() == labels[window]).numpy())
        state = out.solve.z if out.solve is not None else out.fused
        representation.append(state.reshape(state.shape[0], -1).float().cpu())
        if out.solve is not None:
            iterations.append(out.solve.iterations.cpu().numpy())
    return Measurement(
        correct=np.concatenate(correct),
        iterations=np.concatenate(iterations) if iterations else None,
        representation=torch.cat(representation),
    )


@torch.no_grad()
def _encode(model: FusionModel, x: torch.Tensor, modality: int, batch_size: int | None) -> torch.Tensor:
    """``(n, d)`` features of one modality's inputs, encoded in batches."""
    step = batch_size or max(len(x), 1)
    encoder = model.encoders[modality]
    return torch.cat([encoder(x[start : start + step].to(model.device)) for start in range(0, len(x), step)])


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _shift(corrupted: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean over cases of ||r - r_clean|| / ||r_clean||; ``(n, k)`` both."""
    return float(((corrupted - clean).norm(dim=1) / clean.norm(dim=1).clamp_min(_TINY)).mean())


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class RobustnessReport:
    """Result of ``robustness_sweep``.

    Attributes:
        dataset, split, n: the data swept.
        severities: ascending, always starting at 0 (clean).
        corruptions: modality name -> corruption kinds swept.
        seed: the corruption seed (case keys are the case ids).
        models: name -> ``{"architecture", "checksum"}``.
        rows: one row per model x modality x corruption x severity, columns ``ROW_KEYS``.
        summary: per model x modality, columns model, modality, ``SUMMARY_KEYS``.
        corruption_summary: per model x modality x corruption, the same metrics.
        baseline: the late-fusion model effective robustness compares with, if any.
        cached: name -> whether its rows came from the cache.
    """

    dataset: str
    split: str
    n: int
    severities: tuple[float, ...]
    corruptions: dict[str, tuple[str, ...]]
    seed: int
    models: dict[str, dict]
    rows: pd.DataFrame
    summary: pd.DataFrame
    corruption_summary: pd.DataFrame
    baseline: str | None
    cached: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: frames as lists of records, missing values as None."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "n": self.n,
            "severities": list(self.severities),
            "corruptions": {k: list(v) for k, v in self.corruptions.items()},
            "seed": self.seed,
            "models": self.models,
            "baseline": self.baseline,
            "cached": self.cached,
            "rows": _records(self.rows),
            "summary": _records(self.summary),
            "corruption_summary": _records(self.corruption_summary),
        }


def _records(frame: pd.DataFrame) -> list[dict]:
    def clean(value):
        if isinstance(value, (float, np.floating)):
            return None if math.isnan(value) else float(value)
        if isinstance(value, np.integer):
            return int(value)
        return value

    return [{k: clean(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def summarise(rows: pd.DataFrame, keys: Sequence[str] = ("modality",), baseline: str | None = None) -> pd.DataFrame:
    """Robustness metrics of each model's accuracy-vs-severity curve.

    Args:
        rows: sweep rows (columns ``ROW_KEYS``), severity 0 included.
        keys: what a curve is per, besides the model: ``("modality",)`` averages a
            modality's corruptions at each severity; ``("modality", "corruption")`` does not average.
        baseline: the model effective robustness is measured against (MultiBench: late fusion).

    Returns:
        One row per model x keys: model, *keys, ``SUMMARY_KEYS`` (NaN where undefined).
    """
    keys = list(keys)
    values = rows.astype({"accuracy": float, "iterations_mean": float, "equilibrium_shift": float})
    curves = values.groupby(["model", *keys, "severity"], sort=False)[
        ["accuracy", "iterations_mean", "equilibrium_shift"]
    ].mean()  # fmt: skip
    table = {column: curves[column].unstack("severity").sort_index(axis=1) for column in curves.columns}
    accuracy = table["accuracy"]  # index (model, *keys); columns: ascending severities
    severities = accuracy.columns.to_numpy(dtype=float)
    if severities[0] != 0 or accuracy.isna().any().any():
        raise ValueError("every curve needs the same severities, starting with 0 (clean)")
    corrupted = severities > 0
    # Rows as numpy arrays keyed by (model, *keys), instead of a ``.loc`` on the MultiIndex per row:
    # the two summaries of the shipped four-model sweep took 0.17 s, now 0.10 s (same frames).
    def by_index(frame: pd.DataFrame) -> dict[tuple, np.ndarray]:
        labels = (i if isinstance(i, tuple) else (i,) for i in frame.index)
        return dict(zip(labels, frame.to_numpy(dtype=float)))

    curves_of, iterations_of, shift_of = (by_index(table[c]) for c in ("accuracy", "iterations_mean", "equilibrium_shift"))
    out = []
    for index in rows[["model", *keys]].drop_duplicates().itertuples(index=False, name=None):
        curve = curves_of[index]
        area = relative_robustness(severities, curve)
        base = (baseline, *index[1:])
        iterations = iterations_of[index][corrupted]
        shift = shift_of[index][corrupted]
        out.append({
            **dict(zip(["model", *keys], index)),
            "clean_accuracy": float(curve[0]),
            "worst_accuracy": float(curve.min()),
            "relative_robustness": area,
            "retained_accuracy": area / max(float(curve[0]), _TINY),
            "effective_robustness": (
                effective_robustness(curve, curves_of[base]) if baseline is not None and base in curves_of else np.nan
            ),
            "effective_robustness_fit": np.nan,
            "iterations_mean": float(np.mean(iterations)) if iterations.size and not np.isnan(iterations).any()
            else np.nan,
            "equilibrium_shift_mean": float(np.mean(shift)) if shift.size else 0.0,
        })  # fmt: skip
    summary = pd.DataFrame(out, columns=["model", *keys, *SUMMARY_KEYS])
    if corrupted.any():
        # Taori et al.: at each severity a line across the models; a model's mean residual over severities > 0.
        for _, group in summary.groupby(keys, sort=False):
            curves_here = np.stack([curves_of[i] for i in group[["model", *keys]].itertuples(index=False, name=None)])
            clean = curves_here[:, 0]
            residuals = [effective_robustness_fit(clean, curves_here[:, j]) for j in np.flatnonzero(corrupted)]
            summary.loc[group.index, "effective_robustness_fit"] = np.mean(residuals, axis=0)
    return summary


# --------------------------------------------------------------------------- sweeping


def _open_cache(cache_dir: CacheChoice) -> DiskCache | None:
    """The DiskCache a ``cache_dir`` argument means: None, no cache; ``DEFAULT_CACHE_DIR``, the default folder."""
    if cache_dir is None:
        return None
    if isinstance(cache_dir, DiskCache):
        return cache_dir
    if isinstance(cache_dir, _DefaultCache):
        return DiskCache(CACHE_NAMESPACE)
    return DiskCache.at(cache_dir)


def _entry_key(checksum: str, fingerprint: str, severities, corruptions, seed: int) -> str:
    """The cache entry of one model's rows: everything the rows depend on, this code's version included."""
    return cache_key({
        "model": checksum,
        "data": fingerprint,
        "severities": list(severities),
        "corruptions": {k: list(v) for k, v in corruptions.items()},
        "seed": seed,
        "code": CODE_VERSION,
    })  # fmt: skip


def _read_cache(store: DiskCache, entry: str) -> list[dict] | None:
    hit = store.get_json(entry)
    try:
        rows = hit["rows"]
        return rows if all(set(ROW_KEYS) <= set(r) for r in rows) else None
    except (KeyError, TypeError):
        return None  # absent or not rows: recompute


def _write_cache(store: DiskCache, entry: str, rows: list[dict]) -> None:
    store.put_json(entry, {"rows": rows})  # atomic: a concurrent reader never sees half a file


def _normalise_corruptions(
    data: MultimodalDataset, corruptions: Mapping[str, Sequence[str]] | None
) -> dict[str, tuple[str, ...]]:
    """Modality name -> corruption kinds, checked against ``data``; None: every kind of every modality."""
    if corruptions is None:
        corruptions = {m.name: available_corruptions(m.kind) for m in data.modalities}
    by_name = {m.name: m for m in data.modalities}
    corruptions = {name: tuple(kinds) for name, kinds in corruptions.items()}
    for name, kinds in corruptions.items():
        if name not in by_name:
            raise ValueError(f"no modality {name!r} in {data.name}; modalities are {list(by_name)}")
        unknown = set(kinds) - set(available_corruptions(by_name[name].kind))
        if unknown:
            raise ValueError(f"{sorted(unknown)} do not apply to {by_name[name].kind} modality {name!r}")
    return corruptions


def is_cached(
    checksums: Mapping[str, str] | Sequence[str],
    data: MultimodalDataset,
    severities: Sequence[float] = DEFAULT_SEVERITIES,
    corruptions: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    cache_dir: CacheChoice = DEFAULT_CACHE_DIR,
) -> bool:
    """Whether ``robustness_sweep`` of models with these checksums on ``data`` would read every model from the cache.

    Lets a caller choose a long sweep only when it costs a moment (the app: the full
    sweep when cached, else the quick one) without running anything.

    Args:
        checksums: the models' identities as passed to ``robustness_sweep(checksums=...)``
            (``model_checksum(folder)``); a mapping's values or a sequence.
        data, severities, corruptions, seed: as for ``robustness_sweep`` (0 is added to
            the severities, None corruptions means every kind of every modality).
        cache_dir: the cache folder (or a ``DiskCache``); default the CLI's folder; None: False.

    Raises:
        ValueError: severities outside [0, 1] or corruptions that do not apply to ``data``.
    """
    store = _open_cache(cache_dir)
    values = list(checksums.values()) if isinstance(checksums, Mapping) else list(checksums)
    if store is None or not values:
        return False
    severities = _severities(severities)
    corruptions = _normalise_corruptions(data, corruptions)
    fingerprint = data_fingerprint(data)
    return all(
        _read_cache(store, _entry_key(checksum, fingerprint, severities, corruptions, seed)) is not None
        for checksum in values
    )


def _check_compatible(name: str, model: FusionModel, data: MultimodalDataset) -> None:
    ours = [(m.name, m.kind, m.shape, m.vocabulary) for m in model.config.modalities]
    theirs = [(m.name, m.kind, m.shape, m.vocabulary) for m in data.modalities]
    if ours != theirs:
        raise ValueError(f"model {name!r} does not take the modalities of {data.name}/{data.split}")


def _severities(severities: Sequence[float]) -> tuple[float, ...]:
    values = sorted({0.0, *(float(s) for s in severities)})  # 0 is the clean reference every metric needs
    if not all(0.0 <= s <= 1.0 for s in values):
        raise ValueError(f"severities must lie in [0, 1], got {list(severities)}")
    return tuple(values)


def robustness_sweep(
    models: Mapping[str, FusionModel],
    data: MultimodalDataset,
    severities: Sequence[float] = DEFAULT_SEVERITIES,
    corruptions: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    cache_dir: CacheChoice = None,
    checksums: Mapping[str, str] | None = None,
    baseline: str | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> RobustnessReport:
    """Accuracy, iterations and equilibrium shift of each model under every corruption.

    Args:
        models: name -> model; all must take ``data.modalities``.
        data: the cases (the whole split is one batch per setting unless ``batch_size``).
        severities: in [0, 1]; 0 is always added.
        corruptions: modality name -> corruption kinds; default every kind available
            for every modality (``available_corruptions``).
        seed: corruption seed; case keys are ``data.ids``, so a case's corruption is
            replayed by ``apply(case_inputs, modalities, spec, reference, case_keys=[id])``.
        cache_dir: folder of per-model result files (or a ``deq_core.cache.DiskCache``);
            ``DEFAULT_CACHE_DIR``: the CLI's folder; None: no cache.
        checksums: name -> model identity for the cache key (``model_checksum(folder)``);
            default a hash of the model's config and state.
        baseline: the model effective robustness compares with; default the late-fusion one.
        progress: show a tqdm bar.
    """
    if not models:
        raise ValueError("robustness_sweep needs at least one model")
    severities = _severities(severities)
    corruptions = _normalise_corruptions(data, corruptions)
    for name, model in models.items():
        _check_compatible(name, model, data)
    if baseline is None:
        baseline = next((n for n, m in models.items() if m.config.architecture == "late"), None)
    elif baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not one of the models {list(models)}")

    checksums = {name: (checksums or {}).get(name) or state_checksum(m) for name, m in models.items()}
    store = _open_cache(cache_dir)
    fingerprint = data_fingerprint(data) if store is not None else ""
    rows: dict[str, list[dict]] = {}
    cached: dict[str, bool] = {}
    entries: dict[str, str] = {}
    for name in models:
        if store is not None:
            entries[name] = _entry_key(checksums[name], fingerprint, severities, corruptions, seed)
            hit = _read_cache(store, entries[name])
            if hit is not None:
                rows[name] = [{**r, "model": name} for r in hit]
        cached[name] = name in rows
    pending = [name for name in models if name not in rows]

    settings = [(name, kind, s) for name, kinds in corruptions.items() for kind in kinds for s in severities if s > 0]
    training = {name: models[name].training for name in pending}
    try:
        for name in pending:
            models[name].eval()
        _sweep(models, pending, data, settings, severities, corruptions, seed, batch_size, progress, rows)
    finally:
        for name in pending:
            models[name].train(training[name])
    for name in pending:
        if store is not None:
            _write_cache(store, entries[name], rows[name])

    frame = pd.DataFrame([r for name in models for r in rows[name]], columns=list(ROW_KEYS))
    frame["iterations_mean"] = frame["iterations_mean"].astype(float)
    return RobustnessReport(
        dataset=data.name,
        split=data.split,
        n=len(data),
        severities=severities,
        corruptions=corruptions,
        seed=seed,
        models={n: {"architecture": m.config.architecture, "checksum": checksums[n]} for n, m in models.items()},
        rows=frame,
        summary=summarise(frame, ["modality"], baseline),
        corruption_summary=summarise(frame, ["modality", "corruption"], baseline),
        baseline=baseline,
        cached=cached,
    )


def _sweep(models, pending, data, settings, severities, corruptions, seed, batch_size, progress, rows) -> None:
    """Fill ``rows[name]`` for each pending model: clean once, then each corrupted setting."""
    if not pending:
        return
    references = {name: InputReference.of_model(models[name]) for name in pending}
    fingerprints = {name: references[name].fingerprint() for name in pending}
    names = [m.name for m in data.modalities]
    clean_digests = {name: _digest(x) for name, x in zip(names, data.inputs)}
    clean_inputs = data.inputs
    labels = data.labels
    bar = tqdm(total=len(pending) * (len(settings) + 1), disable=not progress, desc="robustness", unit="run")
    clean: dict[str, Measurement] = {}
    # (model, modality, digest of the corrupted input) -> row values: a setting whose input
    # was already seen (drop at every severity, a full occlusion) is not run again.
    seen: dict[tuple[str, str, str], dict] = {}
    results: dict[tuple, dict] = {}
    # A setting corrupts one modality: the others keep their clean features, encoded once
    # per model (the photo encoder is most of a model's cost).
    clean_features: dict[str, torch.Tensor] = {}
    for name in pending:
        model = models[name]
        clean_features[name] = torch.stack(
            [_encode(model, x, i, batch_size) for i, x in enumerate(clean_inputs)], dim=1
        )
        clean[name] = measure(model, clean_inputs, labels, batch_size, clean_features[name])
        for modality in names:
            seen[name, modality, clean_digests[modality]] = _values(clean[name], clean[name])
        bar.update()
    for modality, kind, severity in settings:
        spec = CorruptionSpec(modality, kind, severity, seed)
        corrupted: dict[str, tuple[tuple[torch.Tensor, ...], str]] = {}
        for name in pending:  # models with the same training statistics share one corrupted copy
            fp = fingerprints[name]
            if fp not in corrupted:
                inputs = apply(clean_inputs, data.modalities, spec, references[name], case_keys=data.ids)
                corrupted[fp] = inputs, _digest(inputs[names.index(modality)])
            inputs, digest = corrupted[fp]
            if (name, modality, digest) not in seen:
                index = names.index(modality)
                features = clean_features[name].clone()
                features[:, index] = _encode(models[name], inputs[index], index, batch_size)
                measured = measure(models[name], inputs, labels, batch_size, features)
                seen[name, modality, digest] = _values(measured, clean[name])
            results[name, modality, kind, severity] = {
                "model": name, "modality": modality, "corruption": kind, "severity": severity,
                **seen[name, modality, digest],
            }  # fmt: skip
            bar.update()
    bar.close()
    for name in pending:
        clean_values = _values(clean[name], clean[name])
        rows[name] = [
            {"model": name, "modality": modality, "corruption": kind, "severity": 0.0, **clean_values}
            if severity == 0
            else results[name, modality, kind, severity]
            for modality, kinds in corruptions.items()
            for kind in kinds
            for severity in severities
        ]


def _values(m: Measurement, clean: Measurement) -> dict:
    """A row's measured values; the shift is against the same model's clean run."""
    return {
        "accuracy": float(m.correct.mean()),
        "iterations_mean": float(m.iterations.mean()) if m.iterations is not None else None,
        "equilibrium_shift": 0.0 if m is clean else _shift(m.representation, clean.representation),
    }


# --------------------------------------------------------------------------- folders and CLI


def find_baselines(folder: str | Path) -> dict[str, Path]:
    """The model folder and its siblings ``<dataset>-<architecture>`` of the same dataset, by folder name.

    A sibling whose config is unreadable, or of another architecture or dataset, is
    skipped with a warning.
    """
    folder = Path(folder)
    config = load_config(folder)
    suffix = f"-{config.architecture}"
    found = {folder.name: folder}
    if not folder.name.endswith(suffix):
        return found
    prefix = folder.name[: -len(suffix)]
    for architecture in ARCHITECTURES:
        sibling = folder.parent / f"{prefix}-{architecture}"
        if sibling.name == folder.name or not (sibling / CONFIG).is_file():
            continue
        try:
            other = load_config(sibling)
        except ModelLoadError as error:
            warnings.warn(f"skipping baseline {sibling}: {error}", stacklevel=2)
            continue
        if other.architecture != architecture or other.dataset != config.dataset:
            warnings.warn(f"skipping {sibling}: not a {architecture} model of {config.dataset!r}", stacklevel=2)
            continue
        found[sibling.name] = sibling
    order = {f"{prefix}-{a}": i for i, a in enumerate(ARCHITECTURES)}
    return dict(sorted(found.items(), key=lambda item: order.get(item[0], -1)))


def sweep_folder(
    folder: str | Path,
    split: str = "test",
    severities: Sequence[float] = DEFAULT_SEVERITIES,
    baselines: bool = True,
    seed: int = 0,
    cache_dir: CacheChoice = DEFAULT_CACHE_DIR,
    device: str = "auto",
    progress: bool = False,
    trust_code: TrustCode = False,
) -> RobustnessReport:
    """``robustness_sweep`` of a model folder (and its baselines) on its own dataset (``trust_code``: adapters' code may run)."""
    folders = find_baselines(folder) if baselines else {Path(folder).name: Path(folder)}
    models = {name: load_model(path, device=device, trust_code=trust_code) for name, path in folders.items()}
    config = models[Path(folder).name].config
    data = load_dataset(config.dataset, split, modalities=config.modalities)
    checksums = {name: model_checksum(path) for name, path in folders.items()}
    return robustness_sweep(models, data, severities, seed=seed, cache_dir=cache_dir, checksums=checksums,
                            progress=progress)  # fmt: skip


def format_table(report: RobustnessReport) -> str:
    def num(value, digits=3):
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    header = ("model", "modality", "clean", "worst", "relative", "retained", "effective", "eff. (fit)", "shift")
    lines = [
        f"{report.dataset} / {report.split}, {report.n} cases, "
        f"severities {', '.join(f'{s:g}' for s in report.severities)}",
        f"effective robustness against: {report.baseline or 'n/a (no late-fusion model)'}",
        "",
    ]
    table = [header]
    for row in report.summary.itertuples(index=False):
        table.append((row.model, row.modality, num(row.clean_accuracy), num(row.worst_accuracy),
                      num(row.relative_robustness), num(row.retained_accuracy), num(row.effective_robustness),
                      num(row.effective_robustness_fit), num(row.equilibrium_shift_mean)))  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deq_core.robustness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="model folder")
    parser.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--severities", type=float, nargs="+", default=None, help="default 0, 0.1, ..., 1")
    parser.add_argument("--quick", action="store_true", help=f"severities {', '.join(map(str, QUICK_SEVERITIES))}")
    parser.add_argument("--no-baselines", action="store_true", help="only the given model")
    parser.add_argument("--seed", type=int, default=0, help="corruption seed")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="folder of cached results (default: $DEQ_LENS_CACHE/robustness, else "
                        "~/.cache/deq-lens/robustness)")  # fmt: skip
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    severities = args.severities or (QUICK_SEVERITIES if args.quick else DEFAULT_SEVERITIES)
    start = time.perf_counter()
    try:
        report = sweep_folder(
            args.model, args.split, severities, baselines=not args.no_baselines, seed=args.seed,
            cache_dir=None if args.no_cache else (args.cache_dir or DEFAULT_CACHE_DIR), device=args.device,
            progress=not args.quiet, trust_code=trust_for(args.trust_code, args.model),
        )  # fmt: skip
    except (ModelLoadError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.to_dict(), "seconds": round(time.perf_counter() - start, 2)}))
    else:
        print(format_table(report))
        cached = sum(report.cached.values())
        print(f"\n{time.perf_counter() - start:.1f} s ({cached} of {len(report.cached)} models from the cache)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
