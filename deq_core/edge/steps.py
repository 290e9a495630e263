"""How many unrolled steps K the decisions need: flips and probability gaps against K.

Two references, because they answer different questions:

- the **full model**: the tolerance-based solve the model ships with (Anderson, relative
  residual 1e-4). Decision agreement is measured against it, as the issue asks.
- the **fixed point**: the tight reference solve of the Tuning page
  (``deq_core.explain.tuning.reference_settings``, tolerance 1e-6). The full model's own
  solve stops at a residual of 1e-4 and so its probabilities are themselves off the fixed
  point (by 1.6e-4 on inspection-deq's validation split); "probabilities within 1e-4 once
  the K steps have settled" can only mean within 1e-4 of the fixed point, and the K at
  which that holds is reported as ``settled_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deq_core.edge.graph import iterates
from deq_core.explain.tuning import reference_settings

MAX_STEPS = 30
SETTLE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class StepRow:
    """One K: decisions that differ from the full model, and the largest probability gaps.

    Attributes:
        steps: K.
        flips: cases whose decision after K steps differs from the full model's.
        max_dp_full: largest |p_K - p_full| over cases and classes.
        max_dp_fixed_point: largest |p_K - p*| against the tight reference solve.
        max_residual: largest relative residual the K steps reach.
    """

    steps: int
    flips: int
    max_dp_full: float
    max_dp_fixed_point: float
    max_residual: float


@dataclass(frozen=True)
class StepsTable:
    """Flips against K on one split, with the two references' own gap.

    ``full_vs_fixed_point`` is the largest |p_full - p*|: how far the shipped solve itself
    is from its fixed point, a floor under every ``max_dp_full``.
    """

    split: str
    cases: int
    rows: tuple[StepRow, ...]
    full_vs_fixed_point: float
    full_vs_fixed_point_flips: int

    @property
    def chosen_steps(self) -> int | None:
        """The smallest K from which on no decision differs from the full model (None: none in the table).

        "From which on" and not merely "at which": a K whose decisions agree between two
        K that flip agrees by chance, and is no budget to ship.
        """
        chosen = None
        for row in reversed(self.rows):
            if row.flips:
                break
            chosen = row.steps
        return chosen

    def settled_steps(self, tolerance: float = SETTLE_TOLERANCE) -> int | None:
        """The smallest K from which on the probabilities stay within ``tolerance`` of the fixed point."""
        settled = None
        for row in reversed(self.rows):
            if row.max_dp_fixed_point > tolerance:
                break
            settled = row.steps
        return settled

    def to_dict(self) -> dict:
        return {"split": self.split, "cases": self.cases, "full_vs_fixed_point": self.full_vs_fixed_point,
                "full_vs_fixed_point_flips": self.full_vs_fixed_point_flips, "chosen_steps": self.chosen_steps,
                "settled_steps": self.settled_steps(), "rows": [vars(r) for r in self.rows]}  # fmt: skip

    def format(self) -> str:
        lines = [f"{self.split} split, {self.cases} cases; the full model is within {self.full_vs_fixed_point:.1e} "
                 f"of its fixed point ({self.full_vs_fixed_point_flips} decisions differ)",
                 "   K  flips  max|dp| full  max|dp| fixed point  max residual"]  # fmt: skip
        lines += [f"{r.steps:4d}  {r.flips:5d}  {r.max_dp_full:12.2e}  {r.max_dp_fixed_point:19.2e}  {r.max_residual:12.1e}"
                  for r in self.rows]  # fmt: skip
        chosen, settled = self.chosen_steps, self.settled_steps()
        lines.append(f"chosen K (no flips from there on): {chosen if chosen is not None else f'none up to {len(self.rows)}'}")
        lines.append(f"probabilities within {SETTLE_TOLERANCE:g} of the fixed point from K = "
                     f"{settled if settled is not None else f'never up to {len(self.rows)}'}")  # fmt: skip
        return "\n".join(lines)


def steps_table(lens, split: str = "val", max_steps: int = MAX_STEPS, damping: float | None = None,
                max_cases: int | None = None, data=None) -> StepsTable:  # fmt: skip
    """Flips and probability gaps for K = 1..``max_steps`` on ``split`` (or ``data``), in one pass.

    The K-step probabilities come from ``graph.iterates``, the sequence the exported graph
    is cut from, so the table is what an export at each K would decide (up to the float
    rounding of onnxruntime's kernels, which ``edge check`` measures on the file itself).
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    model = lens.model.eval()
    solver = model.config.solver
    a = float(solver.damping) if damping is None else damping
    data = data if data is not None else lens.data(split, max_cases=max_cases)
    with torch.no_grad():
        full = torch.softmax(model.run(data.inputs).logits, -1)
        fixed = torch.softmax(model.run(data.inputs, solver=reference_settings(solver)).logits, -1)
        rows = []
        for k, (p, residual) in zip(range(1, max_steps + 1), iterates(model, data.inputs, a)):
            rows.append(StepRow(k, int((p.argmax(1) != full.argmax(1)).sum()), float((p - full).abs().max()),
                                float((p - fixed).abs().max()), float(residual.max())))  # fmt: skip
    return StepsTable(split, len(data.labels), tuple(rows), float((full - fixed).abs().max()),
                      int((full.argmax(1) != fixed.argmax(1)).sum()))  # fmt: skip


def choose_steps(lens, split: str = "val", max_steps: int = MAX_STEPS) -> tuple[int, StepsTable]:
    """K chosen from data: the smallest K from which on every ``split`` case decides as the full model.

    Raises ValueError when no K up to ``max_steps`` does (the model needs more steps, or
    a solver the export does not have).
    """
    table = steps_table(lens, split, max_steps)
    if table.chosen_steps is None:
        raise ValueError(f"no K up to {max_steps} decides every {split} case as the full model does:\n{table.format()}")
    return table.chosen_steps, table

