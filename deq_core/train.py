"""Train a fusion model and write its folder.

    python -m deq_core.train --dataset inspection --model deq --out assets/models/inspection-deq

Model selection uses the validation split only (the reference script chose its
best checkpoint on the test set; we do not). Nothing is written until training
has finished, and the folder is written atomically.

``--out`` is checked before any data is loaded: a folder holding anything but a
model is never written over, and a model folder is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from deq_core.engine.checkpoint import CHECKSUMS, CONFIG, WEIGHTS, resolve_device, save_model
from deq_core.engine.config import ARCHITECTURES, ModelConfig, SolverSettings
from deq_core.data import MultimodalDataset, load_dataset
from deq_core.engine.encoders import EncoderSettings
from deq_core.engine.model import FusionModel, build_model


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation settings; the defaults are the ones the shipped models were trained with."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.1  # strong: Handwritten has 1440 training rows for ~650 features
    label_smoothing: float = 0.1
    jacobian_weight: float = 0.5  # DEQ only: keeps f contractive so solves stay short
    jacobian_probes: int = 1
    # DEQ only: the same penalty at points of the attribution path (inputs scaled by a
    # random alpha in [0, 1], the path from the zero / padding baseline), where an
    # unpenalised f can have two equilibria and Integrated Gradients cannot add up.
    path_jacobian_weight: float = 0.0
    # Each training case loses each modality with this probability (its input replaced by
    # the training mean, the product's "drop" corruption; at least one modality is kept),
    # so the fusion learns to decide from any subset, as late fusion's averaged heads do.
    modality_dropout: float = 0.0
    width: int = 128
    dropout: float = 0.5
    vector_hidden: int = 256
    # The image encoder's pooling (EncoderSettings.image_pooling): "grid" or "global".
    # Cross-validation chose "global" for the inspection baselines; every inspection DEQ
    # recipe tried with it missed an explanation or (issue 19) solver target, so that DEQ
    # keeps "grid" (docs/experiments.md).
    image_pooling: str = "grid"
    unroll_steps: int = 10
    seed: int = 0
    # Recompute conv-encoder activations in the backward (same gradients, bit for bit,
    # and 1/17 of the saved memory on inspection: see benchmarks/memory.py) at the cost of
    # one more encoder forward per step; --no-checkpoint-encoders trades back.
    checkpoint_encoders: bool = True
    # Exponential moving average of the weights (Polyak averaging), updated after every
    # optimiser step; validation, selection and the saved model use the average. 0 turns
    # it off. Averaging smooths out the last steps' noise, which early stopping on a
    # small validation split otherwise keeps; cross-validated on both datasets, it did
    # not help the shipped recipes (docs/experiments.md), so it stays an option.
    ema_decay: float = 0.0
    # Weight of an auxiliary loss that asks each modality's encoder features alone for the
    # class, through a training-only head per modality (a linear layer, as late fusion's
    # heads). The fused model still decides from z*_fuse; the heads are not saved. A
    # fused objective lets a model lean on its easiest modality and leave the others'
    # encoders undertrained ("modality imbalance", e.g. Peng et al., CVPR 2022); late
    # fusion, which supervises every encoder directly, does not have that problem.
    # Cross-validation chose it for the shipped baselines and, at 0.25 with modality
    # dropout 0.3, for the inspection DEQ; the Handwritten DEQ candidates it made missed
    # an explanation target, so that DEQ does without (docs/experiments.md).
    unimodal_weight: float = 0.0
    # Comma-separated names of the modalities whose encoders get that auxiliary loss;
    # empty: all of them. Made to test whether the deletion failures of the inspection
    # candidates came from supervising the note, which names the class on its own: with
    # the note left out they moved to other modality pairs instead (docs/experiments.md).
    unimodal_modalities: str = ""


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    jacobian_penalty: float
    val_loss: float
    val_accuracy: float
    val_iterations_median: float
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batches(n: int, size: int, generator: torch.Generator | None = None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, size):
        yield order[start : start + size]


@torch.no_grad()
def validate(model: FusionModel, data: MultimodalDataset, device: torch.device) -> tuple[float, float, float]:
    """Validation loss, accuracy and median solver iterations (0 for feed-forward models)."""
    model.eval()
    losses, correct, iterations = 0.0, 0, []
    for index in batches(len(data), 256):
        out = model.run([x[index].to(device) for x in data.inputs])
        labels = data.labels[index].to(device)
        losses += float(F.cross_entropy(out.logits, labels, reduction="sum"))
        correct += int((out.logits.argmax(dim=1) == labels).sum())
        if out.solve is not None:
            iterations.append(out.solve.iterations.float().cpu())
    median = float(torch.cat(iterations).median()) if iterations else 0.0
    return losses / len(data), correct / len(data), median


def train_model(
    dataset: str,
    architecture: str,
    settings: TrainingSettings = TrainingSettings(),
    device: str | torch.device = "auto",
    progress: bool = True,
    train_data: MultimodalDataset | None = None,
    val_data: MultimodalDataset | None = None,
) -> tuple[FusionModel, list[EpochRecord], dict]:
    """Train and return (model with the best validation weights, epoch records, metrics)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown model {architecture!r}; choose one of {ARCHITECTURES}")
    if not 0.0 <= settings.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {settings.ema_decay}")
    if settings.unimodal_weight < 0:
        raise ValueError(f"unimodal_weight must be >= 0, got {settings.unimodal_weight}")
    # Built before any data is loaded, so an unknown image pooling is refused at once.
    encoder = EncoderSettings(
        dropout=settings.dropout, vector_hidden=settings.vector_hidden, image_pooling=settings.image_pooling
    )
    device = resolve_device(device)
    seed_everything(settings.seed)
    train_data = train_data or load_dataset(dataset, "train")
    val_data = val_data or load_dataset(dataset, "val", modalities=train_data.modalities)
    unsupervised = unsupervised_modalities(settings.unimodal_modalities, [m.name for m in train_data.modalities])
    config = ModelConfig(
        architecture=architecture,
        modalities=train_data.modalities,
        class_names=train_data.class_names,
        width=settings.width,
        encoder=encoder,
        solver=SolverSettings(),
        unroll_steps=settings.unroll_steps,
        dataset=dataset,
        normal_class=train_data.normal_class,
    )
    model = build_model(config).to(device)
    model.checkpoint_encoders(settings.checkpoint_encoders)
    model.fit_statistics(train_data.inputs)
    unimodal_heads = None
    if settings.unimodal_weight > 0:
        with torch.random.fork_rng(devices=[]):  # the model's own random draws stay as without the heads
            torch.manual_seed(settings.seed)
            classes = len(config.class_names)
            heads = (nn.Sequential(nn.ReLU(), nn.Linear(config.width, classes)) for _ in config.modalities)
            unimodal_heads = nn.ModuleList(heads).to(device)
    parameters = list(model.parameters()) + (list(unimodal_heads.parameters()) if unimodal_heads is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = -(-len(train_data) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.epochs * steps_per_epoch
    )
    shuffle = torch.Generator().manual_seed(settings.seed)
    averaged = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
        if settings.ema_decay > 0
        else None
    )
    probes = settings.jacobian_probes if architecture == "deq" and settings.jacobian_weight > 0 else 0
    records: list[EpochRecord] = []
    best_key, best_state, best_epoch = None, None, -1
    started = time.perf_counter()
    bar = tqdm(range(settings.epochs), desc=f"{dataset}-{architecture}", disable=not progress, file=sys.stderr)
    for epoch in bar:
        model.train()
        total, penalty_total, seen = 0.0, 0.0, 0
        for index in batches(len(train_data), settings.batch_size, shuffle):
            inputs = [x[index].to(device) for x in train_data.inputs]
            labels = train_data.labels[index].to(device)
            dropped = None
            if settings.modality_dropout > 0:
                inputs, dropped = drop_modalities(model, inputs, settings.modality_dropout, shuffle)
            features = model.encode(inputs) if unimodal_heads is not None else None
            out = model.run(inputs, jacobian_probes=probes, features=features)
            loss = F.cross_entropy(out.logits, labels, label_smoothing=settings.label_smoothing)
            if unimodal_heads is not None:
                left_out = unsupervised.expand(len(index), -1) if dropped is None else dropped | unsupervised
                unimodal = unimodal_loss(unimodal_heads, features, labels, settings.label_smoothing, left_out)
                loss = loss + settings.unimodal_weight * unimodal
            if out.jacobian_penalty is not None:
                loss = loss + settings.jacobian_weight * out.jacobian_penalty
                penalty_total += out.jacobian_penalty.item() * len(index)
            if probes and settings.path_jacobian_weight > 0:
                alpha = torch.rand(len(index), generator=shuffle).to(device)
                with scaled_inputs(model, inputs, alpha) as path:
                    path_penalty = model.run(path, jacobian_probes=probes).jacobian_penalty
                loss = loss + settings.path_jacobian_weight * path_penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            schedule.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total += loss.item() * len(index)
            seen += len(index)
        judged = model if averaged is None else averaged.module
        val_loss, val_accuracy, val_iterations = validate(judged, val_data, device)
        record = EpochRecord(epoch, total / seen, penalty_total / seen, val_loss, val_accuracy, val_iterations,
                             time.perf_counter() - started)  # fmt: skip
        records.append(record)
        bar.set_postfix(val_acc=f"{val_accuracy:.3f}", val_loss=f"{val_loss:.3f}", iters=val_iterations)
        key = (val_accuracy, -val_loss)  # accuracy first, loss breaks ties
        if best_key is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = {k: v.detach().clone() for k, v in judged.state_dict().items()}
    model.load_state_dict(best_state)
    model.checkpoint_encoders(False)
    model.eval()
    metrics = {
        "dataset": dataset,
        "architecture": architecture,
        "selected_on": "val",
        "best_epoch": best_epoch,
        "val_accuracy": records[best_epoch].val_accuracy,
        "val_loss": records[best_epoch].val_loss,
        "train_cases": len(train_data),
        "val_cases": len(val_data),
        "val_ids": list(val_data.ids),
        "training_seconds": round(time.perf_counter() - started, 1),
        "settings": dataclasses.asdict(settings),
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    return model, records, metrics


def unsupervised_modalities(names: str, modalities: Sequence[str]) -> torch.Tensor:
    """``(1, N)`` mask of the modalities the auxiliary loss leaves out, from ``unimodal_modalities``.

    Empty ``names`` supervises every modality. Unknown or repeated names raise.
    """
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(modalities))
    if unknown:
        raise ValueError(f"unimodal_modalities: unknown modality {', '.join(unknown)}; choose from {', '.join(modalities)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"unimodal_modalities: {names!r} names a modality twice")
    return torch.tensor([[bool(chosen) and name not in chosen for name in modalities]])


def unimodal_loss(
    heads: nn.ModuleList,
    features: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
    dropped: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``heads[i]`` on modality i's features ``(b, N, d)``, averaged over cases and modalities.

    ``dropped`` ``(b, N)`` leaves out the modalities that modality dropout replaced by
    the training mean: there is nothing in them to classify.
    """
    losses = torch.stack(
        [
            F.cross_entropy(head(features[:, i]), labels, label_smoothing=label_smoothing, reduction="none")
            for i, head in enumerate(heads)
        ],
        dim=1,
    )
    if dropped is None:
        return losses.mean()
    kept = (~dropped).to(losses.device, losses.dtype)
    return (losses * kept).sum() / kept.sum().clamp_min(1)  # every supervised modality dropped: no loss, not NaN


def drop_modalities(
    model: FusionModel, inputs: Sequence[torch.Tensor], probability: float, generator: torch.Generator
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each case's modalities replaced by their training mean with ``probability``, keeping at least one.

    Returns the inputs and the ``(batch, N)`` mask of what was dropped.
    """
    batch = len(inputs[0])
    dropped = torch.rand(batch, len(inputs), generator=generator) < probability
    dropped[dropped.all(dim=1)] = False  # a case with nothing left keeps everything
    out = []
    for x, mean, mask in zip(inputs, model.input_means(), dropped.T):
        mask = mask.to(x.device).reshape(-1, *([1] * (x.dim() - 1)))
        out.append(torch.where(mask, mean.to(x.dtype).expand_as(x), x))
    return out, dropped


@contextlib.contextmanager
def scaled_inputs(model: FusionModel, inputs: Sequence[torch.Tensor], alpha: torch.Tensor):
    """The inputs at ``alpha`` along the straight path from the zero / padding baseline.

    Float modalities are scaled; text modalities keep their tokens (they set the
    padding mask) and their embedding layer's output is scaled, as the attribution
    path does. Yields the inputs to run the model on inside the block.
    """
    handles, scaled = [], []
    for i, (modality, x) in enumerate(zip(model.config.modalities, inputs)):
        if modality.kind == "text":
            scale = alpha[:, None, None]
            hook = model.encoders[i].embedding.register_forward_hook(lambda module, args, out, s=scale: out * s)
            handles.append(hook)
            scaled.append(x)
        else:
            scaled.append(x * alpha.reshape(-1, *[1] * (x.dim() - 1)).to(x.dtype))
    try:
        yield scaled
    finally:
        for handle in handles:
            handle.remove()


def curves_csv(records: list[EpochRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in dataclasses.fields(EpochRecord)])
    writer.writeheader()
    for record in records:
        writer.writerow(dataclasses.asdict(record))
    return buffer.getvalue()


# What save_model writes for train: a model folder holding only these is safe to replace.
MODEL_FILES = frozenset({WEIGHTS, CONFIG, CHECKSUMS, "metrics.json", "curves.csv"})


class OutFolderError(ValueError):
    """``--out`` names a place where writing the model would lose someone's files."""


def check_out_folder(out: str | Path, force: bool = False) -> Path:
    """The absolute folder ``--out`` names, once it is safe to write a model there.

    Called before training, so a refusal costs nothing, and again just before
    writing, in case the folder changed meanwhile. ``.`` and ``..`` resolve to the
    folder they name (``Path(".").name`` is empty, which save_model cannot use).
    Refused: a file; a non-empty folder that is not a model folder (config.json
    and weights.safetensors), whatever the flags; a model folder holding files
    this command would not write again (they would be lost); a model folder
    without ``force``; a model folder that is (or holds) the working directory,
    whose replacement would delete the shell's folder. An empty folder is accepted.
    """
    folder = Path(out).expanduser().resolve()
    if not folder.name:
        raise OutFolderError(f"--out {out}: cannot write a model folder at the file system root")
    if not folder.exists():
        if folder.is_symlink():
            raise OutFolderError(f"--out {out}: is a broken symbolic link")
        return folder
    if not folder.is_dir():
        raise OutFolderError(f"--out {out}: {folder} is a file, not a folder; choose a new folder name")
    entries = sorted(entry.name for entry in folder.iterdir())
    if not entries:
        return folder
    if not {CONFIG, WEIGHTS} <= set(entries):
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise OutFolderError(
            f"--out {out}: {folder} is not empty and is not a model folder (it holds {shown}); "
            "nothing was written. Choose a new or empty folder."
        )
    foreign = [name for name in entries if name not in MODEL_FILES or not (folder / name).is_file()]
    if foreign:
        raise OutFolderError(
            f"--out {out}: {folder} holds a model and also {', '.join(foreign)}, which replacing it "
            "would delete; move them out first, or choose a new folder."
        )
    if not force:
        raise OutFolderError(f"--out {out}: {folder} already holds a model; add --force to replace it")
    cwd = Path.cwd().resolve()
    if cwd == folder or folder in cwd.parents:
        raise OutFolderError(
            f"--out {out}: {folder} holds a model and the current directory; replacing it would leave "
            f"this shell in a deleted folder. Run from {folder.parent} with --out {folder.name} --force."
        )
    return folder


def write_model_folder(model: FusionModel, folder: Path, extra_files: dict[str, str]) -> Path:
    """Write the model to ``folder`` (checked by check_out_folder): complete beside it, then renamed into place.

    save_model writes a temporary sibling folder and renames it over ``folder``,
    removing the old one only after the new one is complete. When ``folder`` is the
    working directory (or holds it) that rename would leave the shell in a deleted
    folder, so the complete sibling's files are moved into it one by one instead
    (only an empty folder gets here: check_out_folder refuses replacing a model there).
    """
    cwd = Path.cwd().resolve()
    if not (folder.exists() and (cwd == folder or folder in cwd.parents)):
        return save_model(model, folder, extra_files=extra_files)
    staging = save_model(model, folder.with_name(f".{folder.name}-staging-{os.getpid()}"), extra_files=extra_files)
    try:
        for name in sorted(os.listdir(staging), key=lambda n: n == CHECKSUMS):  # checksums last: loadable once complete
            os.replace(staging / name, folder / name)
    finally:
        for leftover in staging.iterdir() if staging.exists() else ():
            leftover.unlink()
        if staging.exists():
            staging.rmdir()
    return folder


def main(argv: list[str] | None = None) -> int:
    defaults = TrainingSettings()
    parser = argparse.ArgumentParser(prog="python -m deq_core.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="handwritten, inspection, or a dataset folder")
    parser.add_argument("--model", required=True, choices=ARCHITECTURES)
    parser.add_argument("--out", required=True, type=Path, help="model folder to write (new, empty, or a model with --force)")
    parser.add_argument("--force", action="store_true", help="replace --out when it already holds a model")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    for field in dataclasses.fields(TrainingSettings):
        default = getattr(defaults, field.name)
        if isinstance(default, bool):  # --flag / --no-flag: type=bool would read "False" as True
            parser.add_argument(f"--{field.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = TrainingSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingSettings)})
    try:
        check_out_folder(args.out, args.force)  # before training: a refusal must not cost a training run
        model, records, metrics = train_model(args.dataset, args.model, settings, args.device, not args.quiet)
        out = check_out_folder(args.out, args.force)  # again: the folder may have changed while training
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    extra_files = {"metrics.json": json.dumps(metrics, indent=2) + "\n", "curves.csv": curves_csv(records)}
    folder = write_model_folder(model, out, extra_files)
    print(f"wrote {folder} (best epoch {metrics['best_epoch']}, val accuracy {metrics['val_accuracy']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
