"""What the pages share: model discovery, Streamlit caches, background jobs, the current selection.

Each model has one ``deq_core.Lens`` per process (``st.cache_resource``), shared by every
session: its lock serialises the foreground calls and its cache holds every per-case
result (decisions, explanations, tunings, variants), keyed by model checksum, case key,
input fingerprint and settings. Dataset-level work runs in ``app.jobs`` on a second Lens
of the same model (``background_lens``), so a rerun never throws it away and never waits
for it; evaluations are also kept on disk (``deq_core.cache``).

Environment:
    DEQ_LENS_MODELS      models root (default <repo>/assets/models)
    DEQ_LENS_MODEL       the model chosen at start (a folder name under the root); default the first DEQ listed
    DEQ_LENS_MAX_CASES   use at most this many test cases, evenly spread, for dataset-level views
    DEQ_LENS_ROBUSTNESS  "quick" (severities 0, 0.5, 1) or "full" (0, 0.1, ..., 1); default: full
                         when the robustness CLI has cached it, else quick
    DEQ_LENS_ROBUSTNESS_CACHE  folder of the robustness sweep's result cache (default: the CLI's)
    DEQ_LENS_CACHE       the cache root (default ~/.cache/deq-lens; the app's own results go in app/)
    DEQ_LENS_THREADS     torch CPU threads (default: torch's own choice)
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

import deq_core
from deq_core import Case, Lens, ModelLoadError, SolverSettings, model_checksum, resolve_device
from deq_core.cache import DiskCache, cache_root, data_fingerprint
from deq_core.cache import key as cache_key
from deq_core.data import MultimodalDataset
from deq_core.engine import CodeTrust, code_files, verify_folder

# deq_core.evaluate and deq_core.explain.tuning (scikit-learn), robustness (pandas) and explain
# (Captum) are imported where they are used: the first page must not wait for them.

from .jobs import Job, Jobs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = REPO / "assets" / "models"
EQUILIBRIUM = ("deq", "weight_tied")


# --------------------------------------------------------------------------- settings from the environment


def models_root() -> Path:
    """The opened dataset folder's models (``dataset_models``) when one is open, else $DEQ_LENS_MODELS."""
    folder = dataset_folder()
    if folder is not None:
        return dataset_models(folder) or folder / "models"
    return environment_models_root()


def environment_models_root() -> Path:
    """$DEQ_LENS_MODELS (default the shipped models): what the app lists when no dataset folder is open."""
    return Path(os.environ.get("DEQ_LENS_MODELS") or DEFAULT_MODELS).expanduser()


# --------------------------------------------------------------------------- your own dataset folder
DATASET_FOLDER = "dataset_folder"  # session key: the dataset folder the sidebar opened (a str), or absent


def dataset_folder() -> Path | None:
    """The dataset folder this session opened in the sidebar (deq_core/data/folder.py format), or None."""
    try:
        value = st.session_state.get(DATASET_FOLDER)
    except Exception:  # outside a session (a background thread): the environment's models only
        return None
    return Path(value) if value else None


def dataset_models(folder: str | Path) -> Path | None:
    """Where a dataset folder's models are: ``models/`` inside it, else a ``models`` folder beside it."""
    folder = Path(folder)
    for candidate in (folder / "models", folder.parent / "models"):
        if candidate.is_dir():
            return candidate
    return None


def check_dataset_folder(path: str | Path) -> Path:
    """The folder resolved, when it is a dataset folder with models; ``ValueError`` saying what is missing otherwise."""
    folder = Path(path).expanduser().resolve()
    if not (folder / "dataset.json").is_file():
        raise ValueError(f"{folder}: no dataset.json here: a dataset folder has dataset.json and manifest.csv "
                         "(deq_core/data/folder.py)")  # fmt: skip
    if dataset_models(folder) is None:
        raise ValueError(f"{folder}: no models for it: put the model folders in {folder / 'models'} "
                         f"or in {folder.parent / 'models'}")  # fmt: skip
    return folder


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
    inputs: tuple = ()  # (name, kind, shape) per modality: which models take the same cases
    encoders: str = ""  # ModelConfig.describe_encoders(): the Overview says which encoder each model uses

    @property
    def equilibrium(self) -> bool:
        return self.architecture in EQUILIBRIUM

    @property
    def short_checksum(self) -> str:
        return self.checksum[:12]


