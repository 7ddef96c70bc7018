"""Safe loading of the model files a user hands to yolo-ldac: nothing in an untrusted file runs code.

A ``.pt`` checkpoint is a pickle, and unpickling runs whatever callables it names; Ultralytics unpickles every
``.pt`` with ``weights_only=False``. Unless ``trusted=True``, yolo-ldac therefore

* lists the globals a checkpoint references (``torch.serialization.get_unsafe_globals_in_checkpoint``: it reads
  the pickle's opcodes, it runs nothing) and refuses the file, with one line, when any of them is not on the
  allow-list: torch's layers, Ultralytics' model classes (Ultralytics' own ``ULTRALYTICS_SAFE_LOAD`` list) and
  yolo-ldac's rewritten blocks (``yolo_ldac.nn.modules``);
* loads what passes with ``torch.load(weights_only=True)``, and runs Ultralytics under its restricted mode
  (:func:`policy`), so any checkpoint Ultralytics itself opens later (trainer, validator, exporter) is loaded the
  same way and a model yaml is parsed without ``eval``;
* checks a model yaml (a ``.yaml`` file or the ``yaml`` a checkpoint carries) before Ultralytics parses it: every
  layer must be a torch/Ultralytics layer, and ``activation`` a literal ``nn.<Activation>(...)`` call.

Example:
    >>> from yolo_ldac.safe_load import load_model, policy
    >>> model = load_model("runs/ldac/exp/weights/best.pt")  # doctest: +SKIP
    >>> with policy(trusted=False):  # every checkpoint Ultralytics opens in here is weights_only
    ...     pass
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import functools
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.errors import LDACError

TRUST_HINT = "pass trusted=True if you trust its source"

_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("yolo_ldac_trusted", default=False)


# ------------------------------------------------------------------------------------------------------ the policy
def is_trusted() -> bool:
    """Whether the current :func:`policy` trusts model files (False outside any policy: safe by default)."""
    return _TRUSTED.get()


@functools.lru_cache(maxsize=None)
def register_safe_globals() -> tuple[type, ...]:
    """Add yolo-ldac's own layer classes to torch's ``weights_only`` allow-list (once per process); return them.

    Example:
        >>> [c.__name__ for c in register_safe_globals()]
        ['C2fSplit', 'C3k2Split', 'C2fCIBSplit', 'RepNCSPELAN4Split', 'ELAN1Split', 'SplitConvBlock', 'DFLExp']
    """
    from yolo_ldac.nn import modules

    classes = tuple(
        obj for obj in vars(modules).values()
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == modules.__name__
    )
    torch.serialization.add_safe_globals(list(classes))
    return classes


@contextlib.contextmanager
def policy(trusted: bool = False) -> Iterator[None]:
    """Within the block, every checkpoint is loaded with ``weights_only=True`` and the allow-list unless ``trusted``:
    yolo-ldac's own loads (:func:`load_checkpoint`, :func:`load_model`) and Ultralytics' (its ``SAFE_LOAD`` switch,
    which also makes its model parser resolve ``activation`` without ``eval``).

    Example:
        >>> with policy(trusted=False):
        ...     is_trusted()
        False
    """
    from ultralytics.nn import tasks

    register_safe_globals()
    token = _TRUSTED.set(bool(trusted))
    before = tasks.SAFE_LOAD
    from ultralytics.utils import SAFE_LOAD as env_safe  # ULTRALYTICS_SAFE_LOAD=1 stays on even when trusted

    tasks.SAFE_LOAD = bool(env_safe or not trusted)
    try:
        yield
    finally:
        tasks.SAFE_LOAD = before
        _TRUSTED.reset(token)


def _resolve(trusted: bool | None) -> bool:
    return is_trusted() if trusted is None else bool(trusted)


# ------------------------------------------------------------------------------------------------- checkpoints
def _allowed_names() -> set[str]:
    names = set()
    for entry in torch.serialization.get_safe_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f"{entry.__module__}.{entry.__qualname__}")
    return names


def unlisted_globals(path: str | Path) -> list[str]:
    """The globals ``path`` references that are not on the allow-list (nothing is unpickled to find them).

    Example:
        >>> unlisted_globals("runs/ldac/exp/weights/best.pt")  # doctest: +SKIP
        []
    """
    from ultralytics.nn.tasks import _SafeLoad

    register_safe_globals()
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, OSError):  # not a (complete) torch.save() zip archive: the load reports it
        return []
    with _SafeLoad.loading(str(path)):  # registers the Ultralytics classes this file names, if they are known
        allowed = _allowed_names()
    return sorted(n for n in needed if n not in allowed)


def refusal(path: str | Path, names: list[str] | None = None) -> LDACError:
    """The one-line error for a file that needs more than the allow-list."""
    what = f" (it references {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""
    return LDACError(f"model file '{path}' needs more than the classes safe loading allows{what}: {TRUST_HINT}")


def check_archive(path: str | Path) -> None:
    """Raise :class:`LDACError` when ``path`` is plainly no ``torch.save()`` file (empty, or text): neither the zip
    archive torch writes nor a legacy pickle. Unpickling such a file fails with a random error (``KeyError: 101``,
    ``IndexError: pop from empty list``); this says what the file is instead. A missing file is left to the caller.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "notes.pt"
        >>> _ = p.write_text("hello")
        >>> check_archive(p)
        Traceback (most recent call last):
        yolo_ldac.errors.LDACError: model file '...notes.pt' is not a loadable checkpoint: a text file, not a torch.save() archive (a .pt is written by torch.save, i.e. by Ultralytics or yolo-ldac)
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError:
        return
    if zipfile.is_zipfile(str(p)) or head[:1] == b"\x80":  # torch's zip archive, or a legacy pickle's PROTO opcode
        return
    text = head.decode("utf-8", "ignore")  # a character cut at the 4096th byte is dropped, not an error
    is_text = len(text.encode("utf-8")) >= len(head) - 3 and all(c.isprintable() or c.isspace() for c in text)
    what = "an empty file" if not head else "a text file" if is_text else "a file of another format"
    raise LDACError(f"model file '{path}' is not a loadable checkpoint: {what}, not a torch.save() archive (a .pt is "
                    "written by torch.save, i.e. by Ultralytics or yolo-ldac)")


