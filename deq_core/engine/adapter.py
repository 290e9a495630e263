"""Your own DEQ fusion model behind the lens: a model folder with ``adapter.json``.

A folder the lens opens as a user's model holds

* ``adapter.json``: ``{"factory": "package.module:build", "code": "."}``; ``code`` is the
  folder (relative to the model folder) put first on ``sys.path`` to import the factory;
* ``config.json``: a ``ModelConfig`` describing what the lens must know (modalities, class
  names, dataset, ``width`` = the state width d, the solver settings the lens solves with;
  ``architecture`` is ``"deq"``; the encoder settings are not read);
* ``weights.safetensors``: the factory's module's ``state_dict`` (no pickle);
* ``checksums.json``: SHA-256 of the three files above (``save_adapter`` writes it).

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

Importing the factory runs the user's code, so ``load_adapter`` refuses unless
``trust_code`` is true: the command line's ``--trust-code``, the app's sidebar setting.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from deq_core.engine.config import ModelConfig, SolverSettings
from deq_core.engine.implicit import attach_implicit_gradient, attach_phantom_gradient, jacobian_frobenius_estimate
from deq_core.engine.modality import Inputs
from deq_core.engine.model import FusionOutput
from deq_core.engine.solvers import solve

ADAPTER = "adapter.json"
MAX_ADAPTER_BYTES = 1 << 14
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


def build_user_module(folder: str | Path, config: ModelConfig, trust_code: bool = False) -> nn.Module:
    """Import the adapter's factory (only with ``trust_code``) and build the user's module."""
    from deq_core.engine.checkpoint import ModelLoadError

    folder = Path(folder)
    adapter = read_adapter(folder)
    if not trust_code:
        raise ModelLoadError(
            f"{folder / ADAPTER}: this model is your own code ({adapter['factory']}); opening it runs that code. "
            "Pass --trust-code (command line) or tick 'Run model code' (app sidebar) if you trust it"
        )
    module_name, attribute = adapter["factory"].split(":")
    code = str((folder / adapter["code"]).resolve())
    if code not in sys.path:
        sys.path.insert(0, code)
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
        module = factory(config, dict(adapter["options"]))
    except Exception as error:  # the user's code: any failure is named, not raised raw
        raise ModelLoadError(f"{folder / ADAPTER}: factory {adapter['factory']} failed: {type(error).__name__}: {error}") from error
    missing = [name for name in ("encode", "f", "head") if not callable(getattr(module, name, None))]
    if not isinstance(module, nn.Module) or missing:
        raise ModelLoadError(f"{folder / ADAPTER}: factory {adapter['factory']} must return a torch.nn.Module with "
                             f"encode, f and head; it lacks {missing or ['nn.Module']}")  # fmt: skip
    return module


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
        with torch.no_grad():
            result = solve(f, z0, record=record, compact=not self.training, **settings.options())
        penalty = None
        if torch.is_grad_enabled():
            if settings.gradient == "implicit":
                z = attach_implicit_gradient(f, result.z, settings.backward)
            else:
                z = attach_phantom_gradient(f, result.z, settings.phantom_steps, settings.damping)
            if jacobian_probes:
                z_in = result.z.detach().requires_grad_()
                penalty = jacobian_frobenius_estimate(f(z_in), z_in, probes=jacobian_probes)
        else:
            z = f(result.z)
        fused = z[:, self.n_modalities]
        return FusionOutput(self.head(fused), result, penalty, fused)
