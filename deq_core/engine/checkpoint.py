"""Save and load a model as a folder: ``weights.safetensors`` + ``config.json`` (never pickle).

``checksums.json`` holds the SHA-256 of both files; loading verifies it, so a
file edited after saving is rejected, and reports can cite the hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deq_core.engine.config import ModelConfig
from deq_core.engine.model import FusionModel, build_model

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
CHECKSUMS = "checksums.json"


class ModelLoadError(ValueError):
    """A model folder that cannot be trusted or does not fit its config."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_model(model: FusionModel, folder: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write the model folder atomically (a temporary folder renamed into place).

    ``extra_files`` maps file names to text written beside the weights (metrics,
    training curves). An existing folder is replaced only once the new one is complete.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, staging / WEIGHTS)
        (staging / CONFIG).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
        checksums = {name: sha256_file(staging / name) for name in (WEIGHTS, CONFIG)}
        (staging / CHECKSUMS).write_text(json.dumps(checksums, indent=2) + "\n")
        if folder.exists():
            backup = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(folder, backup)
            os.replace(staging, folder)
            shutil.rmtree(backup)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def model_checksum(folder: str | Path) -> str:
    """Short identity of a model folder: SHA-256 over its weights and config hashes."""
    folder = Path(folder)
    combined = sha256_file(folder / WEIGHTS) + sha256_file(folder / CONFIG)
    return hashlib.sha256(combined.encode()).hexdigest()


def load_config(folder: str | Path) -> ModelConfig:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise ModelLoadError(f"{path}: no model config here (is {Path(folder)} a model folder?)")
    try:
        return ModelConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{path}: invalid config: {error}") from error


def load_model(folder: str | Path, device: str | torch.device = "auto", verify_checksums: bool = True) -> FusionModel:
    """Rebuild a model from its folder, in eval mode, on ``device``.

    Raises ``ModelLoadError`` naming the file or tensor at fault when the folder is
    incomplete, a file was altered after saving, or the weights do not fit the config.
    """
    folder = Path(folder)
    weights_path = folder / WEIGHTS
    if not weights_path.is_file():
        raise ModelLoadError(f"{weights_path}: weights file missing")
    if verify_checksums:
        _verify_checksums(folder)
    config = load_config(folder)
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(f"{weights_path}: unreadable safetensors file ({error})") from error
    model = build_model(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(
            f"{weights_path}: weights do not fit config {config.architecture!r}: "
            f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise ModelLoadError(
                f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)} {tensor.dtype}, "
                f"the config needs {tuple(expected[name].shape)} {expected[name].dtype}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelLoadError(f"{weights_path}: tensor {name!r} holds NaN or infinite values")
    model.load_state_dict(tensors)
    return model.to(resolve_device(device)).eval()


def _verify_checksums(folder: Path) -> None:
    path = folder / CHECKSUMS
    if not path.is_file():
        raise ModelLoadError(f"{path}: checksums missing; the folder cannot be verified")
    try:
        recorded = json.loads(path.read_text())
    except ValueError as error:
        raise ModelLoadError(f"{path}: unreadable ({error})") from error
    for name in (WEIGHTS, CONFIG):
        if name not in recorded:
            raise ModelLoadError(f"{path}: no checksum recorded for {name}")
        actual = sha256_file(folder / name)
        if actual != recorded[name]:
            raise ModelLoadError(
                f"{folder / name}: SHA-256 {actual[:16]}... differs from the recorded {recorded[name][:16]}...; "
                "the file was changed after the model was saved"
            )