def check_checkpoint(path: str | Path, trusted: bool | None = None) -> None:
    """Raise :func:`refusal` when ``path`` is a checkpoint that needs globals outside the allow-list (unless trusted).

    Example:
        >>> check_checkpoint("payload.pt")  # doctest: +SKIP
        Traceback (most recent call last):
        yolo_ldac.errors.LDACError: model file 'payload.pt' needs more than the classes safe loading allows ...
    """
    if not Path(path).is_file():
        return
    check_archive(path)  # trusted or not: an empty or text file is no checkpoint
    if _resolve(trusted):
        return
    bad = unlisted_globals(path)
    if bad:
        raise refusal(path, bad)


def _is_refused(e: BaseException, path: str | Path) -> bool:
    """Whether a failed ``weights_only`` load of ``path`` was the allow-list refusing it (not a damaged file)."""
    zipped = zipfile.is_zipfile(str(path))  # random bytes also raise UnpicklingError: that is no refusal
    while e is not None:
        if isinstance(e, pickle.UnpicklingError) and (zipped or "allowed global" in str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def load_checkpoint(path: str | Path, trusted: bool | None = None) -> dict:
    """The checkpoint dict of ``path``: checked and loaded with ``weights_only=True`` unless trusted.

    Example:
        >>> ckpt = load_checkpoint("runs/ldac/exp/weights/best.pt")  # doctest: +SKIP
        >>> ckpt["yolo_ldac"]["finished"]  # doctest: +SKIP
        True
    """
    from ultralytics.nn.tasks import torch_safe_load

    trusted = _resolve(trusted)
    check_checkpoint(path, trusted)
    register_safe_globals()
    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=not trusted)
    except (TypeError, pickle.UnpicklingError) as e:
        if not trusted and _is_refused(e, path):
            raise refusal(path) from None
        if isinstance(e, pickle.UnpicklingError) or not zipfile.is_zipfile(str(path)):
            raise LDACError(f"model file '{path}' is not a loadable checkpoint: the file is empty, truncated or not "
                            "a torch.save() archive") from e
        raise
    return ckpt


def load_model(path: str | Path, trusted: bool | None = None, device: Any = None, fuse: bool = False) -> nn.Module:
    """Ultralytics' ``load_checkpoint(path)`` model (fp32, eval), loaded safely unless trusted; the model yaml it
    carries is checked too (:func:`check_model_yaml`), since Ultralytics parses it again to change its classes.

    Example:
        >>> model = load_model("runs/ldac/exp/weights/best.pt")  # doctest: +SKIP
    """
    return load_model_and_checkpoint(path, trusted, device=device, fuse=fuse)[0]


