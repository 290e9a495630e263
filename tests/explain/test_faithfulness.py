"""Faithfulness checks and their CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import make_contractive, tiny_inputs, tiny_model, tiny_modalities

import sys
from pathlib import Path

from deq_core import load_model, save_model
from deq_core.data import BUILT_IN, MultimodalDataset, load_dataset
from deq_core.data import references as references_module
from deq_core.explain.explanation import explain_case
from deq_core.explain.faithfulness import (
    TARGETS,
    average_ranks,
    case_rows,
    ranking_figures,
    decidable_agreement,
    deletion_decidable,
    deletion_agrees,
    deletion_near_tie,
    deletion_pair,
    format_table,
    main,
    measure,
    randomized_copy,
    reference_top_agreement,
    spearman,
    top_agrees,
)
from deq_core.explain.shapley import ModalityShapley

KEYS = (
    "n",
    "completeness_pass_rate",
    "deletion_agreement",
    "randomization_spearman",
    "batch_invariance_max_abs_diff",
    "explain_seconds_median",
)

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "assets" / "models"

pytestmark = pytest.mark.usefixtures("single_thread")


def test_average_ranks_share_ties():
    ranks = average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0]))
    assert ranks.tolist() == [3.0, 0.0, 3.0, 1.0, 3.0]


def test_spearman_matches_scipy_including_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (200,), generator=g).float()
    b = a + torch.randn(200, generator=g)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(torch.ones(5), a[:5]) != spearman(torch.ones(5), a[:5])  # constant: NaN


def test_randomized_copy_keeps_the_standardisation_and_nothing_else():
    model = tiny_model("deq").eval()
    fresh = randomized_copy(model, seed=3)
    again = randomized_copy(model, seed=3)
    for trained, new in zip(model.encoders, fresh.encoders):
        assert torch.equal(trained.center, new.center) and torch.equal(trained.scale, new.scale)
        assert torch.equal(trained.input_mean, new.input_mean)
    assert not torch.equal(model.head.weight, fresh.head.weight)
    assert torch.equal(fresh.head.weight, again.head.weight)
    assert not fresh.training


def _shapley(values, coalition_values, names=("a", "b", "c")):
    return ModalityShapley(
        modality_names=names, class_names=("x", "y"), target=1,
        values=torch.tensor(values), interactions=torch.zeros(3, 3), coalition_values=torch.tensor(coalition_values),
        full_value=coalition_values[-1], empty_value=coalition_values[0], ablation=None, ablation_max_abs_diff=None,
        coalition_solve=None,
    )  # fmt: skip


def test_deletion_agreement_compares_the_drops_of_the_largest_and_smallest_modality():
    # coalitions by bitmask (bit i: modality i present): full = 7, without a = 6, without b = 5, without c = 3
    coalitions = [0.2, 0.1, 0.1, 0.95, 0.1, 0.6, 0.3, 0.9]  # dropping a: 0.9 -> 0.3; dropping c: 0.9 -> 0.95
    assert deletion_agrees(_shapley([0.5, 0.1, -0.1], coalitions)) is True
    assert deletion_agrees(_shapley([-0.1, 0.1, 0.5], coalitions)) is False
    assert deletion_agrees(_shapley([0.2, 0.2, 0.2], [0.2] * 8)) is None
    assert deletion_pair(_shapley([-0.1, 0.1, 0.5], coalitions)) == (2, 0)
    assert deletion_pair(_shapley([0.2, 0.2, 0.2], [0.2] * 8)) is None


def test_deletion_disagreements_name_the_pairs_of_the_failing_cases(monkeypatch):
    """The counts add up to the failing share of the ranked cases, keyed "largest > smallest"."""
    coalitions = [0.1, 0.4, 0.3, 0.6, 0.2, 0.7, 0.5, 0.9]
    tied = [0.1, 0.4, 0.3, 0.6, 0.2, 0.7, 0.595, 0.9]  # dropping c costs 0.3, dropping a 0.305
    shapleys = iter([
        _shapley([-0.1, 0.1, 0.5], coalitions),  # c largest, a smallest, yet dropping a costs more: fails
        _shapley([0.5, 0.1, -0.1], coalitions),  # agrees
        _shapley([-0.1, 0.1, 0.5], coalitions),  # fails again
        _shapley([0.2, 0.2, 0.2], [0.2] * 8),  # nothing to rank
        _shapley([-0.1, 0.1, 0.5], tied),  # fails by a near tie
    ])  # fmt: skip
    real = explain_case

    def explained(*args, **kwargs):
        explanation = real(*args, **kwargs)
        if "texts" not in kwargs:  # the warm-up call, which is not counted
            return explanation
        return dataclasses.replace(explanation, shapley=next(shapleys))

    monkeypatch.setattr("deq_core.explain.faithfulness.explain_case", explained)
    model = tiny_model("deq").eval()
    make_contractive(model)
    data = MultimodalDataset(
        name="tiny", split="test", modalities=tiny_modalities(), class_names=("a", "b", "c"),
        inputs=tiny_inputs(5, seed=1), labels=torch.tensor([0, 1, 2, 0, 1]), ids=tuple(f"c{i}" for i in range(5)),
        texts={"note": ("some note",) * 5},
    )  # fmt: skip
    result, _ = measure(model, data, cases=5, n_steps=4, invariance_cases=0, progress=False)
    assert result.deletion_disagreements == {"c > a": 3}
    assert result.deletion_near_ties == 1
    assert result.deletion_agreement == pytest.approx(1 / 4)
    assert "c > a: 3" in format_table(result)
    assert deletion_near_tie(_shapley([-0.1, 0.1, 0.5], tied)) and not deletion_near_tie(_shapley([0.2] * 3, [0.2] * 8))


@pytest.fixture
def tiny_saved_model(tmp_path, monkeypatch):
    inputs = tiny_inputs(6, seed=4)

    def tiny_dataset(split, modalities=None):
        return MultimodalDataset(
            name="tiny-faithfulness", split=split, modalities=tiny_modalities(), class_names=("a", "b", "c"),
            inputs=inputs, labels=torch.tensor([0, 1, 2, 0, 1, 2]), ids=tuple(f"case-{i}" for i in range(6)),
            texts={"note": ("some note",) * 6},
        )  # fmt: skip

    monkeypatch.setitem(BUILT_IN, "tiny-faithfulness", tiny_dataset)
    model = tiny_model("deq", dataset="tiny-faithfulness")
    make_contractive(model)
    return save_model(model.eval(), tmp_path / "tiny-deq")


def test_cli_prints_the_faithfulness_keys_as_json(tiny_saved_model, capsys):
    code = main(["--model", str(tiny_saved_model), "--json", "--cases", "3", "--n-steps", "8",
                 "--invariance-cases", "1", "--quiet", "--threads", "1"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in KEYS:
        assert key in result
    assert result["n"] == 3 and result["model"] == "tiny-deq"
    assert 0 <= result["completeness_pass_rate"] <= 1
    assert result["batch_invariance_max_abs_diff"] <= 1e-5
    assert 0 <= result["randomization_spearman"] <= 1
    assert result["explain_seconds_median"] > 0


def test_cli_table_and_errors(tiny_saved_model, tmp_path, capsys):
    assert main(["--model", str(tiny_saved_model), "--cases", "2", "--n-steps", "4",
                 "--invariance-cases", "0", "--quiet"]) == 0  # fmt: skip
    table = capsys.readouterr().out
    for key in KEYS[1:]:
        assert key in table
    assert main(["--model", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "error:" in capsys.readouterr().err


# coalitions by bitmask (bit i: modality i present): full = 7, without a = 6, without b = 5, without c = 3
AGREES = [0.1, 0.4, 0.3, 0.6, 0.2, 0.7, 0.5, 0.9]  # dropping a costs 0.4, dropping c 0.3
TIED = [0.1, 0.4, 0.3, 0.6, 0.2, 0.7, 0.595, 0.9]  # dropping a costs 0.305, dropping c 0.3: within NEAR_TIE


def test_decidable_cases_are_those_whose_two_drops_differ_by_more_than_a_near_tie():
    assert deletion_decidable(_shapley([0.5, 0.1, -0.1], AGREES))  # a largest, c smallest: 0.4 vs 0.3
    assert deletion_decidable(_shapley([-0.1, 0.1, 0.5], AGREES))  # the same drops, wrong ranking: decidable
    assert not deletion_decidable(_shapley([-0.1, 0.1, 0.5], TIED))
    assert not deletion_decidable(_shapley([0.5, 0.1, -0.1], TIED))  # a tie is left out even where it "agrees"
    assert not deletion_decidable(_shapley([0.2, 0.2, 0.2], [0.2] * 8))  # nothing to rank
    cases = [_shapley([0.5, 0.1, -0.1], AGREES), _shapley([-0.1, 0.1, 0.5], AGREES),
             _shapley([0.5, 0.1, -0.1], AGREES), _shapley([-0.1, 0.1, 0.5], TIED),
             _shapley([0.2, 0.2, 0.2], [0.2] * 8)]  # fmt: skip
    assert decidable_agreement(cases) == (pytest.approx(2 / 3), 3)
    assert decidable_agreement(cases[3:]) == (None, 0)


def test_top_agreement_matches_inputs_by_name_and_leaves_reference_ties_out():
    reference = _shapley([0.1, 0.5, 0.2], [0.0] * 8)  # the reference's top input: b
    assert top_agrees(_shapley([0.0, 0.3, 0.1], [0.0] * 8), reference) is True
    assert top_agrees(_shapley([0.4, 0.3, 0.1], [0.0] * 8), reference) is False
    # the same values under other names: the model's top input is "b" again
    assert top_agrees(_shapley([0.4, 0.3, 0.1], [0.0] * 8, names=("b", "a", "c")), reference) is True
    assert top_agrees(_shapley([0.4, 0.3, 0.1], [0.0] * 8), _shapley([0.5, 0.5, 0.1], [0.0] * 8)) is None


def test_targets_hold_the_decidable_deletion_figure_and_the_ideal_ranking():
    assert TARGETS["deletion_agreement_decidable"] == (">=", 0.90)
    assert TARGETS["ideal_top_agreement"] == (">=", 0.85)
    assert "deletion_agreement" not in TARGETS  # the raw share is reported, not a target


class _Reference:
    def __init__(self, shapley):
        self.shapley = shapley


def test_measure_reports_the_new_figures_against_a_known_reference(monkeypatch):
    """Four cases with known Shapley values and references: every figure can be counted by hand."""
    shapleys = [
        _shapley([0.5, 0.1, -0.1], AGREES),  # decidable, agrees; top a
        _shapley([-0.1, 0.1, 0.5], AGREES),  # decidable, fails; top c
        _shapley([-0.1, 0.1, 0.5], TIED),  # near tie: not decidable; top c
        _shapley([0.5, 0.1, -0.1], AGREES),  # decidable, agrees; top a
    ]
    references = {"c0": [0.6, 0.1, 0.0], "c1": [0.6, 0.1, 0.0], "c2": [0.0, 0.1, 0.6], "c3": [0.3, 0.3, 0.0]}
    # tops: c0 a = a (agrees), c1 c != a, c2 c = c, c3 tied (left out): 2 of 3
    queue = iter(shapleys)
    real = explain_case

    def explained(*args, **kwargs):
        explanation = real(*args, **kwargs)
        return explanation if "texts" not in kwargs else dataclasses.replace(explanation, shapley=next(queue))

    def provider(case_key, inputs, texts, target, modality_names):
        assert len(inputs) == len(modality_names) and inputs[0].shape[0] == 1 and target == 1
        return _Reference(_shapley(references[case_key], [0.0] * 8))

    monkeypatch.setattr("deq_core.explain.faithfulness.explain_case", explained)
    monkeypatch.setitem(references_module._registered, "tiny-known", provider)
    model = tiny_model("deq").eval()
    make_contractive(model)
    data = MultimodalDataset(
        name="tiny-known", split="test", modalities=tiny_modalities(), class_names=("a", "b", "c"),
        inputs=tiny_inputs(4, seed=1), labels=torch.tensor([0, 1, 2, 0]), ids=tuple(f"c{i}" for i in range(4)),
        texts={"note": ("some note",) * 4},
    )  # fmt: skip
    result, _ = measure(model, data, cases=4, n_steps=4, invariance_cases=0, progress=False)
    assert (result.deletion_agreement_decidable, result.deletion_decidable_n) == (pytest.approx(2 / 3), 3)
    assert result.deletion_agreement == pytest.approx(2 / 4)  # the raw share counts the tie as a failure
    assert (result.ideal_top_agreement, result.ideal_top_n) == (pytest.approx(2 / 3), 3)
    table = format_table(result)
    assert "deletion_agreement_decidable" in table and "66.7%" in table and "ideal_top_agreement" in table


def test_top_agreement_is_none_without_a_reference():
    data = MultimodalDataset(
        name="no-such-reference", split="test", modalities=tiny_modalities(), class_names=("a", "b", "c"),
        inputs=tiny_inputs(2, seed=1), labels=torch.tensor([0, 1]), ids=("c0", "c1"), texts={"note": ("n",) * 2},
    )  # fmt: skip
    model = tiny_model("deq").eval()
    assert reference_top_agreement(data, [0, 1], [_shapley([0.5, 0.1, 0.0], AGREES)] * 2, model) == (None, 0)


def test_the_ideal_classifier_agrees_with_itself_on_generated_cases():
    """On the inspection generator's cases the ideal's own Shapley values rank its top input first every time."""
    from deq_core.explain.ideal import ideal_shapley, generated_case

    data = load_dataset("inspection", "val")
    rows = case_rows(data, 24)
    ideal = [ideal_shapley(generated_case(data.ids[row])) for row in rows]
    model = load_model(MODELS / "inspection-late", "cpu")
    top, n = reference_top_agreement(data, rows, ideal, model)
    assert top == 1.0 and 0 < n <= 24
    wrong = [dataclasses.replace(s, values=-s.values) for s in ideal]  # the ideal's bottom input first
    assert reference_top_agreement(data, rows, wrong, model)[0] < 0.5


def test_compare_gives_the_benchmarks_figure_for_a_baseline():
    """The command's ideal top agreement of a model is the one benchmarks/deletion_ceiling.py prints."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import deletion_ceiling

    folder = MODELS / "inspection-late"
    data = load_dataset("inspection", "val")
    mine = ranking_figures(load_model(folder, "cpu"), data, case_rows(data, 40))
    theirs = deletion_ceiling.model_ceiling(folder, "val", cases=40)
    assert mine.ideal_top_n == theirs.ranked
    assert mine.ideal_top_agreement == pytest.approx(theirs.ideal_top_agreement)


def test_cli_compare_prints_each_compared_models_figures(tiny_saved_model, tmp_path, capsys):
    other = tiny_model("late", dataset="tiny-faithfulness")
    other_folder = save_model(other.eval(), tmp_path / "tiny-late")
    code = main(["--model", str(tiny_saved_model), "--json", "--cases", "3", "--n-steps", "4",
                 "--invariance-cases", "0", "--quiet", "--compare", str(other_folder)])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ideal_top_agreement"] is None and result["ideal_top_n"] == 0  # no reference for this dataset
    assert 0 <= result["deletion_decidable_n"] <= 3
    assert set(result["compared"]) == {"tiny-late"}
    assert set(result["compared"]["tiny-late"]) == {
        "ideal_top_agreement", "ideal_top_n", "deletion_agreement_decidable", "deletion_decidable_n"
    }
    assert main(["--model", str(tiny_saved_model), "--cases", "2", "--n-steps", "4", "--invariance-cases", "0",
                 "--quiet", "--compare", str(tmp_path / "missing")]) == 2  # fmt: skip
    assert "error:" in capsys.readouterr().err