@dataclass(frozen=True)
class BrokenModel:
    """A folder under the models root that holds model files but fails their checks, and why."""

    folder: str
    name: str
    message: str


MODEL_FILES = ("weights.safetensors", "config.json", "checksums.json", "adapter.json")

# Leave to run a user's model code (adapter.json) is per browser session and per folder:
# the sidebar's "Run model code" setting grants it for the chosen folder and its code as
# they are now (a ``CodeTrust``), kept in that session's state. Another session, another
# folder, or this folder after its code changed is not covered, and is asked again.
TRUSTED_CODE = "trusted_code"  # session_state key: {folder: CodeTrust}


def _grants() -> dict:
    return st.session_state.setdefault(TRUSTED_CODE, {})


def set_trust(folder: str, trusted: bool) -> None:
    """Allow (or stop allowing) this session to run ``folder``'s code as it is now; a model loaded stays loaded."""
    grants = _grants()
    if not trusted:
        grants.pop(str(folder), None)
    elif str(folder) not in grants:
        grants[str(folder)] = CodeTrust.grant(folder)


def trust_of(folder: str) -> CodeTrust | None:
    """This session's leave for ``folder``'s code, when it still covers the code there now."""
    grant = st.session_state.get(TRUSTED_CODE, {}).get(str(folder))
    try:
        return grant if grant is not None and grant.covers(folder) else None
    except (ModelLoadError, OSError):
        return None


def is_trusted(folder: str) -> bool:
    return trust_of(folder) is not None


def stale_trust(folder: str) -> bool:
    """Whether this session allowed ``folder``'s code, but the code changed since: the leave is withdrawn."""
    if str(folder) in st.session_state.get(TRUSTED_CODE, {}) and trust_of(folder) is None:
        _grants().pop(str(folder), None)
        return True
    return False


def is_user_model(entry: "ModelEntry") -> bool:
    """Whether the folder is a user's own model (adapter.json): opening it runs its code."""
    return (Path(entry.folder) / "adapter.json").is_file()


def _stamp(folder: Path) -> tuple:
    """Changes whenever one of the folder's model files (or a user's model's code file) is rewritten, appears or goes."""
    out = []
    for name in MODEL_FILES:
        try:
            stat = (folder / name).stat()
            out.append((name, stat.st_mtime_ns, stat.st_size))
        except OSError:
            out.append((name, None, None))
    if (folder / "adapter.json").is_file():  # the code is part of the model: its checksum and checks cover it
        try:
            for path in code_files(folder):
                stat = path.stat()
                out.append((str(path), stat.st_mtime_ns, stat.st_size))
        except (ModelLoadError, OSError) as error:
            out.append(("code", str(error), None))
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=64)
def _probe(folder: str, stamp: tuple) -> ModelEntry | str:
    """The folder's entry, or the message saying why it is none.

    Every check that needs no tensor (``verify_folder``: sizes, checksums, limits), so a
    broken folder is named without loading anything; its message is cached like an entry,
    so a listing on every rerun checks each folder once per change of its files.
    """
    try:
        config = verify_folder(folder)
        return ModelEntry(
            folder=folder,
            name=Path(folder).name,
            architecture=config.architecture,
            dataset=config.dataset,
            checksum=model_checksum(folder),
            inputs=tuple((m.name, m.kind, tuple(m.shape)) for m in config.modalities),
            encoders=config.describe_encoders(brief=True),
        )
    except (ModelLoadError, OSError) as error:
        return str(error)


