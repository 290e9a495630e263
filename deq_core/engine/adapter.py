"""Your own DEQ fusion model behind the lens: a model folder with ``adapter.json``.

A folder the lens opens as a user's model holds

* ``adapter.json``: ``{"factory": "package.module:build", "code": "."}``; ``code`` is the
  folder (relative to the model folder) put first on ``sys.path`` to import the factory;
* ``config.json``: a ``ModelConfig`` describing what the lens must know (modalities, class
  names, dataset, ``width`` = the state width d, the solver settings the lens solves with;
  ``architecture`` is ``"deq"``; the encoder settings are not read);
* ``weights.safetensors``: the factory's module's ``state_dict`` (no pickle);
* ``checksums.json``: SHA-256 of the three files above and, under ``"code"``, of every file
  of the code folder (``save_adapter`` writes it; ``code_files`` says which).

``build(config: ModelConfig, options: dict) -> torch.nn.Module`` returns the user's module,
which provides (see ``UserDEQ``):

* ``encode(inputs) -> (b, N, d)`` features, one row per modality in config order;
* ``f(z, features) -> z``: the fusion update on the state ``(b, N + 1, d)`` (rows 0..N-1 the
  per-modality states, row N the fused state the head reads);
* ``head(fused) -> logits``: ``(b, d) -> (b, C)``;

and optionally ``gates(z, features) -> (gates, purified)`` (each ``(b, N, d)``, for the gate
view), ``encode_modality(i, x) -> (b, d)`` (robustness sweeps re-encode one modality),
``embedding(i) -> nn.Embedding`` (for text modalities: attributions interpolate embeddings),
``input_means()`` and ``input_scales()`` (the training statistics corruptions use).

Importing the factory runs the user's code, so loading refuses unless ``trust_code`` covers
the folder: ``True`` (the caller trusts the folder it passes), or a ``CodeTrust`` for that
folder and its code as they were when leave was given (the command line's ``--trust-code``
grants one for ``--model`` only; the app's sidebar setting one per browser session).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

import torch
from torch import nn

from deq_core.engine.config import ModelConfig, SolverSettings
from deq_core.engine.modality import Inputs
from deq_core.engine.model import FusionOutput, solve_equilibrium

ADAPTER = "adapter.json"
MAX_ADAPTER_BYTES = 1 << 14
MAX_CODE_FILES = 500  # files under an adapter's code folder the checksums cover (the example has 2)
MODEL_FILES = ("weights.safetensors", "config.json", "checksums.json", ADAPTER)
_FACTORY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


class GatesUnavailable(NotImplementedError):
    """The adapter provides no ``gates``: the per-iteration gate view cannot be drawn for it."""


@runtime_checkable
class UserDEQ(Protocol):
    """What a user's module provides (the optional members are listed in the module docstring)."""

    def encode(self, inputs: Inputs) -> torch.Tensor: ...

    def f(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor: ...

    def head(self, fused: torch.Tensor) -> torch.Tensor: ...


def is_adapter_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is a user's model (it has ``adapter.json``)."""
    return (Path(folder) / ADAPTER).is_file()


def read_adapter(folder: str | Path) -> dict[str, Any]:
    """adapter.json, checked: ``factory`` is ``package.module:callable``, ``code`` stays inside the folder."""
    from deq_core.engine.checkpoint import ModelLoadError

    path = Path(folder) / ADAPTER
    try:
        raw = path.read_bytes()[: MAX_ADAPTER_BYTES + 1]
    except OSError as error:
        raise ModelLoadError(f"{path}: cannot be read ({error})") from error
    if len(raw) > MAX_ADAPTER_BYTES:
        raise ModelLoadError(f"{path}: over the limit of {MAX_ADAPTER_BYTES} bytes for an adapter file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelLoadError(f"{path}: invalid adapter: not valid JSON ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("factory"), str) or not _FACTORY.fullmatch(data["factory"]):
        raise ModelLoadError(f"{path}: invalid adapter: \"factory\" must name package.module:build")
    code = data.get("code", ".")
    root = Path(folder).resolve()
    if not isinstance(code, str) or not (root / code).resolve().is_relative_to(root):
        raise ModelLoadError(f"{path}: invalid adapter: \"code\" must be a folder inside the model folder")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise ModelLoadError(f"{path}: invalid adapter: \"options\" must be a JSON object")
    return {"factory": data["factory"], "code": code, "options": options}


def code_files(folder: str | Path) -> list[Path]:
    """The files of the adapter's ``code`` folder the checksums cover, sorted; what importing the factory may read.

    Every file under ``code`` except ``__pycache__`` folders, hidden files and, when ``code``
    is the model folder itself, the model's own files (``MODEL_FILES``, checked on their own).
    """
    from deq_core.engine.checkpoint import ModelLoadError

    folder = Path(folder)
    root = (folder / read_adapter(folder)["code"]).resolve()
    if not root.is_dir():
        raise ModelLoadError(f"{folder / ADAPTER}: the code folder {root} does not exist")
    top = folder.resolve()
    found = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p == "__pycache__" or p.startswith(".") for p in parts) or not path.is_file():
            continue
        if path.parent == top and path.name in MODEL_FILES:
            continue
        found.append(path)
        if len(found) > MAX_CODE_FILES:
            raise ModelLoadError(f"{root}: over {MAX_CODE_FILES} files in the adapter's code folder; "
                                 "point \"code\" at the folder that holds only your package")  # fmt: skip
    return found


