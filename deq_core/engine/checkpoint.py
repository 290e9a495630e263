"""Save and load a model as a folder: ``weights.safetensors`` + ``config.json`` (never pickle).

``checksums.json`` holds the SHA-256 of both files; loading verifies it, so a
file edited after saving is rejected, and reports can cite the hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deq_core.engine.adapter import (
    ADAPTER,
    AdaptedDEQ,
    TrustCode,
    build_user_module,
    code_digests,
    is_adapter_folder,
    read_adapter,
)
from deq_core.engine.config import ModelConfig, check_config_limits
from deq_core.engine.modality import show
from deq_core.engine.model import FusionModel, build_model

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
CHECKSUMS = "checksums.json"
CODE = "code"  # checksums.json's entry for an adapter's code files: {path relative to the folder: SHA-256}


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
    """Short identity of a model folder: SHA-256 over its weights and config hashes.

    A user's model (adapter.json) adds adapter.json and every code file (``code_digests``):
    the code that runs is part of what the model is, so a swapped .py changes the
    checksum and a report made before it no longer verifies.
    """
    folder = Path(folder)
    combined = sha256_file(folder / WEIGHTS) + sha256_file(folder / CONFIG)
    if is_adapter_folder(folder):  # the factory named and its code are part of what the model is
        combined += sha256_file(folder / ADAPTER)
        combined += "".join(f"{name}:{sha}" for name, sha in sorted(code_digests(folder).items()))
    return hashlib.sha256(combined.encode()).hexdigest()


def model_files(folder: str | Path) -> dict[str, str]:
    """SHA-256 of each file that makes the model (weights, config; an adapter's adapter.json and code), by name.

    What a report records, so its verification names the very file that changed.
    """
    folder = Path(folder)
    files = {name: sha256_file(folder / name) for name in (WEIGHTS, CONFIG)}
    if is_adapter_folder(folder):
        files[ADAPTER] = sha256_file(folder / ADAPTER)
        files.update(code_digests(folder))
    return files


def state_checksum(model: torch.nn.Module) -> str:
    """Identity of a model in memory (no folder to hash): SHA-256 over its config and every tensor of its state."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_config(folder: str | Path, verify_checksums: bool = True) -> ModelConfig:
    """The folder's config, trusted only after its bytes match checksums.json (when verified).

    In that order: the file sizes (``MAX_CONFIG_BYTES``, ``MAX_CHECKSUMS_BYTES``), the
    config's SHA-256, its nesting depth, its numbers (``config.check_config_limits``),
    the weights it asks for (``MAX_WEIGHTS``). Nothing is allocated for a folder that
    fails, and every failure is a ``ModelLoadError`` naming the file and what is wrong.
    """
    return _checked_config(Path(folder), verify_checksums)[0]


def verify_folder(folder: str | Path) -> ModelConfig:
    """Every check of ``load_model`` that needs no tensor: sizes, checksums, limits. Returns the config.

    For listing model folders: a broken one is named without loading (or allocating) anything.
    """
    folder = Path(folder)
    weights_path = _weights_path(folder)
    if is_adapter_folder(folder):  # the user's code is not run to list it: the weights' size is its to check
        read_adapter(folder)
        config, recorded, code = _adapter_config(folder, verify_checksums=True)
        _check_digest(weights_path, sha256_file(weights_path), recorded[WEIGHTS])
        return config
    config, recorded, expected = _checked_config(folder, verify_checksums=True)
    _check_weights_file(weights_path, expected, recorded[WEIGHTS])
    return config


def load_model(folder: str | Path, device: str | torch.device = "auto", verify_checksums: bool = True,
               trust_code: TrustCode = False) -> FusionModel:  # fmt: skip
    """Rebuild a model from its folder, in eval mode, on ``device``.

    Raises ``ModelLoadError`` naming the file or tensor at fault when the folder is
    incomplete, a file was altered after saving, a file or a number of the config is
    beyond its limits, or the weights do not fit the config. The config is checked
    (``load_config``) and the weights file's size bounded before any tensor is allocated.

    A folder with ``adapter.json`` is a user's own model (``deq_core.engine.adapter``): its
    factory is imported only when ``trust_code`` covers the folder (``True``, or a
    ``CodeTrust`` granted for it), and the result is an ``AdaptedDEQ``. Its code files are
    checked against checksums.json like the weights.
    """
    folder = Path(folder)
    if is_adapter_folder(folder):
        return _load_adapted(folder, device, verify_checksums, trust_code)
    weights_path = _weights_path(folder)
    config, recorded, expected = _checked_config(folder, verify_checksums)
    _check_weights_file(weights_path, expected, recorded.get(WEIGHTS) if verify_checksums else None)
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(f"{weights_path}: unreadable safetensors file ({error})") from error
    model = build_model(config)
    expected = model.state_dict()
    _check_tensors(weights_path, tensors, expected, f"config {config.architecture!r}")
    model.load_state_dict(tensors)
    return model.to(resolve_device(device)).eval()


def _check_tensors(weights_path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(
            f"{weights_path}: weights do not fit {what}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise ModelLoadError(
                f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)} {tensor.dtype}, "
                f"{what} needs {tuple(expected[name].shape)} {expected[name].dtype}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelLoadError(f"{weights_path}: tensor {name!r} holds NaN or infinite values")


def _load_adapted(folder: Path, device: str | torch.device, verify_checksums: bool, trust_code: TrustCode) -> AdaptedDEQ:
    """A user's model folder: adapter.json and the code checked against checksums.json, the factory run only when trusted."""
    weights_path = _weights_path(folder)
    read_adapter(folder)
    config, recorded, code = _adapter_config(folder, verify_checksums)
    user = build_user_module(folder, config, trust_code, digests=code)
    expected = user.state_dict()
    largest = sum(t.numel() * t.element_size() for t in expected.values()) + SAFETENSORS_HEADER_BYTES
    if weights_path.stat().st_size > largest:
        raise ModelLoadError(f"{weights_path}: {weights_path.stat().st_size} bytes, larger than the {largest} bytes "
                             "the adapter's tensors and a header can fill")  # fmt: skip
    if verify_checksums:
        _check_digest(weights_path, sha256_file(weights_path), recorded[WEIGHTS])
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(f"{weights_path}: unreadable safetensors file ({error})") from error
    _check_tensors(weights_path, tensors, expected, f"the adapter's module {type(user).__name__}")
    user.load_state_dict(tensors)
    return AdaptedDEQ(config, user).to(resolve_device(device)).eval()


def _adapter_config(folder: Path, verify_checksums: bool) -> tuple[ModelConfig, dict[str, str], dict[str, str] | None]:
    """config.json and checksums.json of an adapter folder: (config, recorded checksums, recorded code digests).

    With ``verify_checksums``, adapter.json and every code file must match what
    checksums.json records (``_check_code``). A folder saved before the code was recorded
    (no ``"code"`` entry) still loads, with a warning that its code is not checked; the code
    digests returned are then None. Without ``verify_checksums`` they are None too.
    """
    path = folder / CONFIG
    if not path.is_file():
        raise ModelLoadError(f"{path}: no model config here (is {folder} a model folder?)")
    raw = _read_limited(path, MAX_CONFIG_BYTES, "a model config")
    recorded: dict[str, str] = {}
    code = None
    if verify_checksums:
        recorded = _recorded_checksums(folder)
        _check_digest(path, hashlib.sha256(raw).hexdigest(), recorded[CONFIG])
        listed = _parse_json(folder / CHECKSUMS, _read_limited(folder / CHECKSUMS, MAX_CHECKSUMS_BYTES, "checksums"), "checksums")
        if not isinstance(listed.get(ADAPTER), str):
            raise ModelLoadError(f"{folder / CHECKSUMS}: no checksum recorded for {ADAPTER}")
        _check_digest(folder / ADAPTER, sha256_file(folder / ADAPTER), listed[ADAPTER].lower())
        code = _check_code(folder, listed.get(CODE))
    data = _parse_json(path, raw, "config")
    try:
        check_config_limits(data)
        config = ModelConfig.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelLoadError(f"{path}: invalid config: {error}") from error
    if config.architecture != "deq":
        raise ModelLoadError(f"{path}: invalid config: an adapter's architecture must be 'deq', not {config.architecture!r}")
    return config, recorded, code


def _check_code(folder: Path, recorded: object) -> dict[str, str] | None:
    """The adapter's code files against checksums.json's ``"code"``; each failure names the file. Returns the digests.

    A file added (a module the factory could import instead), missing, or changed since
    saving is refused. None (old folder, nothing recorded): a warning, the code unchecked.
    """
    if recorded is None:
        warnings.warn(f"{folder / CHECKSUMS}: records no checksums of the adapter's code files (saved by an older "
                      "version): the code is not checked. Save the model again with save_adapter", stacklevel=3)  # fmt: skip
        return None
    if not isinstance(recorded, dict) or not all(isinstance(v, str) and _SHA256.fullmatch(v) for v in recorded.values()):
        raise ModelLoadError(f"{folder / CHECKSUMS}: \"{CODE}\" must map each code file to its SHA-256 hex digest")
    recorded = {str(k): v.lower() for k, v in recorded.items()}
    actual = code_digests(folder)
    for name in sorted(set(actual) - set(recorded)):
        raise ModelLoadError(f"{folder / name}: not recorded in {CHECKSUMS}; a file added to the model's code after "
                             "it was saved (remove it, or save the model again with save_adapter)")  # fmt: skip
    for name in sorted(set(recorded) - set(actual)):
        raise ModelLoadError(f"{folder / name}: recorded in {CHECKSUMS} but missing from the model's code")
    for name in sorted(actual):
        _check_digest(folder / name, actual[name], recorded[name])
    return recorded


def save_adapter(module: torch.nn.Module, config: ModelConfig, folder: str | Path, factory: str, code: str = ".",
                 options: dict | None = None, extra_files: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Write a user's model folder: weights, config, adapter.json and the checksums of these and the code files.

    ``code`` (relative to ``folder``) is where the factory's package is imported from; the
    caller puts the code there first (or names a folder above that holds it, inside
    ``folder``): its files are recorded in checksums.json, so an edited one is refused.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / code).is_dir():
        raise ModelLoadError(f"{folder / code}: the code folder does not exist; copy your package there before saving")
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    adapter = {"factory": factory, "code": code, "options": options or {}}
    (folder / ADAPTER).write_text(json.dumps(adapter, indent=2) + "\n")
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text)
    write_adapter_checksums(folder)
    return folder