def model_entry(folder: str | Path) -> ModelEntry:
    """Raises ``ModelLoadError`` for a folder that is not a model, or one that fails its checks."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: no config.json here, so this is not a model folder")
    if not (folder / "weights.safetensors").is_file():
        raise ModelLoadError(f"{folder}: weights.safetensors is missing")
    probe = _probe(str(folder), _stamp(folder))
    if isinstance(probe, str):
        raise ModelLoadError(probe)
    return probe


def _folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_models(root: Path | None = None) -> list[ModelEntry]:
    """Model folders directly under the root, DEQs first, inspection before other datasets."""
    entries = []
    for folder in _folders(root or models_root()):
        try:
            entries.append(model_entry(folder))
        except (ModelLoadError, OSError, ValueError):
            continue  # listed by broken_models when it holds model files; foreign folders are not offered
    order = {a: i for i, a in enumerate(deq_core.ARCHITECTURES)}
    return sorted(entries, key=lambda e: (e.dataset != "inspection", order.get(e.architecture, 9), e.name))


def broken_models(root: Path | None = None) -> list[BrokenModel]:
    """Folders under the root with a model file that fail its checks, by name, each with its message.

    The sidebar lists them as broken: a folder someone damaged is named, not silently
    left out, and it takes nothing down with it. Folders with no model file are not models.
    """
    broken = []
    for folder in _folders(root or models_root()):
        if not any((folder / name).exists() for name in MODEL_FILES):
            continue
        try:
            model_entry(folder)
        except (ModelLoadError, OSError, ValueError) as error:
            broken.append(BrokenModel(folder=str(folder), name=folder.name, message=str(error)))
    return broken


def default_model(entries: Sequence[ModelEntry]) -> ModelEntry | None:
    """$DEQ_LENS_MODEL when it names a listed folder, else the first DEQ of the listing (or the first model)."""
    chosen = os.environ.get("DEQ_LENS_MODEL", "").strip()
    for entry in entries:
        if chosen and entry.name == chosen:
            return entry
    return next((e for e in entries if e.architecture == "deq"), entries[0] if entries else None)


def baselines_of(entry: ModelEntry) -> dict[str, ModelEntry]:
    """The model and the other models beside it of the same dataset and inputs, one per architecture.

    Found by their configs, not their folder names; where two folders have the same
    architecture, the one whose name shares the model's prefix wins, then the first by name.
    """
    prefix = entry.name.rsplit("-", 1)[0]
    found: dict[str, ModelEntry] = {entry.architecture: entry}
    folder = Path(entry.folder)
    candidates = sorted((p for p in folder.parent.iterdir() if p.is_dir() and p != folder),
                        key=lambda p: (not p.name.startswith(prefix + "-"), p.name))  # fmt: skip
    for candidate in candidates:
        try:
            sibling = model_entry(candidate)
        except (ModelLoadError, OSError, ValueError):
            continue
        if (sibling.dataset, sibling.inputs) != (entry.dataset, entry.inputs):
            continue
        if is_user_model(sibling) and not is_trusted(sibling.folder):
            continue  # another folder's own code: compared only once this session allows it to run
        found.setdefault(sibling.architecture, sibling)
    return found


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _lens(folder: str, checksum: str, code_sha256: str | None = None) -> Lens:
    # A refusal raises, and st.cache_resource caches no exception. The cache is shared by
    # sessions: ``lens`` checks the calling session's own leave before it reaches here.
    trust = CodeTrust(folder, code_sha256) if code_sha256 else None
    lens = Lens(deq_core.load_model(folder, device="auto", trust_code=trust or False), folder, checksum)
    lens.trust_code = trust or False
    return lens


@st.cache_resource(show_spinner=False, max_entries=8)
def _background_lens(folder: str, checksum: str, code_sha256: str | None = None) -> Lens:
    return _lens(folder, checksum, code_sha256).background()


def _trust(entry: ModelEntry) -> str | None:
    """The code checksum this session allowed for a user's model (raises when none); None for our own models."""
    if not is_user_model(entry):
        return None
    trust = trust_of(entry.folder)
    if trust is None:
        raise ModelLoadError(f"{entry.folder}/adapter.json: this model is your own code; this session has not allowed "
                             "it to run (tick 'Run model code' in the sidebar)")  # fmt: skip
    return trust.code_sha256


def lens(entry: ModelEntry) -> Lens:
    """The model's Lens, shared by every session: its lock serialises foreground calls, its cache serves them all."""
    return _lens(entry.folder, entry.checksum, _trust(entry))


def background_opener(entry: ModelEntry) -> Callable[[], Lens]:
    """``background_lens`` to be called later, from a job's thread: the session's leave is read now, in the script.

    A job runs outside the session (no session state there), so what it may open is
    decided when the session submits it.
    """
    code_sha256 = _trust(entry)
    return lambda: _background_lens(entry.folder, entry.checksum, code_sha256)


