"""Factory inspection: the app's default demo, a seeded generator of synthetic cases.

Each case is one machined flange from a production line, with three modalities:

    photo    image (1, 64, 64)     close-up of the sealing face, grayscale, float32 k/255 in [0, 1]
    sensors  timeseries (3, 128)   vibration (g), temperature (deg C), motor current (A)
    note     text (24,)            the inspector's note, as token ids

and one of six classes: ok, scratch, crack, overheating, bearing_wear, misalignment.

The evidence is laid out so that no modality alone suffices and all three together
do (the argument and the measured accuracies are in ``sample_data/inspection/README.md``):

    class          photo                           sensors                         note (share of all notes)
    ok             clean face                      normal                          "looks fine" 85%
    scratch        straight line, bright 80%       normal                          scratch words 50%, "a mark" 25%
                   or dark 20%
    crack          branched dark line 88%,         faint 3x vibration in 30%       crack words 50%, "a mark" 25%
                   straight dark line 12%
    overheating    clean face                      temperature ramp (+ current)    heat words 50%, "runs rough" 25%
    bearing_wear   clean face                      high-frequency impacts          bearing words 50%, "runs rough" 25%
    misalignment   polished band 70%, else clean   1x vibration + current ripple   alignment words 50%, "runs rough" 25%

Every note is about another class 15% of the time (a false alarm or a miss); the
rest of a fault's notes are vague ("checked, looks fine"). The ambiguous pairs are
ambiguous by construction, not by noise: a dark scratch and a straight hairline
crack are drawn by the same code from the same distribution, so no classifier can
separate them from the photo, and a model that scores well must combine modalities.
Photos are quantised to k/255 so that an 8-bit PNG round trip is exact, and sensor
values to the 0.001 resolution of the logger.

Every case comes from its own random stream, seeded by ``(seed, split, index)``,
so one case can be regenerated alone (``inspection_case``) and a split does not
change when another split's size does. Labels cycle through the classes by index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from deq_core.engine.modality import Modality
from deq_core.engine.text import build_vocabulary, tokenize
from .base import MultimodalDataset
from .readers import pixels_to_tensor

DATASET_NAME = "inspection"
CLASS_NAMES = ("ok", "scratch", "crack", "overheating", "bearing_wear", "misalignment")
NORMAL_CLASS = "ok"
PHOTO_SIZE = 64
SENSOR_STEPS = 128
SENSOR_CHANNELS = ("vibration", "temperature", "motor_current")
NOTE_MAX_TOKENS = 24
CASES_PER_CLASS = {"train": 300, "val": 60, "test": 50}
# Each split draws from its own stream of the seed, so train, val and test never share a case.
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
# The note vocabulary always comes from this training split, whatever seed a split is
# generated with, so data from any seed can be fed to a model trained on any other.
VOCABULARY_SEED = 0


@dataclass(frozen=True)
class EvidenceRates:
    """How often each sign shows; the generator's parameters (see the module table).

    Attributes:
        dark_scratch: share of scratches that catch no light and look dark, like a hairline crack.
        hairline_crack: share of cracks drawn as a straight thin dark line instead of branched.
        visible_wear_band: share of misalignments whose photo shows the polished wear band.
        crack_breathing: share of cracks that add a faint 3x harmonic to the vibration.
        wrong_note: share of notes written about another class (a false alarm or a miss).
        specific_note: share of notes that name the fault (scratch, crack, hot, bearing, misaligned).
        group_note: share that only say "mark on the surface" or "running rough".
            The rest of a fault's notes are vague ("checked, looks fine").
    """

    dark_scratch: float = 0.2
    hairline_crack: float = 0.12
    visible_wear_band: float = 0.7
    crack_breathing: float = 0.3
    wrong_note: float = 0.15
    specific_note: float = 0.5
    group_note: float = 0.25


RATES = EvidenceRates()


@dataclass(frozen=True)
class CaseEvidence:
    """What a case's modalities actually show; ground truth for judging explanations.

    Attributes:
        photo: ``"clean"``, ``"bright line"``, ``"dark line"``, ``"branched crack"`` or ``"wear band"``.
        sensors: ``"normal"``, ``"crack breathing"``, ``"temperature ramp"``, ``"bearing impacts"``
            or ``"misalignment vibration"``.
        note: ``"specific"``, ``"group"``, ``"vague"`` or ``"wrong"``.
        note_about: the class the note was written about (differs from the label when wrong).
    """

    photo: str
    sensors: str
    note: str
    note_about: str


@dataclass(frozen=True, eq=False)
class InspectionCase:
    """One generated case, before it is stacked into a dataset.

    Attributes:
        case_id: ``"insp-test-0007"``.
        label: index into ``CLASS_NAMES``.
        photo: ``(64, 64)`` uint8 pixels; the dataset holds ``photo / 255`` as float32.
        sensors: ``(3, 128)`` float32, channels ``SENSOR_CHANNELS``, values multiples of 0.001.
        note: the inspector's note in plain English.
        evidence: what each modality shows for this case.
    """

    case_id: str
    label: int
    photo: np.ndarray = field(repr=False)
    sensors: np.ndarray = field(repr=False)
    note: str
    evidence: CaseEvidence


# ----------------------------------------------------------------------------- photo

_ROWS, _COLS = np.mgrid[0:PHOTO_SIZE, 0:PHOTO_SIZE].astype(np.float64)


def _segment_profile(start: np.ndarray, end: np.ndarray, half_width: float) -> np.ndarray:
    """Anti-aliased coverage ``(64, 64)`` in [0, 1] of a line segment between two (x, y) points."""
    direction = end - start
    length2 = max(float(direction @ direction), 1e-9)
    along = ((_COLS - start[0]) * direction[0] + (_ROWS - start[1]) * direction[1]) / length2
    along = np.clip(along, 0.0, 1.0)
    dx = _COLS - (start[0] + along * direction[0])
    dy = _ROWS - (start[1] + along * direction[1])
    return np.clip(half_width + 0.5 - np.hypot(dx, dy), 0.0, 1.0)


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _straight_line(rng: np.random.Generator) -> np.ndarray:
    """A straight line across the face: a scratch, or a hairline crack.

    Both classes call this same function with the same draws, which is what makes a
    dark scratch and a hairline crack indistinguishable in the photo.
    """
    middle = rng.uniform(20.0, 44.0, size=2)
    offset = rng.uniform(15.0, 23.0) * _unit(rng.uniform(0.0, np.pi))
    return _segment_profile(middle - offset, middle + offset, half_width=1.1)


def _branched_crack(rng: np.random.Generator) -> np.ndarray:
    """A jagged crack, changing direction at every grain it meets, with one branch."""
    heading = rng.uniform(0.0, 2 * np.pi)
    point = rng.uniform(22.0, 42.0, size=2) - 18.0 * _unit(heading)
    vertices = [point]
    for _ in range(rng.integers(8, 12)):
        heading += rng.uniform(-0.6, 0.6)
        point = point + rng.uniform(3.5, 5.0) * _unit(heading)
        vertices.append(point)
    coverage = np.zeros((PHOTO_SIZE, PHOTO_SIZE))
    for a, b in zip(vertices[:-1], vertices[1:]):
        coverage = np.maximum(coverage, _segment_profile(a, b, half_width=1.1))
    fork = vertices[int(rng.integers(2, len(vertices) - 2))]
    heading += rng.choice([-1.0, 1.0]) * rng.uniform(0.7, 1.2)
    for _ in range(3):
        tip = fork + rng.uniform(3.0, 4.5) * _unit(heading)
        coverage = np.maximum(coverage, _segment_profile(fork, tip, half_width=0.9))
        fork, heading = tip, heading + rng.uniform(-0.5, 0.5)
    return coverage


def _render_photo(rng: np.random.Generator, label: str) -> tuple[np.ndarray, str]:
    """Close-up photo ``(64, 64)`` uint8 of a flange's sealing face, and what it shows.

    The turning marks are arcs around the part's axis, which lies outside the frame;
    where the axis lies (part rotation and position), the light and the exposure
    vary from photo to photo, the same way for every class.
    """
    axis_angle = rng.uniform(0.0, 2 * np.pi)
    axis = (PHOTO_SIZE - 1) / 2 + rng.uniform(60.0, 110.0) * _unit(axis_angle)
    radius = np.hypot(_COLS - axis[0], _ROWS - axis[1])
    surface = rng.uniform(0.45, 0.6)
    ring_amplitude = rng.uniform(0.02, 0.04)
    ring_period = rng.uniform(2.5, 4.0)
    ring_phase = rng.uniform(0.0, 2 * np.pi)
    light_angle = rng.uniform(0.0, 2 * np.pi)
    light_slope = rng.uniform(0.0, 0.25)
    vignetting = rng.uniform(0.0, 0.15)
    exposure = rng.uniform(0.9, 1.1)
    noise_level = rng.uniform(0.01, 0.03)

    polish = np.zeros_like(radius)
    shows = "clean"
    if label == "misalignment" and rng.random() < RATES.visible_wear_band:
        # A shaft running off-axis rubs one ring of the face bright and smooth.
        centre_radius = np.hypot(*((PHOTO_SIZE - 1) / 2 - axis)) + rng.uniform(-14.0, 14.0)
        half_width = rng.uniform(4.0, 7.0)
        polish = np.clip(half_width + 0.5 - np.abs(radius - centre_radius), 0.0, 1.0)
        shows = "wear band"
    face = surface + ring_amplitude * (1 - polish) * np.sin(2 * np.pi * radius / ring_period + ring_phase)
    face = face + rng.uniform(0.15, 0.25) * polish if shows == "wear band" else face

    if label == "scratch":
        dark = rng.random() < RATES.dark_scratch
        contrast = rng.uniform(0.3, 0.45)
        face = face + (-contrast if dark else contrast) * _straight_line(rng)
        shows = "dark line" if dark else "bright line"
    elif label == "crack":
        if rng.random() < RATES.hairline_crack:
            face = face - rng.uniform(0.3, 0.45) * _straight_line(rng)
            shows = "dark line"
        else:
            face = face - rng.uniform(0.3, 0.45) * _branched_crack(rng)
            shows = "branched crack"

    dx, dy = _COLS - (PHOTO_SIZE - 1) / 2, _ROWS - (PHOTO_SIZE - 1) / 2
    lighting = 1 + light_slope * (dx * np.cos(light_angle) + dy * np.sin(light_angle)) / (PHOTO_SIZE / 2)
    lighting *= 1 - vignetting * (dx**2 + dy**2) / (2 * (PHOTO_SIZE / 2) ** 2)
    image = exposure * lighting * face + rng.normal(0.0, noise_level, size=face.shape)
    for _ in range(rng.integers(0, 4)):  # dust specks, on any part
        row, col = rng.integers(0, PHOTO_SIZE, size=2)
        image[row, col] += rng.choice([-1.0, 1.0]) * rng.uniform(0.08, 0.18)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), shows


# ----------------------------------------------------------------------------- sensors


def _bearing_impacts(rng: np.random.Generator, cycles: float, steps: np.ndarray) -> np.ndarray:
    """Ringing impacts at the outer-race defect rate (about 3.5x shaft speed), high frequency."""
    rate = cycles * rng.uniform(3.2, 3.8)  # impacts per window
    amplitude = rng.uniform(0.3, 0.6)
    resonance = rng.uniform(0.36, 0.44)  # cycles per sample, near Nyquist
    signal = np.zeros(len(steps))
    start = rng.uniform(0.0, SENSOR_STEPS / rate)
    for hit in np.arange(start, SENSOR_STEPS, SENSOR_STEPS / rate):
        lag = steps - np.floor(hit)
        ring = np.exp(-np.maximum(lag, 0) / 1.5) * np.cos(2 * np.pi * resonance * lag)
        signal += np.where(lag >= 0, rng.uniform(0.7, 1.0) * amplitude * ring, 0.0)
    return signal


def _render_sensors(rng: np.random.Generator, label: str) -> tuple[np.ndarray, str]:
    """Sensor log ``(3, 128)`` float32 (vibration g, temperature deg C, current A), and what it shows."""
    steps = np.arange(SENSOR_STEPS, dtype=np.float64)
    t = steps / SENSOR_STEPS
    cycles = rng.uniform(6.0, 10.0)  # shaft turns per window: speed varies between machines
    phase = rng.uniform(0.0, 2 * np.pi, size=4)
    turn = 2 * np.pi * cycles * t

    vibration = (
        rng.uniform(-0.1, 0.1)  # accelerometer offset
        + rng.uniform(0.02, 0.1) * np.sin(turn + phase[0])  # residual imbalance: every shaft has some
        + rng.uniform(0.0, 0.05) * np.sin(2 * turn + phase[1])
        + rng.uniform(-0.05, 0.05) * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + phase[2])  # slow wander
        + rng.normal(0.0, rng.uniform(0.07, 0.12), SENSOR_STEPS)
    )
    temperature = rng.uniform(30.0, 55.0) + rng.uniform(-1.5, 1.5) * t + rng.normal(0.0, 0.2, SENSOR_STEPS)
    current = rng.uniform(3.5, 6.5) + rng.uniform(-0.2, 0.2) * t + rng.normal(0.0, 0.05, SENSOR_STEPS)

    shows = "normal"
    if label == "crack" and rng.random() < RATES.crack_breathing:
        # A crack opening and closing each turn adds harmonics; at this depth, barely above noise.
        vibration += rng.uniform(0.01, 0.06) * np.sin(3 * turn + phase[3])
        shows = "crack breathing"
    elif label == "overheating":
        tau = rng.uniform(0.3, 1.0)
        rise = (1 - np.exp(-t / tau)) / (1 - np.exp(-1 / tau))
        temperature += rng.uniform(6.0, 15.0) * rise
        current += rng.uniform(0.1, 0.4) * rise  # friction loads the motor as it heats
        shows = "temperature ramp"
    elif label == "bearing_wear":
        vibration += _bearing_impacts(rng, cycles, steps)
        shows = "bearing impacts"
    elif label == "misalignment":
        vibration += rng.uniform(0.3, 0.6) * np.sin(turn + phase[0]) + rng.uniform(0.1, 0.25) * np.sin(
            2 * turn + phase[1]
        )
        current += rng.uniform(0.1, 0.25) * np.sin(turn + phase[3])  # load varies once per turn
        shows = "misalignment vibration"

    if rng.random() < 0.05:  # a logger glitch: one wild sample in one channel
        channel = int(rng.integers(0, 3))
        spike = (rng.uniform(0.5, 1.0), rng.uniform(3.0, 6.0), rng.uniform(0.5, 1.0))[channel]
        (vibration, temperature, current)[channel][rng.integers(0, SENSOR_STEPS)] += rng.choice([-1, 1]) * spike
    log = np.stack([vibration, temperature, current])
    return np.round(log, 3).astype(np.float32), shows  # the logger's resolution is 0.001


# ----------------------------------------------------------------------------- note

_WHERE = ("on the face", "near the bore", "by a bolt hole", "on the rim", "across the flange", "on the sealing face")
_WHEN = ("at full speed", "during the run", "after warm up", "under load", "on start up")
_SIZE = ("small", "long", "thin", "short", "fine")
_SPECIFIC = {
    "scratch": (
        "{size} scratch {where}",
        "scuffed {where}, looks like a {size} scratch",
        "score mark {where}, surface only",
        "tool scratch {where}",
    ),
    "crack": (
        "{size} crack {where}",
        "possible fracture {where}",
        "cracked {where}, do not ship",
        "crack {where}, check for spreading",
    ),
    "overheating": (
        "runs hot {when}",
        "housing hot to the touch {when}",
        "overheating {when}",
        "temperature climbing {when}",
        "burnt smell near the motor",
    ),
    "bearing_wear": (
        "grinding noise from the bearing",
        "bearing sounds rough {when}",
        "rumbling {when}, bearing worn",
        "bearing noise {when}",
    ),
    "misalignment": (
        "shaft looks misaligned",
        "coupling out of line",
        "wobble {when}, check alignment",
        "misaligned drive, shaft wobbles {when}",
    ),
}
_SURFACE = (
    "mark {where}",
    "line visible {where}",
    "something on the surface {where}",
    "blemish {where}, needs a closer look",
)
_MACHINE = (
    "unit not running right",
    "drive sounds off {when}",
    "machine running rough",
    "something off with the drive {when}",
)
# Each ambiguous phrase is shared by a group of classes: the note alone cannot tell them apart.
_GROUP = {
    "scratch": _SURFACE,
    "crack": _SURFACE,
    "overheating": _MACHINE,
    "bearing_wear": _MACHINE,
    "misalignment": _MACHINE,
}
_VAGUE = (
    "checked, looks fine",
    "no issues found",
    "all good",
    "nothing unusual",
    "ok to ship",
    "passed visual check",
    "routine check done",
    "looks normal",
)
# Openers and closers are drawn independently of the class: phrasing, not evidence.
_OPENERS = ("", "", "", "Inspection note:", "Visual check:", "Line B:", "Night shift:", "Re-inspected:")
_CLOSERS = ("", "", "", "Logged.", "Will recheck.", "Photo taken.", "Sensors attached.")


def _write_note(rng: np.random.Generator, label: str) -> tuple[str, str, str]:
    """The inspector's note, its kind (specific, group, vague or wrong) and the class it is about."""
    about = label
    if rng.random() < RATES.wrong_note:
        kind = "wrong"
        about = str(rng.choice([c for c in CLASS_NAMES if c != label]))
        templates = _VAGUE if about == NORMAL_CLASS else _SPECIFIC[about]
    elif label == NORMAL_CLASS:
        kind, templates = "vague", _VAGUE
    else:
        draw = rng.random() * (1 - RATES.wrong_note)
        if draw < RATES.specific_note:
            kind, templates = "specific", _SPECIFIC[label]
        elif draw < RATES.specific_note + RATES.group_note:
            kind, templates = "group", _GROUP[label]
        else:
            kind, templates = "vague", _VAGUE
    body = str(rng.choice(templates)).format(
        where=rng.choice(_WHERE), when=rng.choice(_WHEN), size=rng.choice(_SIZE)
    )
    full_stop = rng.random() < 0.6
    opener, closer = str(rng.choice(_OPENERS)), str(rng.choice(_CLOSERS))
    body = body[0].upper() + body[1:] + ("." if full_stop or closer else "")
    return " ".join(part for part in (opener, body, closer) if part), kind, about


