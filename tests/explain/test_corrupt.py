import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deq_core.explain.corrupt import (
    CORRUPTIONS,
    KEYBOARD_NEIGHBOURS,
    CorruptionSet,
    CorruptionSpec,
    InputReference,
    apply,
    available_corruptions,
    corrupt,
    describe_corruption,
    misspell,
)
from deq_core.engine.text import tokenize

from conftest import tiny_inputs, tiny_modalities, tiny_model

MODALITIES = tiny_modalities()
NAMES = [m.name for m in MODALITIES]
EVERY = [(m.name, kind) for m in MODALITIES for kind in available_corruptions(m.kind)]
# Kinds that draw nothing at random: the seed cannot matter.
SEEDLESS = {"drop", "drop_zero", "blur", "contrast"}
_REFERENCE = InputReference.of_model(tiny_model("late"))  # module level: hypothesis tests take no fixtures


@pytest.fixture(scope="module")
def reference():
    return InputReference.of_model(tiny_model("early"))


def _index(name):
    return NAMES.index(name)


def test_registry_offers_the_kinds_of_each_modality():
    assert set(available_corruptions("image")) == {
        "drop", "drop_zero", "gaussian_noise", "blur", "occlusion", "contrast", "salt_and_pepper"}  # fmt: skip
    assert set(available_corruptions("timeseries")) == {
        "drop", "drop_zero", "gaussian_noise", "dropout", "window_dropout", "spikes", "drift"}  # fmt: skip
    assert set(available_corruptions("text")) == {"drop", "token_dropout", "typos", "word_shuffle", "random_words"}
    assert set(available_corruptions("vector")) == {"drop", "drop_zero", "gaussian_noise", "feature_dropout"}
    assert describe_corruption("image", "blur").startswith("Gaussian blur")
    with pytest.raises(ValueError, match="kind 'audio'"):
        available_corruptions("audio")


@pytest.mark.parametrize("name, kind", EVERY)
def test_every_corruption_keeps_its_contract(name, kind, reference):
    x = tiny_inputs(6)
    before = [t.clone() for t in x]
    i = _index(name)

    identity = apply(x, MODALITIES, corrupt(name, kind, 0.0, seed=3), reference)
    assert torch.equal(identity[i], x[i])

    strong = apply(x, MODALITIES, corrupt(name, kind, 1.0, seed=3), reference)
    assert not torch.equal(strong[i], x[i]), "severity 1 must change the input"
    assert strong[i].shape == x[i].shape and strong[i].dtype == x[i].dtype
    for j, (t, b) in enumerate(zip(x, before)):
        assert torch.equal(t, b), "the input was modified in place"
        if j != i:
            assert strong[j] is t  # other modalities pass through untouched

    again = apply(x, MODALITIES, corrupt(name, kind, 0.6, seed=3), reference)
    same = apply(x, MODALITIES, corrupt(name, kind, 0.6, seed=3), reference)
    other_seed = apply(x, MODALITIES, corrupt(name, kind, 0.6, seed=4), reference)
    assert torch.equal(again[i], same[i])
    assert torch.equal(again[i], other_seed[i]) == (kind in SEEDLESS)


@pytest.mark.parametrize("name, kind", EVERY)
def test_a_case_gets_the_same_corruption_alone_and_in_a_batch(name, kind, reference):
    x = tiny_inputs(5)
    ids = [f"case-{k}" for k in range(5)]
    spec = corrupt(name, kind, 0.5, seed=11)
    batch = apply(x, MODALITIES, spec, reference, case_keys=ids)
    by_row = apply(x, MODALITIES, spec, reference)  # default keys: the row index
    i = _index(name)
    for row in (0, 3):
        alone = [t[row : row + 1] for t in x]
        assert torch.equal(apply(alone, MODALITIES, spec, reference, case_keys=[ids[row]])[i][0], batch[i][row])
        assert torch.equal(apply(alone, MODALITIES, spec, reference, case_keys=[row])[i][0], by_row[i][row])
    # Reordering the batch reorders the corrupted cases with it.
    order = torch.tensor([4, 2, 0, 1, 3])
    shuffled = apply([t[order] for t in x], MODALITIES, spec, reference, case_keys=[ids[k] for k in order])
    assert torch.equal(shuffled[i], batch[i][order])