def background_lens(entry: ModelEntry) -> Lens:
    """A Lens on a second copy of the model for background jobs: they never wait for, or hold, the foreground's lock."""
    return background_opener(entry)()


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


def test_data(entry: ModelEntry) -> MultimodalDataset:
    """The model's test split (capped by DEQ_LENS_MAX_CASES), shared by all sessions; the opened dataset folder's
    test split when the sidebar opened one (its cases are browsed as the shipped ones are)."""
    folder = dataset_folder()
    return lens(entry).data("test", max_cases(), dataset=None if folder is None else str(folder))


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
        with waiting_on_a_job():
            while not job.wait(0.25):
                bar.progress(job.fraction, text=f"{what}: {job.message} ({job.elapsed:.0f} s)")
        bar.empty()
    if job.failed:
        st.error(f"{what} failed: {job.error}")
        with st.expander("Details"):
            st.code(job.error_text)
        return None
    return job.value


def poll_in_background(job: Job, what: str, every_s: float = 1.0) -> None:
    """A progress bar for ``job`` that updates itself while the rest of the page stays usable.

    Unlike ``wait_for`` the script does not wait: a fragment reruns on its own every ``every_s``
    seconds, redraws the bar, and reruns the whole page once the job is done, so its result
    replaces what the page showed meanwhile.
    """

    @st.fragment(run_every=every_s)
    def poll() -> None:
        if job.done:
            st.rerun()
        st.progress(job.fraction, text=f"{what}: {job.message} ({job.elapsed:.0f} s). The page stays usable; "
                    "the result replaces what is shown when it lands.")  # fmt: skip

    poll()


def cache_dir() -> Path:
    """The app's own results (reports it wrote, evaluations): under the cache root, never the source tree."""
    return cache_root() / "app"


def _evaluation_cache() -> DiskCache:
    return DiskCache("evaluations", root=cache_dir())


def _evaluation_arrays(evaluation, p) -> dict[str, np.ndarray]:
    arrays = {
        "evaluation": np.array(json.dumps(evaluation.to_dict())),
        "ids": np.array(p.ids, dtype=str),
        "labels": p.labels,
        "predicted": p.predicted,
        "probabilities": p.probabilities,
    }
    if p.iterations is not None:
        arrays.update(iterations=p.iterations, relative_residual=p.relative_residual, status=np.array(p.status, dtype=str))
    return arrays


def _evaluation_from(arrays: dict[str, np.ndarray] | None):
    if arrays is None:
        return None
    from deq_core.evaluate import Evaluation, Predictions

    try:
        has_solve = "iterations" in arrays
        evaluation = Evaluation(**json.loads(str(arrays["evaluation"])))
        predictions = Predictions(
            ids=tuple(str(i) for i in arrays["ids"]),
            labels=arrays["labels"],
            predicted=arrays["predicted"],
            probabilities=arrays["probabilities"],
            iterations=arrays["iterations"] if has_solve else None,
            relative_residual=arrays["relative_residual"] if has_solve else None,
            status=tuple(str(s) for s in arrays["status"]) if has_solve else None,
        )
    except (ValueError, KeyError, TypeError):
        return None  # written by another version: evaluate again
    return evaluation, predictions


def evaluation_job(entry: ModelEntry) -> Job:
    """``deq_core.evaluate`` of one model on the test split: (Evaluation, Predictions).

    Kept on disk by model checksum and data fingerprint, so a restarted app shows it at once.
    """
    data = test_data(entry)
    key = ("evaluate", entry.folder, entry.checksum, len(data))
    open_lens = background_opener(entry)

    def work(report):
        store, name = _evaluation_cache(), cache_key("evaluation", entry.checksum, data_fingerprint(data))
        cached = _evaluation_from(store.get_arrays(name))
        if cached is not None:
            return cached
        report(0.05, f"evaluating {entry.name} on {len(data)} cases")
        evaluation, predictions = open_lens().evaluate(data)
        store.put_arrays(name, _evaluation_arrays(evaluation, predictions))
        return evaluation, predictions

    return jobs().submit(key, f"evaluation of {entry.name}", work)


def robustness_detail() -> str:
    """"quick" or "full": from DEQ_LENS_ROBUSTNESS, else full when its results are cached on disk."""
    chosen = os.environ.get("DEQ_LENS_ROBUSTNESS", "").strip().lower()
    return chosen if chosen in ("quick", "full") else "auto"


