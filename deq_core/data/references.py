"""Dataset references: a dataset's own yardstick for explaining one case, looked up by dataset name.

Some datasets know more about a case than its inputs: the inspection generator
records what each input truly shows, so its ideal classifier gives the decision
and the modality Shapley values a perfect reader would arrive at. A report puts
that beside the model's and verification recomputes it; both ask this registry
by the model's dataset name (``ModelConfig.dataset``) and know nothing about any
particular dataset.

A provider is called as ``provider(case_key, inputs, texts, target, modality_names)``
with the inputs the model saw (batch of one), the raw texts, the explained class and
the model's modality names, and returns a ``Reference`` or None when it has none for
that case (another dataset's case, an altered input). Built-in providers are named by
import path and loaded on first use, so importing ``deq_core.data`` loads none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch

    from deq_core.explain.shapley import ModalityShapley


class Reference(Protocol):
    """What a report records of a reference (``deq_core.explain.ideal.IdealReference`` is one).

    Attributes:
        label: the case's true class.
        shows: what each of the model's modalities truly shows, in words (every modality).
        probabilities: ``(classes,)`` the reference's decision.
        shapley: the reference's modality Shapley values of the explained class.
    """

    label: str
    shows: Mapping[str, str]
    probabilities: "np.ndarray"
    shapley: "ModalityShapley"

    def sentence(self, model_values: Mapping[str, float]) -> str:
        """One sentence comparing the model's Shapley values (modality -> value) with the reference's."""
        ...


ReferenceProvider = Callable[[str, Sequence["torch.Tensor"], Mapping[str, str], "int | None", Sequence[str]], "Reference | None"]

# dataset name -> "module:function"; imported when first asked for.
BUILT_IN_REFERENCES: dict[str, str] = {
    "inspection": "deq_core.explain.ideal:ideal_reference",  # the generator's ideal (Bayes) classifier
}
_registered: dict[str, ReferenceProvider] = {}


def register_reference(dataset: str, provider: ReferenceProvider) -> None:
    """Make ``provider`` the reference of ``dataset`` (a built-in name or a dataset folder's name)."""
    if not callable(provider):
        raise TypeError(f"the reference provider of {dataset!r} is not callable: {provider!r}")
    _registered[dataset] = provider


def reference_provider(dataset: str) -> ReferenceProvider | None:
    """The provider registered for ``dataset``, or None when the dataset has no reference."""
    if dataset not in _registered and dataset in BUILT_IN_REFERENCES:
        module, name = BUILT_IN_REFERENCES[dataset].split(":")
        _registered[dataset] = getattr(importlib.import_module(module), name)
    return _registered.get(dataset)


def dataset_reference(
    dataset: str,
    case_key: str,
    inputs: Sequence["torch.Tensor"],
    texts: Mapping[str, str],
    target: int | None,
    modality_names: Sequence[str],
) -> "Reference | None":
    """``dataset``'s reference for one case as the model saw it; None when it has none."""
    provider = reference_provider(dataset)
    if provider is None:
        return None
    return provider(case_key, inputs, texts, target, modality_names)