def code_digests(folder: str | Path) -> dict[str, str]:
    """SHA-256 of each of ``code_files``, by its path relative to the model folder (posix): what checksums.json records."""
    from deq_core.engine.checkpoint import sha256_file

    top = Path(folder).resolve()
    return {path.relative_to(top).as_posix(): sha256_file(path) for path in code_files(folder)}


def code_checksum(folder: str | Path) -> str:
    """SHA-256 over adapter.json and every code file (names and contents): the code that opening the folder runs."""
    digest = hashlib.sha256((Path(folder) / ADAPTER).read_bytes())
    for name, sha in sorted(code_digests(folder).items()):
        digest.update(f"\n{name}\0{sha}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CodeTrust:
    """Leave to run one model folder's own code: the folder and its code's ``code_checksum`` when leave was given.

    It covers that folder only, and only while its code is unchanged: another folder, or
    the same folder after a file of its code was swapped, is refused (``covers``).
    """

    folder: str
    code_sha256: str

    @classmethod
    def grant(cls, folder: str | Path) -> "CodeTrust":
        """Trust ``folder``'s code as it is now."""
        return cls(str(Path(folder).resolve()), code_checksum(folder))

    def covers(self, folder: str | Path) -> bool:
        return str(Path(folder).resolve()) == self.folder and code_checksum(folder) == self.code_sha256


TrustCode = Union[bool, CodeTrust, Iterable[CodeTrust], None]


def trust_for(flag: bool, folder: str | Path) -> CodeTrust | bool:
    """What a command line's ``--trust-code`` grants: leave for the ``--model`` folder's code only (False without it)."""
    return CodeTrust.grant(folder) if flag and is_adapter_folder(folder) else False


_ALLOWED: contextvars.ContextVar[tuple[CodeTrust, ...]] = contextvars.ContextVar("allowed_code", default=())


@contextlib.contextmanager
def allowed_code(*grants: CodeTrust) -> Iterator[None]:
    """Within the block (this thread or task only), loads that pass no ``trust_code`` may run these folders' code.

    For code that opens a model folder itself and takes no ``trust_code`` (``deq_core.edge``'s
    export and check; its ``--trust-code`` wraps them in this): the leave still
    covers each granted folder and its code as they were when granted, nothing else.
    """
    token = _ALLOWED.set(_ALLOWED.get() + tuple(grants))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def _refusal(folder: Path, trust_code: TrustCode, factory: str) -> str | None:
    """None when ``trust_code`` (or an enclosing ``allowed_code``) lets ``folder``'s code run, else why not.

    ``True``: the caller trusts this folder.
    """
    if trust_code is True:
        return None
    grants = [trust_code] if isinstance(trust_code, CodeTrust) else list(trust_code or ())
    grants += list(_ALLOWED.get())
    if any(isinstance(g, CodeTrust) and g.covers(folder) for g in grants):
        return None
    base = f"{folder / ADAPTER}: this model is your own code ({factory}); opening it runs that code. "
    if any(isinstance(g, CodeTrust) and g.folder == str(folder.resolve()) for g in grants):
        return base + "Its code changed since you allowed it to run: allow it again if you trust the new code"
    if grants:
        return base + f"Leave to run code was given for {', '.join(g.folder for g in grants)}, not for this folder"
    return base + "Pass --trust-code (command line) or tick 'Run model code' (app sidebar) if you trust it"


def build_user_module(folder: str | Path, config: ModelConfig, trust_code: TrustCode = False,
                      digests: dict[str, str] | None = None) -> nn.Module:  # fmt: skip
    """Import the adapter's factory (only when ``trust_code`` covers the folder) and build the user's module.

    ``digests``: the recorded SHA-256 of each code file (``code_digests``'s keys); each
    source is checked against it as it is imported, so a file swapped after the folder's
    checks still does not run. None: not checked (an old folder, or checksums not verified).
    """
    from deq_core.engine.checkpoint import ModelLoadError

    folder = Path(folder)
    adapter = read_adapter(folder)
    refusal = _refusal(folder, trust_code, adapter["factory"])
    if refusal is not None:
        raise ModelLoadError(refusal)
    module_name, attribute = adapter["factory"].split(":")
    code = (folder / adapter["code"]).resolve()
    top = folder.resolve()
    checked = None if digests is None else {str(top / name): sha for name, sha in digests.items()}
    try:
        factory = getattr(_import_from(code, module_name, checked), attribute)
        module = factory(config, dict(adapter["options"]))
    except ModelLoadError:
        raise
    except Exception as error:  # the user's code: any failure is named, not raised raw
        raise ModelLoadError(f"{folder / ADAPTER}: factory {adapter['factory']} failed: {type(error).__name__}: {error}") from error
    missing = [name for name in ("encode", "f", "head") if not callable(getattr(module, name, None))]
    if not isinstance(module, nn.Module) or missing:
        raise ModelLoadError(f"{folder / ADAPTER}: factory {adapter['factory']} must return a torch.nn.Module with "
                             f"encode, f and head; it lacks {missing or ['nn.Module']}")  # fmt: skip
    return module


# --------------------------------------------------------------------------- importing a model folder's code
class _SourceLoader(importlib.machinery.SourceFileLoader):
    """A model folder's module compiled from its source, checked against checksums.json as it is read.

    Never from a cached ``.pyc`` (one planted in ``__pycache__`` beside a checked source
    would run unchecked: Python trusts a .pyc whose recorded source size and time match),
    and no ``.pyc`` is written into the model folder.
    """

    digests: dict[str, str] | None = None  # absolute source path -> recorded SHA-256; None: not checked

    def path_stats(self, path: str) -> dict:
        raise OSError("a model folder's code is compiled from source")  # get_code then skips the .pyc, read and write

    def get_data(self, path: str) -> bytes:
        data = super().get_data(path)
        if self.digests is not None:
            expected = self.digests.get(str(Path(path).resolve()))
            if expected is None:
                raise ImportError(f"{path}: not recorded in checksums.json; a file added after the model was saved")
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise ImportError(f"{path}: SHA-256 {actual[:16]}... differs from the recorded {expected[:16]}...; "
                                  "the file was changed after the model was saved")  # fmt: skip
        return data


class _FolderFinder(importlib.abc.MetaPathFinder):
    """Finds the top-level packages of one model folder's code (and their submodules) there, with ``_SourceLoader``.

    It stays on ``sys.meta_path`` so the user's code can import its own modules later; a
    later folder with a package of the same name takes the name over (``_import_from``).
    """

    def __init__(self, root: Path, names: set[str], loader: type):
        self.root, self.names, self.loader = root, names, loader

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname.partition(".")[0] not in self.names:
            return None
        places = [str(self.root)] if path is None else [p for p in path if Path(p).resolve().is_relative_to(self.root)]
        for place in places:
            spec = importlib.machinery.FileFinder(place, (self.loader, [".py"])).find_spec(fullname, target)
            if spec is not None and (spec.loader is not None or spec.submodule_search_locations):
                return spec
        raise ModuleNotFoundError(f"No module named {fullname!r} in {self.root} (a model folder's code is imported "
                                  "from its .py sources only)", name=fullname)  # fmt: skip


_FINDERS: dict[str, _FolderFinder] = {}  # top-level package name -> the finder of the folder that last provided it


def _top_level_names(root: Path) -> set[str]:
    """The modules and packages (folders holding .py files) at the top of a code folder: the names it provides."""
    names = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("*.py"))}
    return {n for n in names if n.isidentifier()}