def load_model_and_checkpoint(path: str | Path, trusted: bool | None = None, device: Any = None,
                              fuse: bool = False) -> tuple[nn.Module, dict]:
    """:func:`load_model` and the checkpoint dict it came from (Ultralytics' ``load_checkpoint`` pair).

    Example:
        >>> model, ckpt = load_model_and_checkpoint("runs/ldac/exp/compress/weights/epoch_last.pt")  # doctest: +SKIP
    """
    from ultralytics.nn.tasks import load_checkpoint as ultra_load

    trusted = _resolve(trusted)
    check_checkpoint(path, trusted)
    with policy(trusted):
        try:
            model, ckpt = ultra_load(str(path), device=device, fuse=fuse)
        except (TypeError, pickle.UnpicklingError) as e:
            if not trusted and _is_refused(e, path):
                raise refusal(path) from None
            if not zipfile.is_zipfile(str(path)):
                raise LDACError(f"model file '{path}' is not a loadable checkpoint: the file is empty, truncated or "
                                "not a torch.save() archive") from e
            raise
    yaml = getattr(model, "yaml", None)
    if isinstance(yaml, dict):
        check_model_yaml(yaml, path, trusted)
    return model, ckpt


# ------------------------------------------------------------------------------------------------------ yaml
def _activation_class(name: str) -> type | None:
    import torch.nn.modules.activation as activations

    klass = getattr(nn, name, None)
    if isinstance(klass, type) and (vars(activations).get(name) is klass or klass is nn.Identity):
        return klass
    return None


def check_activation(act: Any, src: Any = "model", hint: str | None = TRUST_HINT) -> None:
    """Refuse an ``activation`` that is not a literal ``[torch.]nn.<Activation>(literal args)`` call.

    Example:
        >>> check_activation("nn.LeakyReLU(0.1)")
        >>> check_activation("__import__('os').system('true')")
        Traceback (most recent call last):
        yolo_ldac.errors.LDACError: 'model': unsupported activation "__import__('os').system('true')" (expected ...
    """
    try:
        call = ast.parse(str(act).strip(), mode="eval").body
        if not isinstance(call, ast.Call):
            raise ValueError
        parts, node = [], call.func
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            raise ValueError
        parts.append(node.id)
        if parts[1:] not in (["nn"], ["nn", "torch"]) or _activation_class(parts[0]) is None:
            raise ValueError
        for a in list(call.args) + [kw.value for kw in call.keywords]:
            ast.literal_eval(a)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise LDACError(f"'{src}': unsupported activation {str(act)!r} (expected a torch activation such as "
                        f"'nn.SiLU()')" + (f": {hint}" if hint else "")) from None


def check_model_yaml(d: dict, src: Any = "model", trusted: bool | None = None, hint: str | None = TRUST_HINT) -> None:
    """Refuse a model yaml dict Ultralytics' parser would run code for: layer names must resolve to torch/Ultralytics
    ``nn.Module`` classes, and ``activation`` must pass :func:`check_activation`. Nothing is checked when trusted;
    ``hint`` ends the message (None for files that trust cannot open, such as a portable pair).

    Example:
        >>> check_model_yaml({"backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": [], "activation": "nn.ReLU()"})
    """
    if _resolve(trusted):
        return
    import torchvision
    from ultralytics.nn import tasks

    layers = list(d.get("backbone") or []) + list(d.get("head") or [])
    if not layers:
        raise LDACError(f"'{src}': the model yaml has no layers")
    for layer in layers:
        if not (isinstance(layer, (list, tuple)) and len(layer) == 4 and isinstance(layer[2], str)):
            raise LDACError(f"'{src}': malformed yaml layer {layer!r}")
        name = layer[2]
        if name.startswith("nn."):
            obj = getattr(torch.nn, name[3:], None)
        elif name.startswith("torchvision.ops."):
            obj = getattr(torchvision.ops, name[16:], None)
        else:
            obj = vars(tasks).get(name)
        if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
            raise LDACError(f"'{src}': yaml layer type '{name}' is not an Ultralytics/torch layer"
                            + (f": {hint}" if hint else ""))
    if d.get("activation"):
        check_activation(d["activation"], src, hint)


def load_model_yaml(path: str | Path, trusted: bool | None = None) -> dict:
    """Read a model yaml as Ultralytics does (``yaml_model_load``: safe yaml, scale from the name) and check it.

    Example:
        >>> load_model_yaml("yolo11n.yaml")["scale"]
        'n'
    """
    from ultralytics.nn.tasks import yaml_model_load

    try:
        d = yaml_model_load(str(path))
    except FileNotFoundError as e:
        raise LDACError(f"model yaml '{path}' not found") from e
    except Exception as e:
        raise LDACError(f"model yaml '{path}' could not be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(d, dict):
        raise LDACError(f"model yaml '{path}' is not a mapping")
    check_model_yaml(d, path, trusted)
    return d


__all__ = [
    "TRUST_HINT",
    "check_activation",
    "check_archive",
    "check_checkpoint",
    "check_model_yaml",
    "is_trusted",
    "load_checkpoint",
    "load_model",
    "load_model_and_checkpoint",
    "load_model_yaml",
    "policy",
    "refusal",
    "register_safe_globals",
    "unlisted_globals",
]
