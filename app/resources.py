"""What the pages share: model discovery, Streamlit caches, background jobs, the current selection.

Models and data are loaded once per process (``st.cache_resource``) and shared by
every session; per-case results are cached on hashable keys (``st.cache_data``);
dataset-level work runs in ``app.jobs`` so a rerun never throws it away.

Environment:
    DEQ_LENS_MODELS      models root (default <repo>/assets/models)
    DEQ_LENS_MAX_CASES   use at most this many test cases, evenly spread, for dataset-level views
    DEQ_LENS_ROBUSTNESS  "quick" (severities 0, 0.5, 1) or "full" (0, 0.1, ..., 1); default: full
                         when the robustness CLI has cached it, else quick
    DEQ_LENS_ROBUSTNESS_CACHE  folder of the robustness sweep's result cache (default: the CLI's)
    DEQ_LENS_CACHE       folder of the app's own result cache (default <repo>/.cache/lens)
    DEQ_LENS_THREADS     torch CPU threads (default: torch's own choice)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

import deq_core
from deq_core import ModelLoadError, SolverSettings, load_config, load_model, model_checksum, resolve_device, trace
from deq_core.data import MultimodalDataset, load_dataset

# deq_core.evaluate and deq_core.explain.tuning (scikit-learn), robustness (pandas) and explain
# (Captum) are imported where they are used: the first page must not wait for them.

from .jobs import Job, Jobs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = REPO / "assets" / "models"
EQUILIBRIUM = ("deq", "weight_tied")


# --------------------------------------------------------------------------- settings from the environment


def models_root() -> Path:
    return Path(os.environ.get("DEQ_LENS_MODELS") or DEFAULT_MODELS).expanduser()


def max_cases() -> int | None:
    value = os.environ.get("DEQ_LENS_MAX_CASES", "").strip()
    return int(value) if value else None


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelEntry:
    """A model folder as the app lists it (cheap: config and checksum only)."""

    folder: str
    name: str
    architecture: str
    dataset: str
    checksum: str

    @property
    def equilibrium(self) -> bool:
        return self.architecture in EQUILIBRIUM

    @property
    def short_checksum(self) -> str:
        return self.checksum[:12]


def _stamp(folder: Path) -> tuple:
    """Changes whenever the folder's weights or config are rewritten."""
    out = []
    for name in ("weights.safetensors", "config.json"):
        stat = (folder / name).stat()
        out.append((name, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=64)
def _entry(folder: str, stamp: tuple) -> ModelEntry:
    config = load_config(folder)
    return ModelEntry(
        folder=folder,
        name=Path(folder).name,
        architecture=config.architecture,
        dataset=config.dataset,
        checksum=model_checksum(folder),
    )


def model_entry(folder: str | Path) -> ModelEntry:
    """Raises ``ModelLoadError`` (or ``FileNotFoundError``) for a folder that is not a model."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: no config.json here, so this is not a model folder")
    if not (folder / "weights.safetensors").is_file():
        raise ModelLoadError(f"{folder}: weights.safetensors is missing")
    return _entry(str(folder), _stamp(folder))


def list_models(root: Path | None = None) -> list[ModelEntry]:
    """Model folders directly under the root, DEQs first, inspection before other datasets."""
    root = root or models_root()
    if not root.is_dir():
        return []
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            entries.append(model_entry(folder))
        except (ModelLoadError, OSError, ValueError):
            continue  # half-written or foreign folders are not offered
    order = {a: i for i, a in enumerate(deq_core.ARCHITECTURES)}
    return sorted(entries, key=lambda e: (e.dataset != "inspection", order.get(e.architecture, 9), e.name))


def default_model(entries: Sequence[ModelEntry]) -> ModelEntry | None:
    for entry in entries:
        if entry.name == "inspection-deq":
            return entry
    return next((e for e in entries if e.architecture == "deq"), entries[0] if entries else None)


def baselines_of(entry: ModelEntry) -> dict[str, ModelEntry]:
    """The model and its siblings ``<dataset>-<architecture>`` in the same folder, by architecture."""
    from deq_core.explain.robustness import find_baselines

    found: dict[str, ModelEntry] = {}
    for folder in find_baselines(entry.folder).values():
        try:
            sibling = model_entry(folder)
        except (ModelLoadError, OSError, ValueError):
            continue
        found.setdefault(sibling.architecture, sibling)
    return found


class ModelHandle:
    """A loaded model and the lock that serialises the foreground calls on it.

    Attribution registers hooks on the model while it runs, so two sessions must
    not run it at once; background jobs load their own copy and never take this lock.
    """

    def __init__(self, model):
        self.model = model
        self.lock = threading.RLock()


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def shared_model(folder: str, checksum: str) -> ModelHandle:
    return ModelHandle(load_model(folder, device="auto"))


def handle(entry: ModelEntry) -> ModelHandle:
    return shared_model(entry.folder, entry.checksum)


def device_name() -> str:
    device = resolve_device("auto")
    if device.type == "cuda":
        return f"GPU ({torch.cuda.get_device_name(device)})"
    return "CPU"


def training_metrics(entry: ModelEntry) -> dict:
    path = Path(entry.folder) / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- data


def _evenly(n: int, cap: int | None) -> np.ndarray | None:
    if cap is None or cap >= n:
        return None
    return np.unique(np.linspace(0, n - 1, cap).round().astype(int))


@st.cache_resource(show_spinner="Loading the test cases…", max_entries=8)
def _test_data(dataset: str, modalities_json: str, cap: int | None) -> MultimodalDataset:
    modalities = tuple(deq_core.Modality.from_dict(m) for m in json.loads(modalities_json))
    data = load_dataset(dataset, "test", modalities=modalities)
    rows = _evenly(len(data), cap)
    return data if rows is None else data.subset(rows)


def test_data(entry: ModelEntry) -> MultimodalDataset:
    """The model's test split (capped by DEQ_LENS_MAX_CASES), shared by all sessions."""
    config = handle(entry).model.config
    modalities = json.dumps([m.to_dict() for m in config.modalities])
    return _test_data(config.dataset, modalities, max_cases())


# --------------------------------------------------------------------------- background jobs


@st.cache_resource
def jobs() -> Jobs:
    return Jobs(workers=1)


def wait_for(job: Job, what: str) -> object | None:
    """Show progress until ``job`` is done; its value, or None after showing its error.

    The wait polls, so a rerun (a click elsewhere) ends the wait, never the job.
    """
    if not job.done:
        bar = st.progress(job.fraction, text=f"{what}…")
        while not job.wait(0.25):
            bar.progress(job.fraction, text=f"{what}: {job.message} ({job.elapsed:.0f} s)")
        bar.empty()
    if job.failed:
        st.error(f"{what} failed: {job.error}")
        with st.expander("Details"):
            st.code(job.error_text)
        return None
    return job.value


def cache_dir() -> Path:
    return Path(os.environ.get("DEQ_LENS_CACHE") or REPO / ".cache" / "lens")


def data_fingerprint(data: MultimodalDataset) -> str:
    h = hashlib.sha256(f"{data.name}|{data.split}|{len(data)}|{deq_core.__version__}".encode())
    for x in (*data.inputs, data.labels):
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update("\n".join(data.ids).encode())
    return h.hexdigest()[:24]


def _save_evaluation(path: Path, evaluation, p) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "evaluation": np.array(json.dumps(evaluation.to_dict())),
        "ids": np.array(p.ids, dtype=str),
        "labels": p.labels,
        "predicted": p.predicted,
        "probabilities": p.probabilities,
    }
    if p.iterations is not None:
        arrays.update(iterations=p.iterations, relative_residual=p.relative_residual, status=np.array(p.status, dtype=str))
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.npz")
    np.savez(staging, **arrays)
    os.replace(staging, path)  # atomic: another process never reads half a file