def write_adapter_checksums(folder: str | Path) -> Path:
    """checksums.json of an adapter folder: weights, config, adapter.json and each code file as they are now.

    ``save_adapter`` calls it; call it yourself after copying your code into the folder later,
    or to record the code of a folder saved by an older version (which recorded none).
    """
    folder = Path(folder)
    checksums: dict[str, object] = {name: sha256_file(folder / name) for name in (WEIGHTS, CONFIG, ADAPTER)}
    checksums[CODE] = code_digests(folder)
    (folder / CHECKSUMS).write_text(json.dumps(checksums, indent=2) + "\n")
    return folder / CHECKSUMS


# --------------------------------------------------------------------------- checks before trusting a folder
# config.json of a shipped model is 3.4 KB, checksums.json 181 bytes: the limits leave room
# for a 50000-token vocabulary and still keep a file from filling the server's memory.
MAX_CONFIG_BYTES = 1 << 20
MAX_CHECKSUMS_BYTES = 1 << 16
MAX_JSON_DEPTH = 16  # a config nests 4 deep (modalities > entry > shape); json.loads recurses per level
MAX_WEIGHTS = 1 << 26  # parameters and buffers: 256 MB of float32 (a shipped model has 0.6 M)
SAFETENSORS_HEADER_BYTES = 1 << 20  # the JSON header naming the tensors, beyond their data
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _weights_path(folder: Path) -> Path:
    weights_path = folder / WEIGHTS
    if not weights_path.is_file():
        raise ModelLoadError(f"{weights_path}: weights file missing")
    return weights_path


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    """The file's bytes, refused by its size before it is read (and never more than ``limit`` read)."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise ModelLoadError(f"{path}: {size} bytes, over the limit of {limit} bytes for {what}")
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as error:
        raise ModelLoadError(f"{path}: cannot be read ({error})") from error
    if len(raw) > limit:  # grew since stat
        raise ModelLoadError(f"{path}: over the limit of {limit} bytes for {what}")
    return raw


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``text``'s arrays and objects nest, counted without recursion (stops past ``limit``).

    Strings are blanked first, so a bracket inside one is not counted; ``json.loads``
    recurses once per level, so a text 100000 levels deep must be refused before it.
    """
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def _parse_json(path: Path, raw: bytes, what: str) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ModelLoadError(f"{path}: invalid {what}: not UTF-8 text ({error})") from error
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ModelLoadError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels (a model folder's {what} nests at most 4)")
    try:
        return json.loads(text)
    except ValueError as error:
        raise ModelLoadError(f"{path}: invalid {what}: not valid JSON ({error})") from error


def _recorded_checksums(folder: Path) -> dict[str, str]:
    """checksums.json, size- and depth-checked: a SHA-256 hex digest for the weights and the config."""
    path = folder / CHECKSUMS
    if not path.is_file():
        raise ModelLoadError(f"{path}: checksums missing; the folder cannot be verified")
    recorded = _parse_json(path, _read_limited(path, MAX_CHECKSUMS_BYTES, "checksums"), "checksums")
    if not isinstance(recorded, dict):
        raise ModelLoadError(f"{path}: unreadable (must be a JSON object of file names and SHA-256s)")
    for name in (WEIGHTS, CONFIG):
        if name not in recorded:
            raise ModelLoadError(f"{path}: no checksum recorded for {name}")
        if not isinstance(recorded[name], str) or not _SHA256.fullmatch(recorded[name]):
            raise ModelLoadError(f"{path}: the checksum of {name} is not a SHA-256 hex digest: {show(recorded[name])}")
    return {name: recorded[name].lower() for name in (WEIGHTS, CONFIG)}


def _check_digest(path: Path, actual: str, recorded: str) -> None:
    if actual != recorded:
        raise ModelLoadError(
            f"{path}: SHA-256 {actual[:16]}... differs from the recorded {recorded[:16]}...; "
            "the file was changed after the model was saved"
        )


def _checked_config(folder: Path, verify_checksums: bool) -> tuple[ModelConfig, dict[str, str], dict[str, int]]:
    """(config, recorded checksums or {}, bytes of each tensor the config asks for)."""
    path = folder / CONFIG
    if not path.is_file():
        raise ModelLoadError(f"{path}: no model config here (is {folder} a model folder?)")
    raw = _read_limited(path, MAX_CONFIG_BYTES, "a model config")
    recorded = _recorded_checksums(folder) if verify_checksums else {}
    if verify_checksums:
        _check_digest(path, hashlib.sha256(raw).hexdigest(), recorded[CONFIG])  # the very bytes parsed next
    data = _parse_json(path, raw, "config")
    try:
        check_config_limits(data)
        config = ModelConfig.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelLoadError(f"{path}: invalid config: {error}") from error
    return config, recorded, _expected_tensors(path, config)


class _NoRandomInit(torch.overrides.TorchFunctionMode):
    """Skips ``normal_`` (a skeleton needs shapes, not values): on the meta device it runs a
    Python kernel whose first call imports torch._dynamo, 1.5 s that loading never needed."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.normal_, torch.nn.init.normal_):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def _expected_tensors(path: Path, config: ModelConfig) -> dict[str, int]:
    """Bytes of each tensor the config's model holds, from a model built on the meta device (no memory)."""
    with torch.device("meta"), _NoRandomInit():
        skeleton = build_model(config)
    sizes = {name: t.numel() * t.element_size() for name, t in skeleton.state_dict().items()}
    count = sum(t.numel() for t in skeleton.state_dict().values())
    if count > MAX_WEIGHTS:
        raise ModelLoadError(
            f"{path}: invalid config: it asks for {count} weights (parameters and buffers), "
            f"over the limit of {MAX_WEIGHTS}"
        )
    return sizes


def _check_weights_file(weights_path: Path, expected: dict[str, int], recorded: str | None) -> None:
    """The weights file's size fits the config (checked before hashing it), then its SHA-256 when recorded."""
    largest = sum(expected.values()) + SAFETENSORS_HEADER_BYTES
    try:
        size = weights_path.stat().st_size
    except OSError as error:
        raise ModelLoadError(f"{weights_path}: cannot be read ({error})") from error
    if size > largest:
        raise ModelLoadError(
            f"{weights_path}: {size} bytes, larger than the {largest} bytes the config's tensors and a header can fill"
        )
    if recorded is not None:
        try:
            actual = sha256_file(weights_path)
        except OSError as error:
            raise ModelLoadError(f"{weights_path}: cannot be read ({error})") from error
        _check_digest(weights_path, actual, recorded)
