"""Case: one type for one case, built from a dataset row, an upload or a variant; the shared rules."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import tiny_inputs, tiny_model, tiny_modalities
from PIL import Image

from deq_core import Case, CorruptionSpec, MissingInputs, UploadError, absent_input, apply_corruptions, batch_of_one
from deq_core.data.base import MultimodalDataset
from deq_core.explain.corrupt import InputReference
from deq_core.explain.shapley import absent_input as shapley_absent


def _dataset() -> MultimodalDataset:
    x = tiny_inputs(4)
    return MultimodalDataset(
        name="tiny", split="test", modalities=tiny_modalities(), class_names=("a", "b", "c"), inputs=x,
        labels=torch.tensor([0, 1, 2, 1]), ids=("c0", "c1", "c2", "c3"),
        texts={"note": ("n0", "n1", "n2", "n3")},
    )  # fmt: skip


def test_from_dataset_keeps_the_row_its_label_and_its_text():
    data = _dataset()
    case = Case.from_dataset(data, "c2")
    assert case.key == "c2" and case.label == 2 and case.texts == {"note": "n2"}
    assert case.provenance.source == "dataset" and case.provenance.row == 2 and case.provenance.split == "test"
    for x, full in zip(case.inputs, data.inputs):
        assert x.shape[0] == 1 and torch.equal(x[0], full[2])
    with pytest.raises(KeyError, match="c9"):
        Case.from_dataset(data, "c9")


def test_batch_of_one_accepts_either_form_and_names_the_bad_modality():
    modalities = tiny_modalities()
    x = tiny_inputs(1)
    with_batch = batch_of_one(modalities, x)
    without = batch_of_one(modalities, [t[0] for t in x])
    assert all(torch.equal(a, b) for a, b in zip(with_batch, without))
    with pytest.raises(ValueError, match="'sensors'"):
        batch_of_one(modalities, [x[0], torch.zeros(1, 3, 16), x[2], x[3]])
    with pytest.raises(ValueError, match="expected 4 inputs"):
        batch_of_one(modalities, x[:3])


def test_absent_input_is_the_rule_shapley_and_the_drop_corruption_follow():
    """Shapley's absent modality, the drop corruption and an upload's missing input are the same tensor."""
    model = tiny_model("deq").eval()
    x = tiny_inputs(3)
    means = model.input_means()
    for i in range(len(x)):
        rule = absent_input(means[i], x[i])
        assert rule.dtype == x[i].dtype and rule.shape == x[i].shape
        assert torch.equal(shapley_absent(model, i, x[i]), rule)
    dropped = apply_corruptions(x, model.config.modalities, [CorruptionSpec("photo", "drop", 1.0)],
                                InputReference.of_model(model), case_keys=["k0", "k1", "k2"])  # fmt: skip
    assert torch.equal(dropped[0], absent_input(means[0], x[0]))


def _png(shape) -> bytes:
    c, h, w = shape
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((h, w)) * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _csv(shape) -> bytes:
    channels, steps = shape
    header = ",".join(f"c{i}" for i in range(channels))
    rows = "\n".join(",".join("0.5" for _ in range(channels)) for _ in range(steps))
    return f"{header}\n{rows}\n".encode()


def test_upload_key_depends_on_every_byte_and_missing_inputs_need_means():
    model = tiny_model("deq").eval()
    modalities = model.config.modalities[:3]  # photo, sensors, note
    photo, sensors = _png(modalities[0].shape), _csv(modalities[1].shape)
    contents = {"photo": photo, "sensors": sensors, "note": "bearing noise heard"}
    case = Case.from_upload(modalities, contents)
    assert case.key.startswith("upload-") and case.label is None and case.is_upload
    assert case.texts == {"note": "bearing noise heard"}
    assert [tuple(x.shape) for x in case.inputs] == [(1, *m.shape) for m in modalities]
    again = Case.from_upload(modalities, dict(contents))
    assert again.key == case.key
    edited = Case.from_upload(modalities, {**contents, "note": "bearing noise heard!"})
    assert edited.key != case.key

    without_note = {**contents, "note": "   "}
    with pytest.raises(MissingInputs) as missing:
        Case.from_upload(modalities, without_note)
    assert missing.value.missing == ("note",)
    means = model.input_means()
    dropped = Case.from_upload(modalities, without_note, means=means[:3])
    assert dropped.provenance.dropped == ("note",) and dropped.key != case.key
    assert torch.equal(dropped.inputs[2], absent_input(means[2], dropped.inputs[2]))
    assert dropped.inputs[2].dtype == torch.int64
    with pytest.raises(MissingInputs):  # nothing given at all: there is no case to decide
        Case.from_upload(modalities, {}, means=means[:3])


def test_upload_lists_every_unreadable_input_at_once():
    modalities = tiny_modalities()[:2]
    with pytest.raises(UploadError) as error:
        Case.from_upload(modalities, {"photo": b"not a picture", "sensors": b"a;b\n1;2\n"},
                         file_names={"photo": "part.png"})  # fmt: skip
    assert len(error.value.problems) == 2
    assert error.value.problems[0].startswith("photo (part.png):")
    assert error.value.problems[1].startswith("sensors:")


def test_variant_records_its_parent_and_specs_and_chains():
    data = _dataset()
    case = Case.from_dataset(data, "c1")
    spec = CorruptionSpec("photo", "drop", 1.0)
    changed = tuple(x + 1 if x.is_floating_point() else x for x in case.inputs)
    variant = case.variant(changed, [spec])
    assert variant.provenance.source == "variant" and variant.provenance.parent == "c1"
    assert variant.key == "c1|" + spec.describe() and variant.label == case.label
    assert variant.fingerprint != case.fingerprint
    second = variant.variant(changed, [CorruptionSpec("note", "drop", 1.0)])
    assert second.provenance.parent == "c1" and len(second.provenance.corruptions) == 2


def test_fingerprint_changes_with_one_input_value():
    case = Case.from_dataset(_dataset(), "c0")
    inputs = [x.clone() for x in case.inputs]
    inputs[1][0, 0, 0] += 1e-3
    other = Case(case.key, tuple(inputs), case.label, case.texts, case.provenance)
    assert other.fingerprint != case.fingerprint
    assert Case(case.key, tuple(x.clone() for x in case.inputs), case.label).fingerprint == case.fingerprint
