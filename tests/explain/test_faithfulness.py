"""Faithfulness checks and their CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import make_contractive, tiny_inputs, tiny_model, tiny_modalities

from deq_core import save_model
from deq_core.data import BUILT_IN, MultimodalDataset
from deq_core.explain.explanation import explain_case
from deq_core.explain.faithfulness import (
    average_ranks,
    deletion_agrees,
    deletion_near_tie,
    deletion_pair,
    format_table,
    main,
    measure,
    randomized_copy,
    spearman,
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


def _shapley(values, coalition_values):
    return ModalityShapley(
        modality_names=("a", "b", "c"), class_names=("x", "y"), target=1,
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