def _load_evaluation(path: Path):
    from deq_core.evaluate import Evaluation, Predictions

    try:
        with np.load(path, allow_pickle=False) as f:
            evaluation = Evaluation(**json.loads(str(f["evaluation"])))
            has_solve = "iterations" in f
            predictions = Predictions(
                ids=tuple(str(i) for i in f["ids"]),
                labels=f["labels"],
                predicted=f["predicted"],
                probabilities=f["probabilities"],
                iterations=f["iterations"] if has_solve else None,
                relative_residual=f["relative_residual"] if has_solve else None,
                status=tuple(str(s) for s in f["status"]) if has_solve else None,
            )
        return evaluation, predictions
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, stale or unreadable: evaluate again


def evaluation_job(entry: ModelEntry) -> Job:
    """``deq_core.evaluate`` of one model on the test split: (Evaluation, Predictions).

    Kept on disk by model checksum and data fingerprint, so a restarted app shows it at once.
    """
    data = test_data(entry)
    key = ("evaluate", entry.folder, entry.checksum, len(data))

    def work(report):
        path = cache_dir() / "evaluations" / f"{entry.checksum[:24]}-{data_fingerprint(data)}.npz"
        cached = _load_evaluation(path)
        if cached is not None:
            return cached
        from deq_core.evaluate import evaluate

        report(0.05, f"evaluating {entry.name} on {len(data)} cases")
        model = load_model(entry.folder, device="auto")
        evaluation, predictions = evaluate(model, data, name=entry.name)
        _save_evaluation(path, evaluation, predictions)
        return evaluation, predictions

    return jobs().submit(key, f"evaluation of {entry.name}", work)