def _installed(name: str) -> bool:
    """Whether ``name`` is the standard library's, ours, or an installed package's: a model folder may not replace it."""
    import sysconfig

    if name in sys.stdlib_module_names or name in ("deq_core", "app"):
        return True
    module = sys.modules.get(name)
    if module is not None and isinstance(getattr(module, "__loader__", None), _SourceLoader):
        return False  # an earlier model folder's package
    spec = importlib.machinery.PathFinder.find_spec(name)
    where = [] if spec is None else [spec.origin or "", *(spec.submodule_search_locations or [])]
    places = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(str(w).startswith(p) for w in where for p in places)


def _import_from(root: Path, module_name: str, digests: dict[str, str] | None):
    """Import ``module_name`` from the code folder ``root`` afresh (not a module of that name another folder gave)."""
    from deq_core.engine.checkpoint import ModelLoadError

    top = module_name.partition(".")[0]
    names = _top_level_names(root)
    if top not in names:  # the factory lives in an installed package: import it as any other
        return importlib.import_module(module_name)
    for name in names:
        if _installed(name):
            raise ModelLoadError(f"{root / name}: has the name of the installed module {name!r}, which it would "
                                 "shadow in this process; rename your package")  # fmt: skip
    for name in [n for n in sys.modules if n.partition(".")[0] in names]:
        del sys.modules[name]  # another folder's (or an earlier version's, or a training script's) module of that name
    loader = type("_CheckedSourceLoader", (_SourceLoader,), {"digests": digests})
    finder = _FolderFinder(root, names, loader)
    _FINDERS.update(dict.fromkeys(names, finder))
    live = set(map(id, _FINDERS.values()))
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _FolderFinder) or id(f) in live]
    sys.meta_path.insert(0, finder)
    importlib.invalidate_caches()
    return importlib.import_module(module_name)


