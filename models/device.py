"""Where a model trains and predicts: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

A site's daemon usually runs on a CPU host, but an operator who trains on a GPU node should not need another
code path. The device follows the model: :func:`batch_to` moves a collated batch to wherever the model's
parameters are, so :func:`~infrabrain.models.training.loss_fn` and the prediction loop work on either. Weights
still travel as numpy arrays (``get_weights`` copies them to the CPU).

Importing this module does not import torch, so that torch-free configuration (a site's settings) can validate
a device name with :data:`DeviceName`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Accepted spellings of a device name.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def validate_device_name(name: str) -> str:
    """``name`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; else a ``ValueError`` naming it."""
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ValueError(f"device {name!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'")
    return name


#: A configuration field holding a device name, checked by :func:`validate_device_name`.
DeviceName = Annotated[str, AfterValidator(validate_device_name)]


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for ``name``; ``auto`` is the first CUDA GPU if torch sees one, else the CPU.

    Asking for a GPU that this torch cannot use is an error that says why (a CPU-only build, no driver, or an
    index past the GPUs present), never a silent fallback to the CPU."""
    import torch

    validate_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch is a CPU-only build" if torch.version.cuda is None
               else "torch finds no usable GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)")
        raise ValueError(f"device {name!r} asked for, but {why} (torch {torch.__version__}); use 'cpu' or 'auto'")
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {name!r} asked for, but torch sees {count} GPU(s) (indices 0..{count - 1})")
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a model with neither)."""
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def batch_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """``batch`` with every tensor on ``device`` (other values as they are); the same dict when nothing moves."""
    import torch

    if all(not isinstance(v, torch.Tensor) or v.device == device for v in batch.values()):
        return batch
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (for wall-clock timings); nothing on the CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