def robustness_cache_dir() -> Path:
    """$DEQ_LENS_ROBUSTNESS_CACHE, else the robustness CLI's own cache folder (so the app reads what it cached)."""
    from deq_core.explain import robustness

    return Path(os.environ.get("DEQ_LENS_ROBUSTNESS_CACHE") or robustness.default_cache_dir())


def _full_sweep_cached(entries: dict[str, ModelEntry], data: MultimodalDataset) -> bool:
    """Whether the CLI's full sweep of these models on this data is in the cache (then it loads in a moment)."""
    from deq_core.explain import robustness

    return robustness.is_cached({name: e.checksum for name, e in entries.items()}, data, cache_dir=robustness_cache_dir())


def robustness_job(entry: ModelEntry, detail: str = "auto") -> tuple[Job, str]:
    """The robustness sweep of the model and its baselines; returns (job, detail used)."""
    from deq_core.explain import robustness

    siblings = baselines_of(entry)
    named = {e.name: e for e in siblings.values()}
    data = test_data(entry)
    if detail == "auto":
        detail = robustness_detail()
    if detail == "auto":
        detail = "full" if _full_sweep_cached(named, data) else "quick"
    severities = robustness.DEFAULT_SEVERITIES if detail == "full" else robustness.QUICK_SEVERITIES
    key = ("robustness", tuple((e.name, e.checksum) for e in named.values()), len(data), detail)
    openers = {name: background_opener(e) for name, e in named.items()}

    def work(report):
        report(0.02, f"loading {len(named)} models")
        lenses = {name: open_lens() for name, open_lens in openers.items()}
        runs = len(lenses) * (1 + sum(len(v) for v in _corruption_kinds(data).values()) * (len(severities) - 1))
        report(0.05, f"{runs} runs over {len(data)} cases (models whose results are cached on disk are read)")
        # One model at a time first, so the bar can say how far it is: each model's rows land in the
        # sweep's disk cache, and the joint call at the end reads them back (and compares the models).
        # When every model is on disk the joint call alone reads them: a pass per model would only
        # summarise each (0.3 s apiece) while the first page draws.
        checksums = [e.checksum for e in named.values()]
        if not robustness.is_cached(checksums, data, severities, cache_dir=robustness_cache_dir()):
            for k, (name, one) in enumerate(lenses.items()):
                report(0.05 + 0.9 * k / len(lenses), f"model {k + 1} of {len(lenses)} ({name}); {runs} runs in all")
                one.robustness(None, data, severities, cache_dir=robustness_cache_dir())
        report(0.97, "comparing the models")
        main, *others = lenses
        return lenses[main].robustness({n: lenses[n] for n in others}, data, severities, cache_dir=robustness_cache_dir())

    return jobs().submit(key, "robustness sweep", work), detail


def _corruption_kinds(data: MultimodalDataset) -> dict[str, tuple[str, ...]]:
    from deq_core import available_corruptions

    return {m.name: available_corruptions(m.kind) for m in data.modalities}


def assessment_job(entry: ModelEntry, settings: SolverSettings) -> Job:
    """The whole test split under ``settings``, with flips against the tight reference."""
    data = test_data(entry)
    key = ("assess", entry.folder, entry.checksum, settings, len(data))
    open_lens = background_opener(entry)

    def work(report):
        report(0.1, "solving every case tightly for the reference decisions (once per model and solver)")
        return open_lens().assess(settings, data, latency_cases=10)

    return jobs().submit(key, "test-set assessment", work)


def sweep_job(entry: ModelEntry, base: SolverSettings) -> Job:
    """The tolerance sweep of the test split around ``base`` (only the tolerance varies)."""
    data = test_data(entry)
    key = ("sweep", entry.folder, entry.checksum, dataclasses.replace(base, tol=1.0), len(data))
    open_lens = background_opener(entry)

    def work(report):
        return open_lens().sweep(base, data, latency_cases=5, progress=report)

    return jobs().submit(key, "tolerance sweep", work)


