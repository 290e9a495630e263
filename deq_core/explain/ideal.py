"""The inspection generator's ideal classifier as a yardstick for explaining one case.

The generator records what each modality of a case truly shows, and
``ideal_posteriors`` turns that into the best possible decision for every subset of
the modalities. For a generated case (one of the shipped test split, say) this gives
what a model that read the evidence perfectly would decide, and its modality Shapley
values, computed the same way as a model's: the auditor's reference for "did the
model weigh the inputs as the evidence deserves?".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deq_core.data.inspection import (
    CLASS_NAMES,
    IDEAL_MODALITIES,
    SPLIT_STREAMS,
    InspectionCase,
    ideal_posteriors,
    inspection_case,
    note_reading,
)
from deq_core.data.readers import pixels_to_tensor
from deq_core.explain.shapley import ModalityShapley

_CASE_ID = re.compile(r"insp-(?P<split>[a-z]+)-(?P<index>\d{4,})")


@dataclass(frozen=True)
class IdealReference:
    """What the ideal classifier makes of one generated case.

    The inspection dataset's reference (``deq_core.data.references``): reports and
    their verification reach it by the model's dataset name, not by importing this module.

    Attributes:
        case_id: ``"insp-test-0007"``.
        label: the true class.
        shows: modality -> what it truly shows, in words (``"dark line"``, ``"names crack"`` ...).
        probabilities: ``(classes,)`` the ideal decision from all three modalities.
        shapley: the ideal's modality Shapley values of the explained class.
    """

    case_id: str
    label: str
    shows: dict[str, str]
    probabilities: np.ndarray
    shapley: ModalityShapley

    def sentence(self, model_values: Mapping[str, float]) -> str:
        """``ranking_sentence``: what a report says of this reference (``deq_core.data.references.Reference``)."""
        return ranking_sentence(model_values, self)


def generated_case(case_id: str) -> InspectionCase | None:
    """The generated case behind an id such as ``"insp-test-0007"`` (seed 0); None for any other id."""
    match = _CASE_ID.fullmatch(case_id)
    if match is None or match["split"] not in SPLIT_STREAMS:
        return None
    return inspection_case(match["split"], int(match["index"]))


def describe_note(case: InspectionCase) -> str:
    """The note's ground truth in words: what it names, and whether it is wrong."""
    evidence, label = case.evidence, CLASS_NAMES[case.label]
    reading = note_reading(evidence, label)
    if evidence.note == "wrong":
        said = "says all is fine" if reading == "vague" else f"names {reading}"
        return f"wrong: {said}"
    if evidence.note == "group":
        return f"only '{reading}' words (a group of faults)"
    return "vague" if reading == "vague" else f"names {reading}"


def ideal_shapley(case: InspectionCase, target: int | None = None) -> ModalityShapley:
    """The ideal classifier's modality Shapley values of ``target`` (default: its own decision)."""
    posteriors = ideal_posteriors(case)
    target = int(posteriors[-1].argmax()) if target is None else int(target)
    values = torch.from_numpy(posteriors[:, target])
    return ModalityShapley.from_coalition_values(values, IDEAL_MODALITIES, CLASS_NAMES, target)


def ideal_reference(
    case_id: str,
    inputs: Sequence[torch.Tensor],
    texts: Mapping[str, str],
    target: int | None = None,
    modality_names: Sequence[str] = IDEAL_MODALITIES,
) -> IdealReference | None:
    """The reference for a case the model sees as ``inputs`` (photo, sensors, note; batch 1) and ``texts``.

    None unless the model's ``modality_names`` are the generator's, ``case_id`` names a
    generated case, AND the photo, the sensor log and the note's text are that case's,
    unchanged: an edited or corrupted case no longer shows what the generator recorded.
    """
    if tuple(modality_names) != IDEAL_MODALITIES or len(inputs) != len(IDEAL_MODALITIES):
        return None
    case = generated_case(case_id)
    if case is None or texts.get("note") != case.note:
        return None
    photo = pixels_to_tensor(case.photo[None])[:, None]
    sensors = torch.from_numpy(case.sensors)[None]
    same = (
        tuple(inputs[0].shape) == tuple(photo.shape)
        and tuple(inputs[1].shape) == tuple(sensors.shape)
        and torch.equal(inputs[0].cpu().float(), photo)
        and torch.equal(inputs[1].cpu().float(), sensors)
    )
    if not same:
        return None
    evidence = case.evidence
    return IdealReference(
        case_id=case_id,
        label=CLASS_NAMES[case.label],
        shows={"photo": evidence.photo, "sensors": evidence.sensors, "note": describe_note(case)},
        probabilities=ideal_posteriors(case)[-1],
        shapley=ideal_shapley(case, target),
    )


def ranking_sentence(model_values: Mapping[str, float], reference: IdealReference) -> str:
    """One sentence: the ideal's decision and who ranks which input first for the explained class.

    ``model_values``: the model's Shapley value per input (any order), of ``reference.shapley``'s class.
    """
    ideal = reference.shapley
    names = list(ideal.modality_names)
    if set(model_values) != set(names):
        raise ValueError(f"the model's inputs {sorted(model_values)} are not the ideal's {sorted(names)}")
    ideal_values = np.asarray(ideal.values, dtype=float)
    target = ideal.class_names[ideal.target]
    first_model = max(model_values, key=model_values.get)
    first_ideal = names[int(ideal_values.argmax())]
    if np.isclose(ideal_values, ideal_values.max(), rtol=0, atol=1e-9).sum() > 1:
        ranking = f"the ideal ranks several inputs first for P({target}); the model ranks the {first_model} first."
    elif first_model == first_ideal:
        ranking = f"both rank the {first_model} first for P({target})."
    else:
        ranking = f"for P({target}) the model ranks the {first_model} first, the ideal the {first_ideal}."
    decided = ideal.class_names[int(np.argmax(reference.probabilities))]
    return (
        f"The ideal classifier decides {decided} ({float(np.max(reference.probabilities)):.0%}); "
        f"the truth is {reference.label}; {ranking}"
    )