def robustness_detail() -> str:
    """"quick" or "full": from DEQ_LENS_ROBUSTNESS, else full when its results are cached on disk."""
    chosen = os.environ.get("DEQ_LENS_ROBUSTNESS", "").strip().lower()
    return chosen if chosen in ("quick", "full") else "auto"


def robustness_cache_dir() -> Path:
    from deq_core.explain.robustness import DEFAULT_CACHE

    return Path(os.environ.get("DEQ_LENS_ROBUSTNESS_CACHE") or DEFAULT_CACHE)


def _full_sweep_cached(entries: dict[str, ModelEntry], data: MultimodalDataset) -> bool:
    """Whether the CLI's full sweep of these models on this data is in the cache (then it loads in a moment)."""
    try:
        from deq_core.explain import robustness as r
        from deq_core.explain.corrupt import available_corruptions

        corruptions = {m.name: tuple(available_corruptions(m.kind)) for m in data.modalities}
        fingerprint = r._data_fingerprint(data)
        keys = [r._cache_key(e.checksum, fingerprint, r._severities(r.DEFAULT_SEVERITIES), corruptions, 0) for e in entries.values()]
        return all((robustness_cache_dir() / f"{k}.json").is_file() for k in keys)
    except Exception:  # a private helper renamed: fall back to the quick sweep
        return False


def robustness_job(entry: ModelEntry, detail: str = "auto") -> tuple[Job, str]:
    """The robustness sweep of the model and its baselines; returns (job, detail used)."""
    from deq_core.explain.robustness import DEFAULT_SEVERITIES, QUICK_SEVERITIES, robustness_sweep

    siblings = baselines_of(entry)
    named = {e.name: e for e in siblings.values()}
    data = test_data(entry)
    if detail == "auto":
        detail = robustness_detail()
    if detail == "auto":
        detail = "full" if _full_sweep_cached(named, data) else "quick"
    severities = DEFAULT_SEVERITIES if detail == "full" else QUICK_SEVERITIES
    key = ("robustness", tuple((e.name, e.checksum) for e in named.values()), len(data), detail)

    def work(report):
        report(0.02, f"loading {len(named)} models")
        models = {name: load_model(e.folder, device="auto") for name, e in named.items()}
        runs = len(models) * (1 + sum(len(v) for v in _corruption_kinds(data).values()) * (len(severities) - 1))
        report(0.05, f"{runs} runs over {len(data)} cases (models whose results are cached on disk are read)")
        return robustness_sweep(
            models, data, severities, cache_dir=robustness_cache_dir(),
            checksums={name: e.checksum for name, e in named.items()},
        )  # fmt: skip

    return jobs().submit(key, "robustness sweep", work), detail