def equal_compute_job(deq: ModelEntry, weight_tied: ModelEntry, base: SolverSettings) -> Job:
    data = test_data(deq)
    key = ("equal_compute", deq.checksum, weight_tied.checksum, dataclasses.replace(base, max_iter=1), len(data))
    open_deq, open_tied = background_opener(deq), background_opener(weight_tied)

    def work(report):
        return open_deq().compare_equal_compute(open_tied(), data, base=base, progress=report)

    return jobs().submit(key, "equal-compute comparison", work)


def stability_job(entry: ModelEntry) -> Job:
    """Local stability and uniqueness (8 starts) of every test case's equilibrium: a ``StabilitySurvey``."""
    from deq_core.explain import stability

    data = test_data(entry)
    key = ("stability", entry.folder, entry.checksum, len(data))
    open_lens = background_opener(entry)

    def work(report):
        lens = open_lens()
        with lens.lock:
            return stability.survey(lens.model, data, starts=8, progress=report)

    return jobs().submit(key, "stability survey", work)


# The case whose other classes were asked for last, per model: a job still explaining an
# earlier case stops at its next class (the person has moved on; the CPU is the new case's).
_LATEST_CASE: dict[str, tuple] = {}

# Script runs in progress (every session's), so speculative work can step aside while a person waits.
_FOREGROUND = threading.Condition()
_FOREGROUND_RUNS = [0]
_IN_RUN = threading.local()  # .active: this thread's script run is counted in _FOREGROUND_RUNS now
QUIET_WAIT_S = 5.0  # the longest a speculative job waits for the pages before it goes on anyway


@contextmanager
def foreground_run() -> Iterator[None]:
    """Marks a page's script run (app/main.py wraps ``page.run()`` in it) for ``wait_for_quiet_foreground``."""
    with _FOREGROUND:
        _FOREGROUND_RUNS[0] += 1
    _IN_RUN.active = True
    try:
        yield
    finally:
        _IN_RUN.active = False
        with _FOREGROUND:
            _FOREGROUND_RUNS[0] -= 1
            _FOREGROUND.notify_all()


@contextmanager
def waiting_on_a_job() -> Iterator[None]:
    """Inside a ``foreground_run``: this run now waits for a job, so speculative work need not step aside for it.

    Without it, a page waiting for a job queued behind the speculative one would hold that
    one back for its every step (the two would wait on each other until the timeouts).
    """
    paused = getattr(_IN_RUN, "active", False)  # this thread's own run only, never another session's
    if paused:
        with _FOREGROUND:
            _FOREGROUND_RUNS[0] -= 1
            _FOREGROUND.notify_all()
        _IN_RUN.active = False
    try:
        yield
    finally:
        if paused:
            _IN_RUN.active = True
            with _FOREGROUND:
                _FOREGROUND_RUNS[0] += 1


def wait_for_quiet_foreground(timeout: float = QUIET_WAIT_S) -> bool:
    """Wait until no page is running (at most ``timeout`` s, so many busy sessions cannot starve the job).

    A speculative job calls it between its steps: on two cores, a page rerun that shares
    the CPU with it took two to three times as long. Returns whether the pages were quiet.
    """
    with _FOREGROUND:
        return _FOREGROUND.wait_for(lambda: _FOREGROUND_RUNS[0] == 0, timeout)


def other_classes_job(entry: ModelEntry, case: Case, n_steps: int, baseline: str | None) -> Job:
    """The other classes' explanations of ``case``, one class at a time on the background Lens.

    Queued once the page has shown the class it explains, so picking another class in
    "Explain the class" is a cache look-up instead of a new Integrated Gradients run with
    every solve behind it: each class lands in the Lens cache the foreground reads, the
    runner-up first. A class the foreground asks for while it is being computed here is
    waited for, not computed twice (``MemoryCache`` computes a key once).
    """
    identity = (case.key, case.fingerprint, int(n_steps), baseline)
    _LATEST_CASE[entry.checksum] = identity

    def work(report):
        # Speculative work: one torch thread (torch's thread count is per calling thread), so a
        # person's next click, solved in the foreground with every thread, keeps a core to itself.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return explain_others(report)
        finally:
            torch.set_num_threads(threads)

    def explain_others(report):
        lens = background_lens(entry)
        order = np.argsort(-lens.decide(case).probabilities, kind="stable").tolist()
        # One class at a time, the runner-up first (the class most likely asked for next): a
        # class's Integrated Gradients is nearly all of its cost (what explain_classes shares,
        # the solve, coalitions and stability check, is a few per cent of it), and between two
        # classes the job notices that the person has opened another case and leaves the CPU to it.
        for done, target in enumerate(order):
            wait_for_quiet_foreground()  # a page being drawn for someone goes first
            if _LATEST_CASE.get(entry.checksum) != identity:
                return done  # another case was opened since: its classes matter now
            report(done / len(order), f"explaining {case.key} for {lens.class_names[target]}")
            lens.explain_classes(case, [target], n_steps, baseline)  # the decided class: a look-up
        return len(order)

    return jobs().submit(("explain-classes", entry.checksum, *identity), "explanations of the other classes", work)