@pytest.mark.parametrize("name, kind", EVERY)
def test_a_spec_replays_from_json(name, kind, reference):
    x = tiny_inputs(4)
    spec = corrupt(name, kind, 0.35, seed=7)
    replayed = CorruptionSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert replayed == spec
    assert torch.equal(apply(x, MODALITIES, replayed, reference)[_index(name)],
                       apply(x, MODALITIES, spec, reference)[_index(name)])  # fmt: skip


def test_a_corruption_set_composes_across_modalities_in_order(reference):
    x = tiny_inputs(6)
    specs = CorruptionSet((
        corrupt("photo", "blur", 0.5), corrupt("photo", "occlusion", 0.3, seed=2),
        corrupt("sensors", "drift", 0.7, seed=1), corrupt("note", "token_dropout", 0.5, seed=5),
    ))  # fmt: skip
    composed = apply(x, MODALITIES, specs, reference)
    step_by_step = x
    for spec in specs:
        step_by_step = apply(step_by_step, MODALITIES, spec, reference)
    for a, b in zip(composed, step_by_step):
        assert torch.equal(a, b)
    assert composed[3] is x[3]  # the vector was not named
    # The order matters on one modality: occluding a blurred photo is not blurring an occluded one.
    swapped = apply(x, MODALITIES, CorruptionSet((specs.specs[1], specs.specs[0])), reference)
    assert not torch.equal(swapped[0], composed[0])
    text = json.dumps(specs.to_dict())
    assert CorruptionSet.from_dict(json.loads(text)) == specs
    assert torch.equal(apply(x, MODALITIES, CorruptionSet.from_dict(json.loads(text)), reference)[2], composed[2])


def test_invalid_specs_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt("photo", "blur", 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt("photo", "blur", math.nan)
    with pytest.raises(ValueError, match="not one of"):
        corrupt("photo", "melt", 0.5)
    with pytest.raises(ValueError, match="unknown keys"):
        CorruptionSpec.from_dict({"modality": "photo", "kind": "blur", "severity": 0.1, "strength": 2})
    x = tiny_inputs(2)
    with pytest.raises(ValueError, match="does not apply to text modality 'note'.*token_dropout"):
        apply(x, MODALITIES, corrupt("note", "blur", 0.5))
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        apply(x, MODALITIES, corrupt("audio", "drop", 0.5))
    with pytest.raises(ValueError, match="case keys"):
        apply(x, MODALITIES, corrupt("photo", "drop", 0.5), case_keys=[1])


# ----------------------------------------------------------------------------- what each kind does


def test_drops_fill_with_the_training_mean_zeros_or_padding():
    model = tiny_model("deq")
    x = tiny_inputs(3)
    means = model.input_means()
    dropped = apply(x, MODALITIES, [corrupt(n, "drop", 0.2) for n in NAMES], model)
    for i in (0, 1, 3):
        assert torch.equal(dropped[i], means[i].expand_as(x[i]))
        assert not torch.equal(means[i], torch.zeros_like(means[i]))
    assert torch.equal(dropped[2], torch.zeros_like(x[2]))  # a missing note is all padding
    zeroed = apply(x, MODALITIES, corrupt("stats", "drop_zero", 1.0), model)
    assert torch.equal(zeroed[3], torch.zeros_like(x[3]))


def test_gaussian_noise_is_measured_in_the_training_scale():
    modality = MODALITIES[3]
    reference = InputReference((torch.zeros(5),), (torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]),))
    x = torch.zeros(4000, 5)
    noisy = apply((x,), (modality,), corrupt("stats", "gaussian_noise", 0.5), reference)[0]
    assert torch.allclose(noisy.std(dim=0), 0.5 * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), rtol=0.06)