def _corruption_kinds(data: MultimodalDataset) -> dict[str, tuple[str, ...]]:
    from deq_core.explain.corrupt import available_corruptions

    return {m.name: available_corruptions(m.kind) for m in data.modalities}


_reference_lock = threading.Lock()
_references: dict[tuple, np.ndarray] = {}


def _reference_decisions(entry: ModelEntry, model, data: MultimodalDataset, reference: SolverSettings) -> np.ndarray:
    from deq_core.explain import tuning

    key = (entry.folder, entry.checksum, reference, len(data))
    with _reference_lock:
        if key not in _references:
            _references[key] = tuning.reference_decisions(model, data, reference)
        return _references[key]


def assessment_job(entry: ModelEntry, settings: SolverSettings) -> Job:
    """The whole test split under ``settings``, with flips against the tight reference."""
    data = test_data(entry)
    key = ("assess", entry.folder, entry.checksum, settings, len(data))

    def work(report):
        from deq_core.explain import tuning

        model = load_model(entry.folder, device="auto")
        reference = tuning.reference_settings(settings)
        report(0.1, "solving every case tightly for the reference decisions")
        decisions = _reference_decisions(entry, model, data, reference)
        report(0.5, f"solving every case at tolerance {settings.tol:g}")
        return tuning.assess_settings(model, data, settings, decisions, latency_cases=10)

    return jobs().submit(key, "test-set assessment", work)


def sweep_job(entry: ModelEntry, base: SolverSettings) -> Job:
    """``deq_core.explain.tuning.tolerance_sweep`` of the test split around ``base`` (only the tolerance varies)."""
    data = test_data(entry)
    key = ("sweep", entry.folder, entry.checksum, dataclasses.replace(base, tol=1.0), len(data))

    def work(report):
        from deq_core.explain import tuning

        model = load_model(entry.folder, device="auto")
        return tuning.tolerance_sweep(model, data, base, latency_cases=5, progress=report)

    return jobs().submit(key, "tolerance sweep", work)


def equal_compute_job(deq: ModelEntry, weight_tied: ModelEntry, base: SolverSettings) -> Job:
    data = test_data(deq)
    key = ("equal_compute", deq.checksum, weight_tied.checksum, dataclasses.replace(base, max_iter=1), len(data))

    def work(report):
        from deq_core.explain import tuning

        return tuning.equal_compute(
            load_model(deq.folder, device="auto"), load_model(weight_tied.folder, device="auto"), data,
            base=base, progress=report,
        )  # fmt: skip

    return jobs().submit(key, "equal-compute comparison", work)