def warm_up(entry: ModelEntry) -> None:
    """Queue the default views' dataset-level work at start, so it is under way before anyone asks."""
    for sibling in baselines_of(entry).values():
        evaluation_job(sibling)
    robustness_job(entry)


# What the first page imports besides this module (pandas, Plotly and the page helpers).
FIRST_PAGE_MODULES = ("app.widgets", "app.frames", "app.plots", "app.cost_panel", "app.card_panel")


def warm_start(root: Path | None = None) -> ModelEntry | None:
    """Before the first visitor: what the first page would otherwise wait for, done once per process.

    ``app/serve.py`` calls it in a thread as the server starts, while a browser is still
    loading the page: the imports (torch is imported with this module), the model
    listing and its checksums, the default model's Lens with its test split, its
    baselines', and the queued evaluations, robustness sweep and stability share. Every
    result lands in the caches the pages read, so the first run finds them; a page that
    gets there first simply computes the same key (the caches compute a key once).
    Nothing here runs a user's model code (adapter.json): that needs a session's leave.
    Returns the entry warmed, or None (no model, or the default is a user's model).
    """
    import importlib

    if os.environ.get("DEQ_LENS_THREADS"):
        torch.set_num_threads(int(os.environ["DEQ_LENS_THREADS"]))
    for module in FIRST_PAGE_MODULES:
        importlib.import_module(module)
    root = root or environment_models_root()
    entry = default_model(list_models(root))
    broken_models(root)  # the sidebar lists both on every run: each folder's checks are cached now
    if entry is None or is_user_model(entry):
        return None
    for sibling in baselines_of(entry).values():  # no session here: a user's model is never among them
        test_data(sibling)
        evaluation_job(sibling)
    robustness_job(entry)
    if entry.architecture == "deq":
        importlib.import_module("app.card_panel").stability_job(entry)
    return entry


# --------------------------------------------------------------------------- cases


def test_case(entry: ModelEntry, case_id: str) -> Case:
    return lens(entry).case(case_id, data=test_data(entry))


@st.cache_resource(show_spinner="Reading the batch run's cases…", max_entries=2)
def _batch_data(cases_folder: str, model_folder: str, checksum: str, code_sha256: str | None) -> MultimodalDataset:
    from deq_core.data import load_folder

    return load_folder(cases_folder, split="all", modalities=_lens(model_folder, checksum, code_sha256).modalities)


def batch_case(entry: ModelEntry, cases_folder: str, case_id: str) -> Case:
    """A case of a batch run's dataset folder, read with the model's modalities (the folder is read once)."""
    return lens(entry).case(case_id, data=_batch_data(cases_folder, entry.folder, entry.checksum, _trust(entry)))


def ideal_reference(entry: ModelEntry, case: Case, target: int):
    """The dataset's reference for this case (the inspection ideal classifier), else None (other data, uploads)."""
    return lens(entry).ideal_reference(case, target)


def current_case(entry: ModelEntry) -> Case:
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


def lab_specs(settings: Sequence[tuple[str, bool, str, float]]) -> tuple:
    """Corruption specs of the lab's switches: (modality, on, kind or "none", severity) each."""
    from deq_core import CorruptionSpec

    specs = []
    for modality, on, kind, severity in settings:
        if not on:
            specs.append(CorruptionSpec(modality, "drop", 1.0))  # switched off = missing = the training mean
        elif kind != "none" and severity > 0:
            specs.append(CorruptionSpec(modality, kind, float(severity)))
    return tuple(specs)