@pytest.mark.parametrize("severity", [0.1, 0.25, 0.5, 1.0])
def test_occlusion_covers_the_severity_fraction_of_the_picture(severity):
    modality = MODALITIES[0]
    reference = InputReference((torch.full((1, 12, 12), -1.0),), (torch.ones(()),))
    x = torch.rand(20, 1, 12, 12)
    covered = apply((x,), (modality,), corrupt("photo", "occlusion", severity), reference)[0] == -1
    side = round(12 * math.sqrt(severity))
    assert (covered.sum(dim=(1, 2, 3)) == side * side).all()
    rows, cols = covered[:, 0].any(dim=2), covered[:, 0].any(dim=1)
    assert (rows.sum(dim=1) == side).all() and (cols.sum(dim=1) == side).all()  # one rectangle
    if severity < 1:
        assert len({tuple(r.nonzero().flatten().tolist()) for r in rows}) > 1  # placed per case


def test_contrast_blur_and_salt_and_pepper_on_known_pictures():
    modality = MODALITIES[0]
    x = torch.rand(8, 1, 12, 12)
    flat = apply((x,), (modality,), corrupt("photo", "contrast", 1.0))[0]
    assert torch.allclose(flat, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    dot = torch.zeros(1, 1, 12, 12)
    dot[0, 0, 6, 6] = 1.0
    blurred = apply((dot,), (modality,), corrupt("photo", "blur", 1.0))[0]
    assert blurred[0, 0, 6, 6] < 0.2 and blurred[0, 0, 6, 8] > 0 and torch.isclose(blurred.sum(), torch.tensor(1.0))
    constant = torch.full((1, 1, 12, 12), 0.3)
    assert torch.allclose(apply((constant,), (modality,), corrupt("photo", "blur", 0.7))[0], constant)
    big = torch.rand(1, 1, 12, 12).expand(200, 1, 12, 12).contiguous()
    light = apply((big,), (modality,), corrupt("photo", "salt_and_pepper", 0.3))[0] != big
    heavy = apply((big,), (modality,), corrupt("photo", "salt_and_pepper", 0.6))[0] != big
    assert abs(light.float().mean() - 0.3) < 0.02
    assert (heavy | ~light).all()  # the damage grows: what 0.3 hit, 0.6 hits too


def test_timeseries_gaps_hold_the_last_reading_and_drift_is_linear():
    modality = MODALITIES[1]
    steps = 16
    x = torch.arange(steps, dtype=torch.float32).repeat(10, 2, 1)  # strictly rising: any change is visible
    for kind in ("dropout", "window_dropout"):
        out = apply((x,), (modality,), corrupt("sensors", kind, 0.5))[0]
        changed = out != x
        assert (changed.sum(dim=2) == 8).all()
        assert torch.isin(out, x[0, 0]).all()  # only real readings, held
        if kind == "window_dropout":
            first = changed[:, 0].float().argmax(dim=1)
            for row, start in enumerate(first.tolist()):
                assert changed[row, 0, start : start + 8].all()
    reference = InputReference((torch.zeros(2, steps),), (torch.tensor([[1.0], [2.0]]),))
    drifted = apply((x,), (modality,), corrupt("sensors", "drift", 0.5), reference)[0] - x
    assert torch.allclose(drifted[:, :, 0], torch.zeros(10, 2))
    assert torch.allclose(drifted[:, :, -1].abs(), torch.tensor([1.5, 3.0]).expand(10, 2))
    per_step = drifted[:, :, -1:] / (steps - 1)
    assert torch.allclose(drifted[:, :, 1:] - drifted[:, :, :-1], per_step.expand(-1, -1, steps - 1), atol=1e-5)
    spikes = apply((x,), (modality,), corrupt("sensors", "spikes", 1.0), reference)[0] - x
    hits = spikes != 0
    assert hits.any() and torch.allclose(spikes[hits].abs(), (5 * reference.scales[0]).expand_as(x)[hits])
    many = torch.zeros(200, 2, steps)
    for severity, rate in ((0.5, 0.1), (1.0, 0.2)):  # one reading in five is a spike at severity 1
        spiked = apply((many,), (modality,), corrupt("sensors", "spikes", severity), reference)[0] != 0
        assert abs(spiked.float().mean() - rate) < 0.02


def test_text_corruptions_on_a_known_note():
    note = MODALITIES[2]
    vocabulary = note.vocabulary
    ids = torch.tensor([tokenize("bearing noise heard near the rim", vocabulary, 6)])
    assert (ids > 1).all()

    kept = apply((ids,), (note,), corrupt("note", "token_dropout", 0.5))[0][0].tolist()
    words = [w for w in kept if w]
    assert len(words) == 3 and kept[3:] == [0, 0, 0]
    assert words == [w for w in ids[0].tolist() if w in words]  # the rest keep their order

    shuffled = apply((ids,), (note,), corrupt("note", "word_shuffle", 1.0))[0][0]
    assert sorted(shuffled.tolist()) == sorted(ids[0].tolist()) and (shuffled != ids[0]).all()

    replaced = apply((ids,), (note,), corrupt("note", "random_words", 1.0))[0][0]
    assert (replaced != ids[0]).all() and (replaced >= 2).all() and (replaced < len(vocabulary)).all()

    misspelt = apply((ids,), (note,), corrupt("note", "typos", 1.0, seed=1))[0][0]
    assert (misspelt != ids[0]).all()  # every word misspelt, none of them a word of this vocabulary


def test_typos_swap_neighbours_or_hit_a_neighbouring_key():
    assert misspell("crack", (0.1, 0.0, 0.0)) == "rcack"
    assert misspell("crack", (0.1, 0.99, 0.0)) == "crakc"
    assert misspell("a", (0.1, 0.0, 0.0)) == "q"  # no swap in one letter: a neighbouring key
    assert misspell("noon", (0.9, 0.0, 0.99)) == "moon"
    assert misspell("'", (0.5, 0.5, 0.5)) == "'"
    assert set(KEYBOARD_NEIGHBOURS["g"]) == set("ftyhbv")


def test_feature_dropout_replaces_that_many_features_by_their_mean():
    modality = MODALITIES[3]
    reference = InputReference((torch.full((5,), 9.0),), (torch.ones(5),))
    x = torch.randn(30, 5)
    out = apply((x,), (modality,), corrupt("stats", "feature_dropout", 0.6), reference)[0]
    assert ((out == 9.0).sum(dim=1) == 3).all()
    assert len({tuple((row == 9.0).tolist()) for row in out}) > 1  # chosen per case


@settings(max_examples=60, deadline=None)
@given(
    which=st.sampled_from(EVERY),
    severity=st.floats(0.0, 1.0, allow_nan=False),
    seed=st.integers(0, 2**40),
    batch=st.integers(1, 4),
)
def test_any_severity_and_seed_keep_shape_dtype_and_finite_values(which, severity, seed, batch):
    name, kind = which
    x = tiny_inputs(batch, seed=seed % 97)
    i = _index(name)
    out = apply(x, MODALITIES, corrupt(name, kind, severity, seed), _REFERENCE)[i]
    assert out.shape == x[i].shape and out.dtype == x[i].dtype
    if out.is_floating_point():
        assert torch.isfinite(out).all()
    else:
        assert ((out >= 0) & (out < len(MODALITIES[2].vocabulary))).all()
        padding = out == 0
        assert (padding[:, :-1] <= padding[:, 1:]).all()  # padding only at the end


def test_the_registry_and_spec_validation_agree():
    for kind_table in CORRUPTIONS.values():
        for kind in kind_table:
            assert corrupt("photo", kind, 0.5).kind == kind
