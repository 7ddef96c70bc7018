"""Checking a ``device=`` value before a run: its form (as Ultralytics reads it) and that this machine has it.

Ultralytics accepts ``cpu``, ``mps``, a CUDA index (``0``, ``cuda:0``), a list (``0,1``, ``[0, 1]``) and ``-1`` (the
idlest GPU); an unusable one fails deep inside its trainer. :func:`check_device` says so in one line first. torch is
imported only when a GPU is asked for.

Example:
    >>> check_device("cpu")
    >>> check_device(None)  # empty: Ultralytics picks a GPU when there is one
"""

from __future__ import annotations

from typing import Any

from yolo_ldac.errors import LDACError

_ALLOWED = "cpu, mps, a CUDA index (0, cuda:0), a list (0,1) or -1 (the idlest GPU); empty picks one itself"


def cuda_indices(device: Any) -> list[int] | None:
    """The CUDA indices ``device`` asks for ([] for cpu/mps/empty); None when it is no device Ultralytics reads.

    Example:
        >>> cuda_indices("cuda:0,1"), cuda_indices("cpu"), cuda_indices(0), cuda_indices("gpu")
        ([0, 1], [], [0], None)
    """
    if device is None:
        return []
    if isinstance(device, bool):
        return None
    if isinstance(device, int):
        return [device] if device >= -1 else None
    if isinstance(device, (list, tuple)):
        out = [cuda_indices(d) for d in device]
        return None if any(o is None or len(o) != 1 for o in out) else [o[0] for o in out]
    if not isinstance(device, str):
        return None
    text = device.strip().lower().replace("cuda:", "").replace("none", "").replace(" ", "").strip("[]()")
    if text in ("", "cpu", "mps", "mps:0"):
        return []
    try:
        idx = [int(t) for t in text.split(",") if t]
    except ValueError:
        return None
    return idx if idx and all(i >= -1 for i in idx) and (-1 not in idx or len(idx) == 1) else None


def check_device(device: Any) -> None:
    """Raise :class:`LDACError` (one line naming the value and what is allowed) when ``device`` is malformed or
    names a GPU this machine does not have."""
    idx = cuda_indices(device)
    if idx is None:
        raise LDACError(f"device must be {_ALLOWED}; got {device!r}")
    if isinstance(device, str) and device.strip().lower().startswith("mps"):
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise LDACError(f"device={device!r} is not available: this machine has no Apple MPS device; use "
                            "device=cpu")
        return
    if not idx:
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise LDACError(f"device={device!r} is not available: this machine has no CUDA GPU (torch sees none); use "
                        "device=cpu or leave device empty")
    missing = [i for i in idx if i >= count]
    if missing:
        raise LDACError(f"device={device!r} is not available: this machine has {count} CUDA GPU(s) (indices "
                        f"0..{count - 1})")


__all__ = ["check_device", "cuda_indices"]
