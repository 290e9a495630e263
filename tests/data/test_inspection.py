"""Tests for deq_core.data.inspection: the seeded factory-inspection generator."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch

from deq_core.data.inspection import (
    CASES_PER_CLASS,
    CLASS_NAMES,
    CaseEvidence,
    NOTE_MAX_TOKENS,
    RATES,
    SENSOR_CHANNELS,
    evidence_likelihoods,
    generate_inspection,
    ideal_posteriors,
    inspection_case,
    inspection_cases,
    inspection_vocabulary,
    note_reading,
)
from deq_core.engine.text import build_vocabulary, words


@pytest.fixture(scope="module")
def test_split():
    return generate_inspection("test")


@pytest.fixture(scope="module")
def train_cases():
    return inspection_cases("train")


def assert_same(a, b) -> None:
    assert a.ids == b.ids and a.texts == b.texts and a.modalities == b.modalities
    assert torch.equal(a.labels, b.labels)
    assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs))


def test_the_same_seed_gives_identical_tensors():
    assert_same(generate_inspection("val", n_per_class=3, seed=5), generate_inspection("val", n_per_class=3, seed=5))


def test_another_seed_or_split_gives_other_cases():
    base = generate_inspection("val", n_per_class=2, seed=0)
    for other in (generate_inspection("val", n_per_class=2, seed=1), generate_inspection("test", n_per_class=2)):
        assert torch.equal(base.labels, other.labels)  # labels cycle through the classes by index
        for x, y in zip(base.inputs[:2], other.inputs[:2]):
            assert not torch.equal(x, y)
        assert base.texts["note"] != other.texts["note"]


def test_one_case_is_reproducible_alone():
    dataset = generate_inspection("test", n_per_class=2, seed=3)
    for index in (0, 7, 11):
        case = inspection_case("test", index, seed=3)
        photo, sensors, note = (x[index] for x in dataset.inputs)
        assert case.case_id == dataset.ids[index] == f"insp-test-{index:04d}"
        assert case.label == int(dataset.labels[index])
        assert torch.equal(torch.from_numpy(case.photo.astype(np.float32) / np.float32(255))[None], photo)
        assert torch.equal(torch.from_numpy(case.sensors), sensors)
        assert case.note == dataset.texts["note"][index]


def test_a_case_does_not_depend_on_the_split_size():
    small, large = generate_inspection("train", n_per_class=2), generate_inspection("train", n_per_class=4)
    assert_same(small, large.subset(range(len(small))))


def test_default_sizes_balance_shapes_and_value_ranges(test_split):
    n = CASES_PER_CLASS["test"] * len(CLASS_NAMES)
    photo, sensors, note = test_split.inputs
    assert (test_split.name, test_split.split, test_split.normal_class) == ("inspection", "test", "ok")
    assert test_split.class_names == CLASS_NAMES and len(CLASS_NAMES) >= 6
    assert Counter(test_split.labels.tolist()) == {c: CASES_PER_CLASS["test"] for c in range(len(CLASS_NAMES))}
    assert photo.shape == (n, 1, 64, 64) and photo.dtype == torch.float32
    assert sensors.shape == (n, 3, 128) and sensors.dtype == torch.float32
    assert note.shape == (n, NOTE_MAX_TOKENS) and note.dtype == torch.int64
    assert 0 <= photo.min() and photo.max() <= 1
    # Photos are k/255 exactly, so an 8-bit PNG holds them without loss.
    assert torch.equal((photo * 255).round() / 255, photo)
    assert torch.isfinite(sensors).all()
    assert [m.name for m in test_split.modalities] == ["photo", "sensors", "note"]
    assert test_split.modalities[1].feature_names == SENSOR_CHANNELS
    assert len(set(test_split.ids)) == n and all(re.fullmatch(r"insp-test-\d{4}", i) for i in test_split.ids)
    assert len(test_split.texts["note"]) == n


def test_every_split_shares_the_vocabulary_of_the_seed_0_training_notes(train_cases):
    expected = build_vocabulary(case.note for case in train_cases)
    assert inspection_vocabulary() == expected
    for dataset in (generate_inspection("val", n_per_class=1), generate_inspection("test", n_per_class=1, seed=9)):
        assert dataset.modalities[2].vocabulary == expected


def test_notes_fit_in_max_tokens_and_tokenise_without_unknown_words(train_cases, test_split):
    assert max(len(words(case.note)) for case in train_cases) <= NOTE_MAX_TOKENS
    assert not (test_split.inputs[2] == 1).any()  # templates are finite: test notes use training words


def test_evidence_rates_match_the_documented_parameters(train_cases):
    by_class = {c: [case for case in train_cases if CLASS_NAMES[case.label] == c] for c in CLASS_NAMES}
    share = lambda cases, field, value: np.mean([getattr(c.evidence, field) == value for c in cases])  # noqa: E731
    assert abs(share(train_cases, "note", "wrong") - RATES.wrong_note) < 0.03
    assert abs(share(by_class["scratch"], "photo", "dark line") - RATES.dark_scratch) < 0.07
    assert abs(share(by_class["crack"], "photo", "dark line") - RATES.hairline_crack) < 0.06
    assert abs(share(by_class["misalignment"], "photo", "wear band") - RATES.visible_wear_band) < 0.07
    assert abs(share(by_class["crack"], "sensors", "crack breathing") - RATES.crack_breathing) < 0.07
    for c in ("ok", "overheating", "bearing_wear"):
        assert share(by_class[c], "photo", "clean") == 1.0
    for c in ("ok", "scratch"):
        assert share(by_class[c], "sensors", "normal") == 1.0
    wrong = [case for case in train_cases if case.evidence.note == "wrong"]
    assert all(case.evidence.note_about != CLASS_NAMES[case.label] for case in wrong)


def best_guess_accuracy(symbols, labels) -> float:
    """Accuracy of guessing the commonest class for each symbol: the Bayes limit on these cases."""
    counts = Counter(zip(symbols, labels))
    best: dict = {}
    for (symbol, _), count in counts.items():
        best[symbol] = max(best.get(symbol, 0), count)
    return sum(best.values()) / len(labels)


def test_no_modality_alone_suffices_but_all_three_do(train_cases):
    labels = [case.label for case in train_cases]
    photo = [case.evidence.photo for case in train_cases]
    sensors = [case.evidence.sensors for case in train_cases]
    note = [note_reading(case.evidence, CLASS_NAMES[case.label]) for case in train_cases]
    for symbols in (photo, sensors, note):
        assert best_guess_accuracy(symbols, labels) <= 0.75
    assert best_guess_accuracy(list(zip(photo, sensors, note)), labels) >= 0.97


def test_the_pixels_and_signals_show_what_the_evidence_says(train_cases):
    cases = train_cases[:300]

    def strongest_line(photo: np.ndarray, sign: int) -> float:
        image = sign * photo.astype(np.float64) / 255
        padded = np.pad(image, 2, mode="edge")
        local = sum(padded[i : i + 64, j : j + 64] for i in range(5) for j in range(5)) / 25
        return float(np.sort((image - local).ravel())[-30:].mean())

    bright = [strongest_line(c.photo, +1) for c in cases if c.evidence.photo == "bright line"]
    dark = [strongest_line(c.photo, -1) for c in cases if c.evidence.photo in ("dark line", "branched crack")]
    clean = [c for c in cases if c.evidence.photo == "clean"]
    assert min(bright) > max(strongest_line(c.photo, +1) for c in clean)
    assert min(dark) > max(strongest_line(c.photo, -1) for c in clean)

    def temperature_rise(case) -> float:
        temperature = case.sensors[SENSOR_CHANNELS.index("temperature")]
        return float(np.median(temperature[-16:]) - np.median(temperature[:16]))

    ramps = [temperature_rise(c) for c in cases if c.evidence.sensors == "temperature ramp"]
    flat = [temperature_rise(c) for c in cases if c.evidence.sensors != "temperature ramp"]
    assert min(ramps) > 4.0 > max(abs(r) for r in flat)
    # Sensor values are logged at 0.001 resolution.
    values = np.concatenate([c.sensors.ravel() for c in cases]).astype(np.float64)
    assert np.allclose(values * 1000, np.round(values * 1000), atol=1e-2)


def test_the_ideal_likelihoods_are_the_frequencies_the_generator_draws(train_cases):
    for c in CLASS_NAMES:
        cases = [case for case in train_cases if CLASS_NAMES[case.label] == c]
        shown = {
            "photo": Counter(case.evidence.photo for case in cases),
            "sensors": Counter(case.evidence.sensors for case in cases),
            "note": Counter(note_reading(case.evidence, c) for case in cases),
        }
        for modality, counts in shown.items():
            for shows, count in counts.items():  # raises if the generator drew something "impossible"
                expected = evidence_likelihoods(modality, shows)[CLASS_NAMES.index(c)]
                assert abs(count / len(cases) - expected) < 0.07, (c, modality, shows)
    for modality in ("photo", "sensors", "note"):
        readings = {"photo": ["clean", "bright line", "dark line", "branched crack", "wear band"],
                    "sensors": ["normal", "crack breathing", "temperature ramp", "bearing impacts",
                                "misalignment vibration"],
                    "note": ["vague", "surface", "machine", *CLASS_NAMES[1:]]}[modality]  # fmt: skip
        table = np.stack([evidence_likelihoods(modality, shows) for shows in readings])
        assert np.allclose(table.sum(axis=0), 1.0)  # every class shows exactly one of these


def test_the_ideal_posterior_of_a_clean_quiet_vaguely_noted_case_by_hand():
    quiet = CaseEvidence(photo="clean", sensors="normal", note="vague", note_about="ok")
    case = next(c for c in inspection_cases("val") if c.evidence == quiet and CLASS_NAMES[c.label] == "ok")
    posteriors = ideal_posteriors(case)
    ok = CLASS_NAMES.index("ok")
    assert posteriors.shape == (8, 6) and np.allclose(posteriors.sum(axis=1), 1)
    assert np.allclose(posteriors[0], 1 / 6)  # nothing observed: the uniform prior
    # Clean faces: ok, overheating, bearing wear always, misalignment 30% of the time.
    assert posteriors[1, ok] == pytest.approx(1 / 3.3)
    # Normal logs: ok and scratch always, crack 70%.
    assert posteriors[2, ok] == pytest.approx(1 / 2.7)
    assert posteriors[3, ok] == pytest.approx(1.0)  # only an ok part is clean and quiet
    # A vague note: 85% of ok notes; 10% + 15% / 5 (a wrong note saying all is fine) of a fault's.
    assert posteriors[4, ok] == pytest.approx(0.85 / (0.85 + 5 * 0.13))


@pytest.mark.parametrize("modality, shows", [("smell", "burnt"), ("photo", "normal"), ("note", "scratch words")])
def test_the_ideal_classifier_refuses_evidence_the_generator_never_draws(modality, shows):
    with pytest.raises(ValueError, match="inspection"):
        evidence_likelihoods(modality, shows)


@pytest.mark.parametrize(
    "call",
    [
        lambda: generate_inspection("training"),
        lambda: generate_inspection("test", seed=-1),
        lambda: generate_inspection("test", n_per_class=0),
        lambda: inspection_case("test", -1),
    ],
)
def test_bad_arguments_are_refused(call):
    with pytest.raises(ValueError):
        call()
