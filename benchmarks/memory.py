"""Training-step memory benchmark: implicit differentiation (DEQFusion) vs the weight-tied unroll.

    python benchmarks/memory.py [--json PATH] [--batch 64] [--repeats 5] [--threads 1] [--no-checkpoint-encoders]

One training step is forward + backward of the cross-entropy on a batch (no
optimiser step, no Jacobian penalty), in train mode. Both models share the same
weights: the fusion model of benchmarks/solvers.py (``assets/models/inspection-deq``
when it exists and fits, else the small fitted fallback), so the weight-tied
model unrolls exactly the DEQ's f for K = 10, 30, 60 steps.

Saved-activation memory is what autograd keeps for the backward: every tensor
packed by ``torch.autograd.graph.saved_tensors_hooks`` during the forward, counted
once per storage (views share one), parameters and buffers excluded. All of it
is alive at the end of the forward, so the sum is the peak of saved activations.
It works on the CPU, where torch has no allocator peak counter.

Both models train with their convolutional encoders checkpointed, as
``deq_core.train`` does by default: an encoder then keeps only its input for the
backward, which is counted here too. ``--no-checkpoint-encoders`` measures both
models without it, as training's flag of the same name trains.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from deq_core import DEQFusion, SolverSettings, WeightTiedFusion  # noqa: E402
from deq_core.engine import EquilibriumModel  # noqa: E402
from solvers import fusion_model  # noqa: E402  (benchmarks/solvers.py: the shared fusion model)

UNROLL_STEPS = (10, 30, 60)
MB = 2**20


def _storage_counter(model: EquilibriumModel):
    """A saved-tensor pack hook recording unique storage sizes (parameters and buffers excluded)."""
    excluded = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            # A saved tensor stays alive until the backward, so no other saved storage can reuse its address.
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    return pack, storages


def _count_checkpoint_inputs(model: EquilibriumModel, storages: dict[int, int]) -> list:
    """Hooks adding the input of each checkpointed encoder: checkpointing keeps it for the backward.

    (Inside a checkpointed region torch's own saved-tensor hooks take over, so the
    pack hook above does not see it.)
    """

    def count(module, args):
        storage = args[0].untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())

    return [e.net.register_forward_pre_hook(count) for e in model.encoders if e.checkpoint_activations]


def saved_activation_bytes(model: EquilibriumModel, inputs, labels, solver: SolverSettings | None = None):
    """Bytes of unique storages autograd saves during one forward; then runs the backward.

    Returns ``(bytes, forward f-evaluations of the DEQ solve or None)``.
    """
    pack, storages = _storage_counter(model)
    hooks = _count_checkpoint_inputs(model, storages)
    model.zero_grad(set_to_none=True)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            output = model.run(inputs, solver=solver)
            loss = F.cross_entropy(output.logits, labels)
    finally:
        for hook in hooks:
            hook.remove()
    loss.backward()
    evaluations = output.solve.function_evaluations if isinstance(model, DEQFusion) else None
    return sum(storages.values()), evaluations


def encoder_saved_bytes(model: EquilibriumModel, inputs) -> int:
    """Bytes the encoders alone save: the same in both models, so subtracting it isolates the fusion part."""
    pack, storages = _storage_counter(model)
    hooks = _count_checkpoint_inputs(model, storages)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            features = model.encode(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    features.sum().backward()
    return sum(storages.values())


def step_milliseconds(model: EquilibriumModel, inputs, labels, repeats: int, solver: SolverSettings | None = None) -> float:
    """Median wall time of forward + backward (after one warm-up step), without hooks."""
    times = []
    for run in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        loss = F.cross_entropy(model.run(inputs, solver=solver).logits, labels)
        loss.backward()
        if run:
            times.append(1e3 * (time.perf_counter() - started))
    return statistics.median(times)


@dataclass
class Row:
    model: str
    unroll_steps: int | None
    forward_f_evaluations: int | None
    saved_activation_mb: float
    step_ms: float
    batch: int
    threads: int


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows and figures to this JSON file")
    parser.add_argument("--batch", type=int, default=64, help="cases per training step")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 measures fairly under load)")
    parser.add_argument("--model", type=Path, help="model folder (default: assets/models/inspection-deq if it fits)")
    parser.add_argument("--no-checkpoint-encoders", dest="checkpoint", action="store_false",
                        help="save the encoders' activations (training's --no-checkpoint-encoders)")  # fmt: skip
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, torch threads: {threads}; batch {args.batch}, "
          f"step = forward + backward of cross-entropy, median of {args.repeats} steps")  # fmt: skip
    base, fusion_inputs, description = fusion_model(args.model)
    print(f"fusion model: {description}")
    inputs, source = fusion_inputs(args.batch)
    labels = torch.randint(len(base.config.class_names), (args.batch,), generator=torch.Generator().manual_seed(0))
    print(f"inputs: {source}, random labels")
    torch.manual_seed(0)

    deq = DEQFusion(base.config.replace(architecture="deq"))
    deq.load_state_dict(base.state_dict())
    deq.checkpoint_encoders(args.checkpoint)
    deq.train()
    print(f"encoders checkpointed: {'yes (the training default)' if args.checkpoint else 'no'}")
    rows = []
    implicit_bytes, implicit_evaluations = saved_activation_bytes(deq, inputs, labels)
    implicit = Row("implicit (DEQFusion)", None, implicit_evaluations, implicit_bytes / MB,
                   step_milliseconds(deq, inputs, labels, args.repeats), args.batch, threads)  # fmt: skip
    rows.append(implicit)
    for steps in UNROLL_STEPS:
        # The DEQ's forward solver forced to run K iterations (tol out of reach): its memory must not move.
        forced = SolverSettings(max_iter=steps, tol=1e-30)
        forced_bytes, forced_evaluations = saved_activation_bytes(deq, inputs, labels, forced)
        rows.append(Row(f"implicit, solver forced to {steps} iterations", steps, forced_evaluations, forced_bytes / MB,
                        step_milliseconds(deq, inputs, labels, args.repeats, forced), args.batch, threads))  # fmt: skip
        unroll = WeightTiedFusion(base.config.replace(architecture="weight_tied", unroll_steps=steps))
        unroll.load_state_dict(base.state_dict())
        unroll.checkpoint_encoders(args.checkpoint)
        unroll.train()
        unroll_bytes, _ = saved_activation_bytes(unroll, inputs, labels)
        rows.append(Row(f"weight-tied unroll K={steps}", steps, steps, unroll_bytes / MB,
                        step_milliseconds(unroll, inputs, labels, args.repeats), args.batch, threads))  # fmt: skip

    header = f"{'K':>3}  {'unroll saved MB':>15} {'unroll step ms':>14}  {'implicit saved MB':>17} {'implicit step ms':>16}  {'implicit/unroll':>15}  {'implicit, K forced iters: MB / ms':>33}"
    print()
    print(header)
    print("-" * len(header))
    figures = []
    for steps in UNROLL_STEPS:
        unroll = next(r for r in rows if r.model.startswith("weight-tied") and r.unroll_steps == steps)
        forced = next(r for r in rows if r.model.startswith("implicit, solver forced") and r.unroll_steps == steps)
        ratio = implicit.saved_activation_mb / unroll.saved_activation_mb
        figures.append({"unroll_steps": steps, "implicit_over_unroll_saved": ratio,
                        "implicit_over_unroll_step_time": implicit.step_ms / unroll.step_ms})  # fmt: skip
        print(
            f"{steps:>3}  {unroll.saved_activation_mb:>15.2f} {unroll.step_ms:>14.1f}  {implicit.saved_activation_mb:>17.2f} "
            f"{implicit.step_ms:>16.1f}  {ratio:>15.3f}  {forced.saved_activation_mb:>20.2f} / {forced.step_ms:.1f}"
        )
    print(f"\nimplicit forward solve used {implicit.forward_f_evaluations} f-evaluations (default solver settings); "
          "its saved memory has no K and stays flat when its solver is forced to K iterations (last column).")  # fmt: skip
    last = figures[-1]
    verdict = "MET" if last["implicit_over_unroll_saved"] <= 1 / 5 else "MISSED"
    print(f"implicit / unroll saved activations at K={last['unroll_steps']}: {last['implicit_over_unroll_saved']:.3f} "
          f"(1/{1 / last['implicit_over_unroll_saved']:.0f})  -> target <= 1/5: {verdict}")  # fmt: skip
    encoders = encoder_saved_bytes(deq, inputs) / MB
    unroll_last = next(r for r in rows if r.model.startswith("weight-tied") and r.unroll_steps == UNROLL_STEPS[-1])
    fusion_ratio = (implicit.saved_activation_mb - encoders) / (unroll_last.saved_activation_mb - encoders)
    last["fusion_only_implicit_over_unroll_saved"] = fusion_ratio
    verdict = "MET" if fusion_ratio <= 1 / 5 else "MISSED"
    print(f"the encoders alone save {encoders:.2f} MB in both models; without them, implicit / unroll at "
          f"K={UNROLL_STEPS[-1]}: {implicit.saved_activation_mb - encoders:.2f} / {unroll_last.saved_activation_mb - encoders:.2f} MB "
          f"= {fusion_ratio:.3f}  -> target <= 1/5: {verdict}")  # fmt: skip
    if args.json:
        settings = {"checkpoint_encoders": args.checkpoint,
                    "batch": args.batch, "repeats": args.repeats, "threads": threads, "torch": torch.__version__,
                    "fusion_model": description, "inputs": source}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "rows": [asdict(r) for r in rows], "figures": figures}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