# ----------------------------------------------------------------------------- cases and splits


def _check_split(split: str, seed: int) -> None:
    if split not in SPLIT_STREAMS:
        raise ValueError(f"{DATASET_NAME}: split {split!r} is not one of {tuple(SPLIT_STREAMS)}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"{DATASET_NAME}: seed must be a non-negative integer, got {seed!r}")


def _streams(split: str, index: int, seed: int) -> list[np.random.Generator]:
    """Independent photo, sensor and note generators of one case.

    Separate streams let the note vocabulary be built without rendering photos.
    """
    sequence = np.random.SeedSequence([int(seed), SPLIT_STREAMS[split], int(index)])
    return [np.random.default_rng(child) for child in sequence.spawn(3)]


def case_id(split: str, index: int) -> str:
    return f"insp-{split}-{index:04d}"


def inspection_case(split: str, index: int, seed: int = 0) -> InspectionCase:
    """Case ``index`` of a split, generated alone; identical to row ``index`` of ``generate_inspection``."""
    _check_split(split, seed)
    if index < 0:
        raise ValueError(f"{DATASET_NAME}: case index must be non-negative, got {index}")
    label = CLASS_NAMES[index % len(CLASS_NAMES)]
    photo_rng, sensor_rng, note_rng = _streams(split, index, seed)
    photo, photo_shows = _render_photo(photo_rng, label)
    sensors, sensors_show = _render_sensors(sensor_rng, label)
    note, note_kind, note_about = _write_note(note_rng, label)
    return InspectionCase(
        case_id=case_id(split, index),
        label=index % len(CLASS_NAMES),
        photo=photo,
        sensors=sensors,
        note=note,
        evidence=CaseEvidence(photo_shows, sensors_show, note_kind, note_about),
    )


@lru_cache(maxsize=1)
def inspection_vocabulary() -> tuple[str, ...]:
    """Note vocabulary, built from the default training split at ``VOCABULARY_SEED``."""
    n_cases = CASES_PER_CLASS["train"] * len(CLASS_NAMES)
    notes = (
        _write_note(_streams("train", i, VOCABULARY_SEED)[2], CLASS_NAMES[i % len(CLASS_NAMES)])[0]
        for i in range(n_cases)
    )
    return build_vocabulary(notes)


def inspection_modalities() -> tuple[Modality, ...]:
    """The three modalities, in model order: photo, sensors, note."""
    return (
        Modality("photo", "image", (1, PHOTO_SIZE, PHOTO_SIZE)),
        Modality("sensors", "timeseries", (len(SENSOR_CHANNELS), SENSOR_STEPS), feature_names=SENSOR_CHANNELS),
        Modality("note", "text", (NOTE_MAX_TOKENS,), vocabulary=inspection_vocabulary()),
    )


def inspection_cases(split: str, n_per_class: int | None = None, seed: int = 0) -> list[InspectionCase]:
    """All cases of a split, in index order (labels cycle through ``CLASS_NAMES``)."""
    _check_split(split, seed)
    n_per_class = CASES_PER_CLASS[split] if n_per_class is None else n_per_class
    if n_per_class <= 0:
        raise ValueError(f"{DATASET_NAME}: n_per_class must be positive, got {n_per_class}")
    return [inspection_case(split, i, seed) for i in range(n_per_class * len(CLASS_NAMES))]


def generate_inspection(split: str, n_per_class: int | None = None, seed: int = 0,
                        modalities: tuple[Modality, ...] | None = None) -> MultimodalDataset:
    """One split of the factory-inspection demo.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; each draws from its own stream of ``seed``.
        n_per_class: cases per class; by default 300 (train), 60 (val), 50 (test).
        seed: the same seed gives identical tensors; case ``i`` does not depend on ``n_per_class``.

    Returns:
        A ``MultimodalDataset`` with inputs photo ``(n, 1, 64, 64)`` float32 k/255,
        sensors ``(n, 3, 128)`` float32, note ``(n, 24)`` int64 token ids, the raw notes
        in ``texts["note"]``, ids ``"insp-test-0007"`` and ``normal_class`` ``"ok"``.
    """
    cases = inspection_cases(split, n_per_class, seed)
    # A trained model's modalities carry the vocabulary it was built with (``inspection_vocabulary``, stored
    # in its config): reading them saves rebuilding it from 1,800 generated notes, seconds of the app's start.
    same = modalities is not None and [(m.name, m.kind) for m in modalities] == [("photo", "image"), ("sensors", "timeseries"), ("note", "text")]
    modalities = tuple(modalities) if same else inspection_modalities()
    vocabulary = modalities[2].vocabulary
    notes = tuple(case.note for case in cases)
    return MultimodalDataset(
        name=DATASET_NAME,
        split=split,
        modalities=modalities,
        class_names=CLASS_NAMES,
        inputs=(
            pixels_to_tensor(np.stack([case.photo for case in cases]))[:, None],
            torch.from_numpy(np.stack([case.sensors for case in cases])),
            torch.tensor([tokenize(note, vocabulary, NOTE_MAX_TOKENS) for note in notes], dtype=torch.int64),
        ),
        labels=torch.tensor([case.label for case in cases], dtype=torch.int64),
        ids=tuple(case.case_id for case in cases),
        texts={"note": notes},
        normal_class=NORMAL_CLASS,
    )


# ----------------------------------------------------------------------------- the ideal classifier
# What the best possible model would say, from the generator's own numbers: it reads
# each modality's evidence perfectly (``CaseEvidence``) and applies Bayes' rule. The
# modalities are drawn from independent streams given the label, so their likelihoods
# multiply; the labels cycle through the classes, so the prior is uniform. Leaving a
# modality out of the product is what "that modality is absent" means for this model.

IDEAL_MODALITIES = ("photo", "sensors", "note")  # model order, as in ``inspection_modalities``


def _note_group(label: str) -> str:
    return "surface" if _GROUP[label] is _SURFACE else "machine"


def note_reading(evidence: CaseEvidence, label: str) -> str:
    """What a note's words tell a reader who does not know the label.

    ``"vague"`` (also a wrong note that says all is fine), ``"surface"`` or ``"machine"``
    (the ambiguous group phrases), or the class the note names (right or wrong).
    """
    if evidence.note == "group":
        return _note_group(label)
    if evidence.note == "vague" or evidence.note_about == NORMAL_CLASS:
        return "vague"
    return evidence.note_about


def _likelihood_tables() -> dict[str, dict[str, dict[str, float]]]:
    """P(a modality shows ``shows`` | class), as ``{modality: {class: {shows: p}}}``."""
    photo = {name: {"clean": 1.0} for name in CLASS_NAMES}
    photo["scratch"] = {"bright line": 1 - RATES.dark_scratch, "dark line": RATES.dark_scratch}
    photo["crack"] = {"dark line": RATES.hairline_crack, "branched crack": 1 - RATES.hairline_crack}
    photo["misalignment"] = {"wear band": RATES.visible_wear_band, "clean": 1 - RATES.visible_wear_band}
    sensors = {name: {"normal": 1.0} for name in CLASS_NAMES}
    sensors["crack"] = {"crack breathing": RATES.crack_breathing, "normal": 1 - RATES.crack_breathing}
    sensors["overheating"] = {"temperature ramp": 1.0}
    sensors["bearing_wear"] = {"bearing impacts": 1.0}
    sensors["misalignment"] = {"misalignment vibration": 1.0}
    note = {}
    for name in CLASS_NAMES:
        reads: dict[str, float] = {}
        for other in CLASS_NAMES:  # a wrong note is about any other class, uniformly
            if other != name:
                key = "vague" if other == NORMAL_CLASS else other
                reads[key] = reads.get(key, 0.0) + RATES.wrong_note / (len(CLASS_NAMES) - 1)
        right = 1 - RATES.wrong_note
        if name == NORMAL_CLASS:
            reads["vague"] = reads.get("vague", 0.0) + right
        else:
            reads[name] = reads.get(name, 0.0) + RATES.specific_note
            reads[_note_group(name)] = RATES.group_note
            reads["vague"] = reads.get("vague", 0.0) + right - RATES.specific_note - RATES.group_note
        note[name] = reads
    return {"photo": photo, "sensors": sensors, "note": note}


def evidence_likelihoods(modality: str, shows: str) -> np.ndarray:
    """``(classes,)`` P(``modality`` shows ``shows`` | class), from ``RATES``.

    ``shows`` is a ``CaseEvidence`` field for the photo and sensors, a ``note_reading``
    for the note. Raises ValueError for anything the generator never produces.
    """
    tables = _likelihood_tables()
    if modality not in tables:
        raise ValueError(f"{DATASET_NAME}: no modality {modality!r}; expected one of {IDEAL_MODALITIES}")
    likelihood = np.array([tables[modality][name].get(shows, 0.0) for name in CLASS_NAMES])
    if not likelihood.any():
        raise ValueError(f"{DATASET_NAME}: the {modality} never shows {shows!r}")
    return likelihood


def ideal_posteriors(case: InspectionCase) -> np.ndarray:
    """``(2^3, classes)`` P(class | what the modalities of coalition s show), the ideal classifier.

    Row s keeps modality i of ``IDEAL_MODALITIES`` where bit i of s is set (the order of
    ``deq_core.explain.shapley.coalition_masks``): row 0 is the uniform prior, row 7 the full case.
    A ceiling for models that must read the evidence from pixels, samples and words.
    """
    evidence = case.evidence
    shows = (evidence.photo, evidence.sensors, note_reading(evidence, CLASS_NAMES[case.label]))
    likelihoods = [evidence_likelihoods(m, s) for m, s in zip(IDEAL_MODALITIES, shows)]
    rows = []
    for coalition in range(2 ** len(IDEAL_MODALITIES)):
        joint = np.ones(len(CLASS_NAMES))
        for i, likelihood in enumerate(likelihoods):
            if coalition >> i & 1:
                joint = joint * likelihood
        rows.append(joint / joint.sum())
    return np.stack(rows)
