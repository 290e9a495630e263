"""The Lens: what a person asks of one model, in one object.

    lens = Lens.open("assets/models/inspection-deq")
    case = lens.case("insp-0042")                  # a test case (or Case.from_upload / lens.variant)
    decision = lens.decide(case)                   # probabilities and the recorded trajectory
    explanation = lens.explain(case)               # IG, modality Shapley values, reliability
    damaged = lens.variant(case, [CorruptionSpec("photo", "gaussian_noise", 0.5)])
    lens.decide(damaged).prediction
    lens.tune(case, settings)                      # one case under other solver settings
    lens.stability(case)                           # is its fixed point stable, and the only one found?
    lens.assess(settings) / lens.sweep(settings)   # the whole test split
    issue_report(lens.report(case), AuditLog(), "reports/insp-0042")   # a logged, signed, verifiable report
    Lens.verify("reports/insp-0042/report.json")

A Lens owns the loaded model and a re-entrant lock (attribution hooks into the model
while it runs, so calls on one Lens are serialised), and one in-memory cache keyed by
(model checksum, what was asked, case key and input fingerprint, settings). One tight
reference solve per model and case set serves both the assessment and the sweep.

The app keeps one Lens per model (``st.cache_resource``); the CLIs, notebooks and batch
workers use the same object. ``lens.background()`` is a second Lens on its own copy of
the model that shares the cache, for long jobs that must not hold the foreground's lock.

What the Lens needs of a model is small, and written down as a protocol
(``deq_core.engine.protocol``: ``LensModel`` and ``EquilibriumLensModel``): its config
(modalities, classes, solver), ``encode``, ``run``, ``input_means()``, for equilibrium
models ``bind`` (f and z0) and ``parts`` (the gates), and its checksum. A model that does
not provide a member is refused with the members it lacks, not failed on later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deq_core.cache import MemoryCache
from deq_core.case import Case
from deq_core.engine.adapter import TrustCode
from deq_core.engine.checkpoint import load_model, model_checksum, state_checksum
from deq_core.engine.config import SolverSettings
from deq_core.engine.protocol import EquilibriumLensModel, LensModel, missing_members
from deq_core.engine.trajectory import Trajectory, trace

if TYPE_CHECKING:  # pragma: no cover
    from deq_core.audit import DecisionReport, ReportSettings, ReportVerification
    from deq_core.data import MultimodalDataset
    from deq_core.explain.corrupt import CorruptionSet, CorruptionSpec
    from deq_core.explain.explanation import Explanation
    from deq_core.explain.robustness import RobustnessReport
    from deq_core.explain.stability import Stability
    from deq_core.explain.tuning import CaseTuning, ComputeComparison, SettingsReport, ToleranceSweep

CACHE_ENTRIES = 1024  # per-case results are small (a trajectory is T x d floats); about 1 MB each at most
# Dataset splits read by any Lens of this process: a model and its baselines read the same
# split with the same modalities, and generating the inspection test split costs about 0.3 s
# each time (four models on the Overview: over a second of its first paint). Read-only.
_SPLITS = MemoryCache(16)

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Decision:
    """One case decided: the class probabilities and, for equilibrium models, the recorded solve.

    Attributes:
        probabilities: ``(C,)`` float32 softmax of the logits.
        trajectory: the solve iteration by iteration; None for feed-forward models.
    """

    probabilities: np.ndarray
    trajectory: Trajectory | None

    @property
    def prediction(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def confidence(self) -> float:
        return float(self.probabilities.max())


class Lens:
    """One model and everything asked of it (thread-safe; results cached).

    Args:
        model: a loaded fusion model.
        folder: the model folder it was loaded from (reports hash its files); None for a
            model built in memory (reports then cannot be written).
        checksum: the model's identity in cache keys; default the folder's checksum.
        cache: shared with other Lenses (``background()``); default a new one.
    """

    def __init__(self, model: LensModel, folder: str | Path | None = None, checksum: str | None = None,
                 cache: MemoryCache | None = None, lock: threading.RLock | None = None):  # fmt: skip
        missing = missing_members(model)
        if missing:
            raise TypeError(f"a Lens needs a model with {', '.join(missing)} (deq_core.engine.protocol.LensModel); "
                            f"{type(model).__name__} lacks them")  # fmt: skip
        self.model = model
        self.folder = None if folder is None else Path(folder)
        if checksum is None:
            checksum = model_checksum(self.folder) if self.folder is not None else state_checksum(model)
        self.checksum = checksum
        self.cache = cache if cache is not None else MemoryCache(CACHE_ENTRIES)
        self.lock = lock or threading.RLock()

    @classmethod
    def open(cls, folder: str | Path, device: str | torch.device = "auto", trust_code: TrustCode = False) -> "Lens":
        """Load the model folder (checksums verified, no pickle) on ``device``.

        A user's own model (``adapter.json``, ``deq_core.engine.adapter``) runs its code to
        build, so it opens only with ``trust_code`` (``True`` for this folder, or a
        ``CodeTrust``); otherwise ``ModelLoadError`` says so. ``True`` is kept as leave for
        this folder's code as it is now (``CodeTrust.grant``): ``background()`` reloads it
        only while that code is unchanged.
        """
        from deq_core.engine.adapter import CodeTrust, is_adapter_folder

        if trust_code is True and is_adapter_folder(folder):
            trust_code = CodeTrust.grant(folder)
        lens = cls(load_model(folder, device=device, trust_code=trust_code), folder)
        lens.trust_code = trust_code
        return lens

    trust_code: TrustCode = False  # leave for this Lens's model folder to run its own code (background(), verify)

    def background(self, device: str | torch.device = "auto") -> "Lens":
        """A Lens on its own copy of the model that shares this one's cache (for long jobs)."""
        if self.folder is None:
            raise ValueError("background() needs a Lens opened from a model folder")
        lens = Lens(load_model(self.folder, device=device, trust_code=self.trust_code), self.folder, self.checksum,
                    cache=self.cache)  # fmt: skip
        lens.trust_code = self.trust_code
        return lens

    # ----------------------------------------------------------------------- what the model is

    @property
    def config(self):
        return self.model.config

    @property
    def name(self) -> str:
        return self.folder.name if self.folder is not None else self.config.architecture

    @property
    def modalities(self):
        return self.config.modalities

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def equilibrium(self) -> bool:
        """Whether the model decides from a fixed point (trajectories, gates, tuning apply)."""
        return not missing_members(self.model, EquilibriumLensModel)

    def _key(self, what: str, *parts: Any) -> tuple:
        return (self.checksum, what, *parts)

    def _cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        return self.cache.get_or_compute(key, compute)

    # ----------------------------------------------------------------------- cases

    def data(self, split: str = "test", max_cases: int | None = None, dataset: str | None = None) -> "MultimodalDataset":
        """The model's own dataset split (or ``dataset``'s: a name or a dataset folder), at most ``max_cases`` cases
        spread evenly over it."""
        from deq_core.data import load_dataset

        dataset = self.config.dataset if dataset is None else dataset

        def load():
            data = load_dataset(dataset, split, modalities=self.config.modalities)
            if max_cases is None or max_cases >= len(data):
                return data
            return data.subset(np.unique(np.linspace(0, len(data) - 1, max_cases).round().astype(int)))

        return _SPLITS.get_or_compute(("data", str(dataset), split, max_cases, tuple(self.modalities)), load)

    def case(self, case_id: str, split: str = "test", data: "MultimodalDataset | None" = None) -> Case:
        """A case of ``data`` (default the model's own ``split``) by id."""
        return Case.from_dataset(data if data is not None else self.data(split), case_id)

    def variant(self, case: Case, specs: "Sequence[CorruptionSpec] | CorruptionSet") -> Case:
        """``case`` with the corruptions applied, as the model sees it (randomness keyed by the case key).

        Uses the model's training statistics (``drop`` is the training mean, noise is
        scaled to each input's spread), so the same spec gives the same variant everywhere:
        the lab, the robustness sweep, a report and its verification.
        """
        from deq_core.explain.corrupt import CorruptionSet, InputReference, apply

        specs = tuple(specs.specs if isinstance(specs, CorruptionSet) else specs)
        if not specs:
            return case
        with self.lock:
            corrupted = apply(case.inputs, self.modalities, specs, InputReference.of_model(self.model), case_keys=[case.key])
        return case.variant(tuple(x.detach().cpu() for x in corrupted), specs)

    # ----------------------------------------------------------------------- one case

    def decide(self, case: Case, solver: SolverSettings | None = None) -> Decision:
        """The decision and (for equilibrium models) the trajectory of its solve, recorded."""

        def compute() -> Decision:
            with self.lock:
                inputs = [x.to(self.model.device) for x in case.inputs]
                if self.equilibrium:
                    output, (trajectory,) = trace(self.model, inputs, solver)
                else:
                    with torch.no_grad():
                        output, trajectory = self.model.run(inputs, solver=solver), None
            probabilities = torch.softmax(output.logits, dim=1)[0].detach().cpu().numpy()
            return Decision(probabilities=probabilities, trajectory=trajectory)

        return self._cached(self._key("decide", case.key, case.fingerprint, solver), compute)

    def explain(self, case: Case, target: int | None = None, n_steps: int | None = None, baseline: str | None = None,
                solver: SolverSettings | None = None, cross_check: bool = True) -> "Explanation":  # fmt: skip
        """``explain_case``: IG over every modality, exact modality Shapley values, the gate signal, reliability."""
        from deq_core.explain.attribution import DEFAULT_STEPS
        from deq_core.explain.explanation import explain_case

        n_steps = DEFAULT_STEPS if n_steps is None else int(n_steps)

        def compute():
            anchors = self.stability_anchors(solver)
            with self.lock:
                return explain_case(self.model, case.inputs, texts=case.texts, target=target, n_steps=n_steps,
                                    baseline=baseline, solver=solver, cross_check=cross_check, anchors=anchors)  # fmt: skip

        key = self._key("explain", case.key, case.fingerprint, target, n_steps, baseline, solver, cross_check)
        return self._cached(key, compute)

    def explain_classes(self, case: Case, targets: Sequence[int] | None = None, n_steps: int | None = None,
                        baseline: str | None = None, solver: SolverSettings | None = None,
                        cross_check: bool = True) -> "dict[int, Explanation]":  # fmt: skip
        """``explain`` of ``case`` for each class in ``targets`` (default every class), sharing the work.

        ``explain_targets`` solves the case, its stability and its Shapley coalitions once for
        all of them; each result lands in the cache under ``explain``'s own key, so asking
        ``explain`` for another class afterwards is a look-up. Classes already cached are not
        computed again.
        """
        from deq_core.explain.attribution import DEFAULT_STEPS
        from deq_core.explain.explanation import explain_targets

        n_steps = DEFAULT_STEPS if n_steps is None else int(n_steps)
        targets = range(len(self.class_names)) if targets is None else targets
        key = lambda t: self._key("explain", case.key, case.fingerprint, t, n_steps, baseline, solver, cross_check)  # noqa: E731
        wanted = [int(t) for t in dict.fromkeys(targets)]
        missing = [t for t in wanted if key(t) not in self.cache]
        if missing:
            anchors = self.stability_anchors(solver)
            with self.lock:
                found = explain_targets(self.model, case.inputs, missing, texts=case.texts, n_steps=n_steps,
                                        baseline=baseline, solver=solver, cross_check=cross_check, anchors=anchors)  # fmt: skip
            for target, explanation in zip(missing, found):
                self._cached(key(target), lambda e=explanation: e)
        return {t: self.explain(case, t, n_steps, baseline, solver, cross_check) for t in wanted}  # look-ups now

    def tune(self, case: Case, settings: SolverSettings) -> "CaseTuning":
        """One case under ``settings`` and under the tight reference (``tuning.reference_for``)."""
        from deq_core.explain import tuning

        def compute():
            with self.lock:
                return tuning.tune_case(self.model, case.inputs, settings, tuning.reference_for(settings))

        return self._cached(self._key("tune", case.key, case.fingerprint, settings), compute)

    def stability(self, case: Case, starts: int = 8, solver: SolverSettings | None = None) -> "Stability":
        """How far the decision's fixed point can be trusted: its local stability and uniqueness from ``starts`` starts.

        The other starts are zero, noise, and the typical equilibria of the other classes
        of the model's test split (computed once per model and solver, cached).
        """
        from deq_core.explain import stability

        if self.config.architecture != "deq" or not self.equilibrium:
            raise ValueError(f"a {self.config.architecture!r} model decides from no fixed point: no stability to assess")

        def compute():
            found = self.stability_anchors(solver)
            with self.lock:
                return stability.case_stability(self.model, case.inputs, starts, found, solver)

        return self._cached(self._key("stability", case.key, case.fingerprint, starts, solver), compute)

    def stability_anchors(self, solver: SolverSettings | None = None) -> tuple:
        """The typical equilibrium of each class of the model's test split (``stability.class_anchors``), cached:
        the uniqueness check's starting points besides zero and noise. Empty for a model that decides from
        no fixed point, or whose dataset cannot be read here (then the starts are zero and noise alone)."""
        from deq_core.explain import stability

        if self.config.architecture != "deq" or not self.equilibrium:
            return ()

        def anchors():
            try:
                data = self.data()
            except (OSError, ValueError, KeyError):
                return ()
            with self.lock:
                return stability.class_anchors(self.model, data, solver=solver)

        return self._cached(self._key("stability-anchors", solver), anchors)

    def ideal_reference(self, case: Case, target: int):
        """The dataset's own reference for this case (the inspection ideal classifier), or None."""
        from deq_core.data.references import dataset_reference

        return dataset_reference(self.config.dataset, case.key, case.inputs, case.texts, target, self.config.modality_names)

    # ----------------------------------------------------------------------- a whole split

    def evaluate(self, data: "MultimodalDataset | None" = None, solver: SolverSettings | None = None):
        """``deq_core.evaluate.evaluate`` of the split: (Evaluation, Predictions)."""
        from deq_core.cache import data_fingerprint
        from deq_core.evaluate import evaluate

        data = data if data is not None else self.data()

        def compute():
            with self.lock:
                return evaluate(self.model, data, solver=solver, name=self.name)

        return self._cached(self._key("evaluate", data_fingerprint(data), solver), compute)

    def reference_decisions(self, settings: SolverSettings, data: "MultimodalDataset | None" = None,
                            tolerances: Sequence[float] | None = None) -> np.ndarray:  # fmt: skip
        """``(n,)`` decisions of the tight reference of ``settings`` (one per model, case set and solver)."""
        from deq_core.cache import data_fingerprint
        from deq_core.explain import tuning

        data = data if data is not None else self.data()
        reference = tuning.reference_for(settings, *(() if tolerances is None else (tolerances,)))

        def compute():
            with self.lock:
                return tuning.reference_decisions(self.model, data, reference)

        return self._cached(self._key("reference", data_fingerprint(data), reference), compute)

    def assess(self, settings: SolverSettings, data: "MultimodalDataset | None" = None, latency_cases: int = 10) -> "SettingsReport":
        """The split solved under ``settings``: accuracy, flips against the reference, iterations, latency."""
        from deq_core.explain import tuning

        data = data if data is not None else self.data()
        decisions = self.reference_decisions(settings, data)
        with self.lock:
            return tuning.assess_settings(self.model, data, settings, decisions, latency_cases=latency_cases)

    def sweep(self, base: SolverSettings, data: "MultimodalDataset | None" = None, latency_cases: int = 5,
              progress: Progress | None = None, tolerances: Sequence[float] | None = None) -> "ToleranceSweep":  # fmt: skip
        """The split at each tolerance around ``base``, against the same reference as ``assess``."""
        from deq_core.explain import tuning

        data = data if data is not None else self.data()
        tolerances = tuning.DEFAULT_TOLERANCES if tolerances is None else tuple(tolerances)
        if progress:
            progress(0.0, "solving every case tightly for the reference decisions")
        decisions = self.reference_decisions(base, data, tolerances)
        with self.lock:
            return tuning.tolerance_sweep(self.model, data, base, tolerances, reference=tuning.reference_for(base, tolerances),
                                          reference_predicted=decisions, latency_cases=latency_cases,
                                          progress=progress)  # fmt: skip

    def compare_equal_compute(self, weight_tied: "Lens", data: "MultimodalDataset | None" = None,
                              base: SolverSettings | None = None, progress: Progress | None = None) -> "ComputeComparison":  # fmt: skip
        """This DEQ against a weight-tied model at equal numbers of f evaluations."""
        from deq_core.explain import tuning

        data = data if data is not None else self.data()
        with self.lock, weight_tied.lock:
            return tuning.equal_compute(self.model, weight_tied.model, data, base=base, progress=progress)

    def robustness(self, others: Mapping[str, "Lens"] | None = None, data: "MultimodalDataset | None" = None,
                   severities: Sequence[float] | None = None, cache_dir: str | Path | None = None,
                   **options: Any) -> "RobustnessReport":  # fmt: skip
        """The robustness sweep of this model and ``others`` (name -> Lens), cached on disk by checksum."""
        from deq_core.explain.robustness import DEFAULT_SEVERITIES, robustness_sweep

        lenses = {self.name: self, **dict(others or {})}
        data = data if data is not None else self.data()
        return robustness_sweep(
            {name: lens.model for name, lens in lenses.items()}, data,
            DEFAULT_SEVERITIES if severities is None else severities, cache_dir=cache_dir,
            checksums={name: lens.checksum for name, lens in lenses.items()}, **options,
        )  # fmt: skip

    # ----------------------------------------------------------------------- reports

    def report(self, case: Case, settings: "ReportSettings | None" = None, corruption: "CorruptionSet | None" = None,
               explanation: "Explanation | None" = None, source: Mapping | None = None,
               edge: str | Path | None = None) -> "DecisionReport":  # fmt: skip
        """A verifiable decision report of ``case`` (with ``corruption`` applied before the decision).

        ``source`` is recorded as is; default: the case's provenance (dataset and split, or an upload).
        ``edge``: an .onnx file exported from this model that also decided the case (``deq_core.edge``);
        its hash, K, precision and decision are recorded and ``verify`` re-runs it.
        """
        from deq_core.audit import ReportSettings, build_report

        if self.folder is None:
            raise ValueError("a decision report hashes the model's files: open the Lens from a model folder")
        if case.provenance.source == "variant":
            raise ValueError("report the original case with its corruption (Lens.report(case, corruption=...)), "
                             "so verify can replay the corruption")  # fmt: skip
        if source is None:
            p = case.provenance
            source = {"upload": True} if case.is_upload else {"dataset": p.dataset, "split": p.split}
        with self.lock:
            anchors = self.stability_anchors((settings or ReportSettings()).solver)
            return build_report(self.model, self.folder, case.inputs, case.key, texts=case.texts, corruption=corruption,
                                settings=settings, label=case.label, explanation=explanation, source=source,
                                anchors=anchors, edge=edge)  # fmt: skip

    def issue(self, case: Case, folder: str | Path | None = None, settings: "ReportSettings | None" = None,
              corruption: "CorruptionSet | None" = None, log=None, **options: Any) -> "DecisionReport":  # fmt: skip
        """A decision report of ``case``, recorded in the audit log, signed, and written into ``folder``.

        ``log``: an ``AuditLog`` or URL; None: the default one (``$DEQ_LENS_AUDIT_DB``).
        What ``verify`` accepts: a report only built (``Lens.report``) is in no log.
        """
        from deq_core.audit import AuditLog, default_url, issue

        log = log if isinstance(log, AuditLog) else AuditLog(log or default_url())
        return issue(self.report(case, settings, corruption, **options), log, folder)

    @staticmethod
    def verify(report: str | Path | Mapping, model_folder: str | Path | None = None, log=None,
               trust_code: TrustCode = False) -> "ReportVerification":  # fmt: skip
        """Re-run a report's decision from its record alone and compare (``deq_core.audit`` verify).

        ``log``: the audit log (or URL) that must hold the report; None: the default one.
        """
        import json

        from deq_core.audit import verify_report

        record = report if isinstance(report, Mapping) else json.loads(Path(report).read_text())
        return verify_report(record, model_folder, log, trust_code=trust_code)

    def __repr__(self) -> str:
        return f"Lens({self.name!r}, {self.config.architecture}, checksum {self.checksum[:12]}, on {self.model.device})"

