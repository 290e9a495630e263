"""The inspection generator's ideal classifier as a per-case reference."""

from __future__ import annotations

import pytest
import torch

from deq_core.data import load_dataset
from deq_core.data.inspection import CLASS_NAMES, inspection_cases
from deq_core.explain.ideal import describe_note, generated_case, ideal_reference, ideal_shapley, ranking_sentence


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("inspection", "test")


def case_inputs(data, row: int):
    return tuple(x[row : row + 1] for x in data.inputs), {"note": data.texts["note"][row]}


@pytest.mark.parametrize("case_id", ["upload-0a1b2c", "insp-train-7", "insp-holdout-0001", "insp-test-0007x", ""])
def test_only_generator_ids_name_a_generated_case(case_id):
    assert generated_case(case_id) is None


def test_an_id_gives_back_its_case():
    case = generated_case("insp-val-0013")
    assert case.case_id == "insp-val-0013" and case.note == inspection_cases("val")[13].note


def test_a_clean_quiet_vaguely_noted_good_part_by_hand():
    case = generated_case("insp-test-0000")
    assert (CLASS_NAMES[case.label], case.evidence.photo, case.evidence.sensors, describe_note(case)) == (
        "ok", "clean", "normal", "vague")  # fmt: skip
    shapley = ideal_shapley(case)
    # v: 1/6, 1/3.3, 1/2.7, 1, 0.85/1.5, 0.74, 0.794, 1 for photo, sensors, note (see the generator's test).
    assert shapley.class_names[shapley.target] == "ok"
    assert shapley.values.tolist() == pytest.approx([0.248, 0.309, 0.277], abs=1e-3)
    assert float(shapley.values.sum()) == pytest.approx(1 - 1 / 6, abs=1e-6)
    assert shapley.without(2) == pytest.approx(1.0)  # the photo and the log prove a good part


def test_the_reference_of_a_test_case_describes_what_it_truly_shows(test_split):
    for row in (0, 7, 44, 125):
        inputs, texts = case_inputs(test_split, row)
        case = inspection_cases("test")[row]
        reference = ideal_reference(test_split.ids[row], inputs, texts, target=2)
        assert reference.label == CLASS_NAMES[case.label]
        assert reference.shows["photo"] == case.evidence.photo and reference.shows["sensors"] == case.evidence.sensors
        assert reference.shows["note"] == describe_note(case)
        assert reference.probabilities.sum() == pytest.approx(1.0)
        assert reference.shapley.target == 2  # the class asked for, not the ideal's own decision
        assert reference.shapley.full_value == pytest.approx(float(reference.probabilities[2]))


def test_notes_are_described_by_what_they_name_and_whether_they_are_wrong():
    cases = inspection_cases("val")
    described = {(c.evidence.note, describe_note(c)) for c in cases}
    assert all(text.startswith("wrong: ") for kind, text in described if kind == "wrong")
    assert {text for kind, text in described if kind == "group"} == {
        "only 'surface' words (a group of faults)", "only 'machine' words (a group of faults)"}  # fmt: skip
    assert all(text.startswith("names ") for kind, text in described if kind == "specific")


@pytest.mark.parametrize("change", ["photo", "sensors", "note", "other case"])
def test_an_edited_case_gets_no_reference(test_split, change):
    inputs, texts = case_inputs(test_split, 7)
    photo, sensors, note = (x.clone() for x in inputs)
    if change == "photo":
        photo[0, 0, 10, 10] += 1 / 255
    elif change == "sensors":
        sensors[0, 1, 5] += 0.001
    elif change == "note":
        texts = {"note": texts["note"] + " Logged."}
    else:
        (photo, sensors, note), texts = case_inputs(test_split, 8)
    assert ideal_reference(test_split.ids[7], (photo, sensors, note), texts) is None
    assert ideal_reference(test_split.ids[7], *case_inputs(test_split, 7)) is not None


def test_inputs_of_another_shape_get_no_reference(test_split):
    inputs, texts = case_inputs(test_split, 7)
    assert ideal_reference(test_split.ids[7], (inputs[0][:, :, :32], *inputs[1:]), texts) is None
    assert ideal_reference(test_split.ids[7], inputs[:2], texts) is None
    assert ideal_reference(test_split.ids[7], inputs, texts, modality_names=("image", "log", "text")) is None
    assert ideal_reference(test_split.ids[7], (torch.zeros(1, 1, 64, 64), *inputs[1:]), texts) is None


def test_the_sentence_names_who_ranks_which_input_first(test_split):
    good = ideal_reference(test_split.ids[0], *case_inputs(test_split, 0), target=0)  # clean, normal, vague
    note_first = {"photo": 0.1, "sensors": 0.2, "note": 0.5}
    assert ranking_sentence(note_first, good) == ("The ideal classifier decides ok (100%); the truth is ok; "
                                                  "for P(ok) the model ranks the note first, the ideal the sensors.")  # fmt: skip
    ideal_values = dict(zip(good.shapley.modality_names, good.shapley.values.tolist()))
    assert ranking_sentence(ideal_values, good).endswith("both rank the sensors first for P(ok).")
    band = next(i for i, c in enumerate(inspection_cases("test")) if c.evidence.photo == "wear band")
    tied = ideal_reference(test_split.ids[band], *case_inputs(test_split, band))  # the photo and the log each settle it
    assert ranking_sentence(note_first, tied).endswith(
        "the ideal ranks several inputs first for P(misalignment); the model ranks the note first.")  # fmt: skip
    with pytest.raises(ValueError, match="not the ideal's"):
        ranking_sentence({"photo": 0.1, "note": 0.5}, good)


def test_the_inspection_reference_is_registered_by_dataset_name_and_speaks_the_same_sentence(test_split):
    from deq_core.data import dataset_reference, reference_provider

    assert reference_provider("inspection") is ideal_reference
    inputs, texts = case_inputs(test_split, 0)
    names = ("photo", "sensors", "note")
    via_hook = dataset_reference("inspection", test_split.ids[0], inputs, texts, 0, names)
    direct = ideal_reference(test_split.ids[0], inputs, texts, 0, names)
    assert via_hook.shows == direct.shows and torch.equal(via_hook.shapley.values, direct.shapley.values)
    note_first = {"photo": 0.1, "sensors": 0.2, "note": 0.5}
    assert via_hook.sentence(note_first) == ranking_sentence(note_first, direct)
    assert dataset_reference("handwritten", test_split.ids[0], inputs, texts, 0, names) is None  # other data: none