class AdapterUpdate:
    """f(z) = user.f(z, features) with the cases' features bound: what the solvers iterate."""

    def __init__(self, user: nn.Module, features: torch.Tensor):
        self.user, self.features = user, features

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.user.f(z, self.features)

    def rows(self, index: torch.Tensor) -> "AdapterUpdate":
        return AdapterUpdate(self.user, self.features[index])


class _EncoderView:
    """One modality's encoder as the lens's robustness and attribution code reach it."""

    def __init__(self, owner: "AdaptedDEQ", index: int):
        self.owner, self.index = owner, index

    @property
    def embedding(self) -> nn.Module:
        user = self.owner.user
        if not hasattr(user, "embedding"):
            name = self.owner.config.modalities[self.index].name
            raise NotImplementedError(f"the adapter provides no embedding({self.index}) for text modality {name!r}: "
                                      "attributions over tokens interpolate embeddings")  # fmt: skip
        return user.embedding(self.index)

    @property
    def scale(self) -> torch.Tensor:
        return self.owner.input_scales()[self.index]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        user = self.owner.user
        if not hasattr(user, "encode_modality"):
            raise NotImplementedError("the adapter provides no encode_modality(i, x): a robustness sweep re-encodes one modality")
        return user.encode_modality(self.index, x)