def warm_up(entry: ModelEntry) -> None:
    """Queue the default views' dataset-level work at start, so it is under way before anyone asks."""
    for sibling in baselines_of(entry).values():
        evaluation_job(sibling)
    robustness_job(entry)


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One case as the pages use it.

    Attributes:
        key: stable identity for caches: the test case id, or ``upload-<sha256>``.
        inputs: one tensor per modality, batch 1.
        label: true class index, None for an uploaded case.
        texts: raw text per text modality (what a person reads).
    """

    key: str
    inputs: tuple[torch.Tensor, ...]
    label: int | None
    texts: dict[str, str]


def test_case(entry: ModelEntry, case_id: str) -> Case:
    data = test_data(entry)
    inputs, label = data.case(case_id)
    row = data.ids.index(case_id)
    return Case(key=case_id, inputs=inputs, label=label, texts={k: v[row] for k, v in data.texts.items()})


def ideal_reference(entry: ModelEntry, case: Case, target: int):
    """``deq_core.explain.ideal.IdealReference`` of a generated inspection case, else None (other data, uploads)."""
    from deq_core.explain.ideal import ideal_reference as reference

    return reference(case.key, case.inputs, case.texts, target, handle(entry).model.config.modality_names)


def current_case(entry: ModelEntry) -> Case | None:
    """The case chosen on the Inspect page (an upload or a test case), shared with the Lab and Tuning."""
    upload = st.session_state.get("uploaded_case")
    if st.session_state.get("case_source") == "upload" and upload is not None and upload.get("model") == entry.checksum:
        return upload["case"]
    case_id = st.session_state.get("case_id")
    data = test_data(entry)
    if case_id not in data.ids:
        case_id = data.ids[0]
        st.session_state["case_id"] = case_id
    return test_case(entry, case_id)


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class CaseSolve:
    """A case solved with recording: the decision and its trajectory."""

    probabilities: np.ndarray  # (C,)
    trajectory: object  # deq_core.Trajectory


@st.cache_data(show_spinner=False, max_entries=512)
def case_solve(folder: str, checksum: str, case_key: str, settings: SolverSettings | None, _inputs: tuple) -> CaseSolve:
    """``deq_core.trace`` of one case; ``case_key`` must identify ``_inputs`` (corruptions included)."""
    h = shared_model(folder, checksum)
    with h.lock:
        output, (trajectory,) = trace(h.model, [x.to(h.model.device) for x in _inputs], settings)
    return CaseSolve(probabilities=torch.softmax(output.logits, dim=1)[0].cpu().numpy(), trajectory=trajectory)


@st.cache_data(show_spinner=False, max_entries=128)
def case_tuning(folder: str, checksum: str, case_key: str, settings: SolverSettings, _inputs: tuple):
    from deq_core.explain import tuning

    h = shared_model(folder, checksum)
    with h.lock:
        return tuning.tune_case(h.model, _inputs, settings)


def current_model_entry() -> ModelEntry | None:
    folder = st.session_state.get("model_folder")
    if not folder:
        return None
    try:
        return model_entry(folder)
    except (ModelLoadError, OSError, ValueError):
        return None


def require_model() -> ModelEntry:
    entry = current_model_entry()
    if entry is None:
        st.warning("Choose a model in the sidebar first.")
        st.stop()
    return entry


def require_equilibrium(entry: ModelEntry) -> None:
    if not entry.equilibrium:
        st.info(
            f"**{entry.name}** is a {entry.architecture.replace('_', '-')} fusion model: it has no equilibrium to show. "
            "Pick a DEQ (or weight-tied) model in the sidebar."
        )
        st.stop()


@st.cache_data(show_spinner=False, max_entries=128)
def case_explanation(folder: str, checksum: str, case_key: str, target: int | None, n_steps: int, baseline: str | None,
                     _inputs: tuple, _texts: dict):  # fmt: skip
    """``deq_core.explain.explanation.explain_case`` of one case, once per (case, target, steps, baseline)."""
    from deq_core.explain.explanation import explain_case

    h = shared_model(folder, checksum)
    with h.lock:
        return explain_case(h.model, _inputs, texts=_texts, target=target, n_steps=n_steps, baseline=baseline)


def lab_specs(settings: Sequence[tuple[str, bool, str, float]]) -> tuple:
    """Corruption specs of the lab's switches: (modality, on, kind or "none", severity) each."""
    from deq_core.explain.corrupt import CorruptionSpec

    specs = []
    for modality, on, kind, severity in settings:
        if not on:
            specs.append(CorruptionSpec(modality, "drop", 1.0))  # switched off = missing = the training mean
        elif kind != "none" and severity > 0:
            specs.append(CorruptionSpec(modality, kind, float(severity)))
    return tuple(specs)


@dataclass(frozen=True)
class VariantSolve:
    inputs: tuple  # the corrupted inputs, batch 1
    solve: CaseSolve


@st.cache_data(show_spinner=False, max_entries=512)
def variant_solve(folder: str, checksum: str, case_key: str, specs: tuple, _inputs: tuple) -> VariantSolve:
    """The case with ``specs`` applied (``deq_core.explain.corrupt.apply``, keyed by the case id) and solved."""
    from deq_core.explain.corrupt import InputReference, apply

    h = shared_model(folder, checksum)
    model = h.model
    with h.lock:
        corrupted = apply(_inputs, model.config.modalities, specs, InputReference.of_model(model), case_keys=[case_key])
    key = f"{case_key}|" + ";".join(s.describe() for s in specs)
    return VariantSolve(inputs=tuple(x.cpu() for x in corrupted), solve=case_solve(folder, checksum, key, None, tuple(corrupted)))