class AdaptedDEQ(nn.Module):
    """A user's DEQ fusion module as a ``deq_core.engine.protocol.EquilibriumLensModel``.

    The lens solves the user's f with its own solvers (``config.solver``), attaches the
    implicit gradient the same way as for ``DEQFusion``, and reads the fused row with the
    user's head: every view sees the same fixed point.
    """

    def __init__(self, config: ModelConfig, user: nn.Module):
        super().__init__()
        self.config, self.user = config, user
        self.has_gates = callable(getattr(user, "gates", None))

    @property
    def n_modalities(self) -> int:
        return len(self.config.modalities)

    @property
    def device(self) -> torch.device:
        for tensor in (*self.user.parameters(), *self.user.buffers()):
            return tensor.device
        return torch.device("cpu")

    @property
    def encoders(self) -> list[_EncoderView]:
        return [_EncoderView(self, i) for i in range(self.n_modalities)]

    def head(self, fused: torch.Tensor) -> torch.Tensor:
        return self.user.head(fused)

    def input_means(self) -> tuple[torch.Tensor, ...]:
        """The user's training means, or zeros (what "absent" then means) when it gives none."""
        if hasattr(self.user, "input_means"):
            return tuple(self.user.input_means())
        return tuple(torch.zeros(m.shape, device=self.device) for m in self.config.modalities)

    def input_scales(self) -> tuple[torch.Tensor, ...]:
        if hasattr(self.user, "input_scales"):
            return tuple(self.user.input_scales())
        return tuple(torch.ones((), device=self.device) for _ in self.config.modalities)

    def encode(self, inputs: Inputs, features: torch.Tensor | None = None) -> torch.Tensor:
        if features is not None:
            return features
        if len(inputs) != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} inputs ({self.config.modality_names}), got {len(inputs)}")
        return self.user.encode(tuple(inputs))

    def bind(self, inputs: Inputs, features: torch.Tensor | None = None) -> tuple[AdapterUpdate, torch.Tensor]:
        x = self.encode(inputs, features)
        z0 = x.new_zeros(x.shape[0], self.n_modalities + 1, self.config.width)
        return AdapterUpdate(self.user, x), z0

    def parts(self, inputs: Inputs, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f(states), gates, purified)`` as ``EquilibriumModel.parts``; NaN gates when the adapter has none."""
        steps, batch = states.shape[:2]
        x = self.encode(inputs)
        flat = states.to(x.device).reshape(steps * batch, *states.shape[2:])
        repeated = x.unsqueeze(0).expand(steps, *x.shape).reshape(steps * batch, *x.shape[1:])
        out = self.user.f(flat, repeated)
        if self.has_gates:
            gates, purified = self.user.gates(flat, repeated)
        else:  # the gate view says "not provided" for NaN gates (Trajectory.has_gates)
            gates = purified = torch.full_like(flat[:, : self.n_modalities], float("nan"))
        unflat = lambda t: t.reshape(steps, batch, *t.shape[1:])  # noqa: E731
        return unflat(out), unflat(gates), unflat(purified)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.run(inputs).logits

    def run(self, inputs: Inputs, record: bool = False, solver: SolverSettings | None = None, jacobian_probes: int = 0,
            features: torch.Tensor | None = None) -> FusionOutput:  # fmt: skip
        settings = solver or self.config.solver
        f, z0 = self.bind(inputs, features)
        return solve_equilibrium(f, z0, self.head, self.n_modalities, settings, self.training, record, jacobian_probes)
