"""Command line: ``yolo-ldac MODE key=value ...`` (Ultralytics style).

Examples:
    yolo-ldac compress model=yolo11n.pt data=coco8.yaml ratio=0.4 method=l2
    yolo-ldac info model=runs/ldac/exp/weights/best.pt
    yolo-ldac cfg        # print the defaults

Every value is parsed with ``yaml.safe_load`` (never eval). Any failure the user can fix (an unknown key, a
value out of range, a missing file, an output folder that cannot be written, a full disk, a missing optional
package) is printed as one line ``yolo-ldac: error: <message>`` on stderr, with exit status 2; its traceback is
printed too only when ``verbose=True`` is given explicitly. Ctrl-C exits with 130 (during a run, its line says how
to resume it). A key given twice is an error; no mode runs the default mode and says so. Any other exception is a
bug and shows its traceback.
"""

from __future__ import annotations

import sys
import traceback

from yolo_ldac import __version__
from yolo_ldac.cfg import DEFAULT_CFG_PATH, MODES, closest, get_cfg, load_defaults, parse_value, valid_keys
from yolo_ldac.errors import LDACError

MODE_HELP = {
    "compress": "prune in `rounds` steps with training in between, then fine-tune and validate",
    "prune": "prune in `rounds` steps to the target ratio, without training; save weights/best.pt",
    "finetune": "train a (pruned) model for `epochs` epochs (default: finetune_epochs)",
    "sweep": "one-step retention point per ratio in `ratios` (with `epochs`, also trained): table, JSON, plot",
    "val": "validate a model on `data`",
    "export": "export a model to `format` (onnx, litert, openvino, ncnn, ...) and check it against PyTorch in its runtime",
    "benchmark": "export to every runtime in `formats`, check, and time it (and `baseline`): latency, size, mAP",
    "info": "print a model's FLOPs, parameters and channels per layer",
}

HELP_TOKENS = ("help", "-h", "--help")
VERSION_TOKENS = ("version", "--version", "-V")
CFG_TOKENS = ("cfg", "--cfg")
LIST_TOKENS = ("list",)
COMMANDS = (*MODES, "help", "version", "cfg", "list")


def usage() -> str:
    """The text ``yolo-ldac help`` prints."""
    modes = "\n".join(f"    {m:<10} {MODE_HELP[m]}" for m in MODES)
    return f"""\
yolo-ldac {__version__}: channel pruning of Ultralytics YOLO detectors

Usage:
    yolo-ldac MODE key=value ...

Modes:
{modes}

Other commands:
    help       print this message (also -h, --help)
    cfg        print the default configuration, with every key explained
    list       print every registered part: criteria, pushes, compensations, and the method presets
    version    print the version

Examples:
    yolo-ldac compress model=yolo11n.pt data=coco8.yaml ratio=0.5 target=flops method=l2
    yolo-ldac prune model=yolo11n.pt data=coco8.yaml ratio=0.3 rounds=1
    yolo-ldac compress model=yolo11n.pt data=coco8.yaml method=ldac criterion=group_fisher
    yolo-ldac compress model=yolo11n.pt data=coco8.yaml max_drop=0.01   # the most FLOPs within 1 point of mAP
    yolo-ldac sweep model=yolo11n.pt data=coco8.yaml ratios=0.1,0.2,0.3,0.4 method=ldac
    yolo-ldac compress resume=runs/ldac/exp      # continue a stopped run with its own settings
    yolo-ldac finetune model=runs/ldac/exp/weights/best.pt data=coco8.yaml epochs=20 lr0=0.002
    yolo-ldac val model=runs/ldac/exp/weights/best.pt data=coco8.yaml
    yolo-ldac export model=runs/ldac/exp/weights/best.pt format=onnx imgsz=640
    yolo-ldac export model=runs/ldac/exp/weights/best.pt format=litert int8=True data=coco8.yaml
    yolo-ldac benchmark model=runs/ldac/exp/weights/best.pt baseline=yolo11n.pt formats=onnx,litert,openvino
    yolo-ldac info model=runs/ldac/exp/weights/best.pt

Arguments are key=value pairs; values are read as YAML (0.5, True, none, [640,480]). Any Ultralytics
train/val/export argument (lr0, mosaic, optimizer, ...) is accepted as well and passed through.
Defaults: {DEFAULT_CFG_PATH}
"""


def _one_line(e: BaseException) -> str:
    """The exception's message on a single line (its type name when it has none)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return "; ".join(lines) or type(e).__name__


def _os_error_line(e: OSError) -> str:
    """An OSError (unwritable folder, full disk, ...) as one line: what failed, on which file."""
    where = f": {e.filename}" if getattr(e, "filename", None) else ""
    return f"{e.strerror or _one_line(e)}{where}"


def _import_error_line(e: ImportError) -> str:
    name = e.name or _one_line(e)
    return f"the Python package {name!r} is needed here and is not installed (pip install {name.split('.')[0]})"


def _explicit_verbose(argv: list[str]) -> bool:
    """Whether ``verbose=True`` was given on the command line (the default True prints no tracebacks)."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.strip() == "verbose" and parse_value(value) is True:
            return True
    return False


def parse_args(argv: list[str]) -> tuple[str | None, dict]:
    """Split ``argv`` into (mode or None, overrides). Raises ``LDACError`` on a malformed argument.

    A bare word must be a mode (at most one); every other argument must be ``key=value``, each key once.

    Example:
        >>> parse_args(["prune", "ratio=0.3"])
        ('prune', {'ratio': 0.3})
    """
    mode, overrides, given = None, {}, {}
    for arg in argv:
        if "=" in arg:
            key, _, value = arg.partition("=")
            key = key.strip()
            if not key:
                raise LDACError(f"argument {arg!r} has no key: write key=value")
            if key.startswith("-"):
                bare = key.lstrip("-")
                raise LDACError(f"arguments are key=value without dashes: write '{bare}={value}' instead of {arg!r}")
            if key in given:  # which one was meant is not ours to guess
                raise LDACError(f"key '{key}' is given twice ({given[key]} and {arg.strip()}): give it once")
            given[key] = arg.strip()
            overrides[key] = parse_value(value)
            continue
        word = arg.strip()
        if word in MODES:
            if mode is not None and word != mode:
                raise LDACError(f"two modes given: {mode!r} and {word!r}; give one")
            mode = word
        elif word.lstrip("-") in valid_keys():
            raise LDACError(f"{word!r} needs a value: write {word.lstrip('-')}=VALUE")
        else:
            hint = closest(word, COMMANDS)
            msg = f"unknown mode {word!r}; did you mean {hint!r}?" if hint else f"unknown mode {word!r}"
            raise LDACError(f"{msg} (modes: {', '.join(MODES)}; arguments are key=value)")
    if "mode" in overrides:
        given = overrides.pop("mode")
        if mode is not None and given != mode:
            raise LDACError(f"two modes given: {mode!r} and mode={given!r}; give one")
        mode = given
    return mode, overrides


def _dispatch(mode: str, overrides: dict):
    """Run ``mode`` through the Python API with the user's overrides (the API merges the defaults itself)."""
    from yolo_ldac.utils.env import setup_offline_env

    setup_offline_env()  # before anything imports ultralytics
    from yolo_ldac.api import YOLOLDAC

    kwargs = {k: v for k, v in overrides.items() if k not in ("model", "mode")}
    model = overrides.get("model", load_defaults()["model"])
    if model is None:
        raise LDACError("model is not set: give model=PATH")
    if overrides.get("resume"):  # the run's state names its model; a given model= must agree with it
        from yolo_ldac.schedule.compressor import Compressor

        return Compressor.resume(overrides["resume"], {k: v for k, v in overrides.items() if k != "resume"},
                                 project=overrides.get("project", load_defaults()["project"]), mode=mode)
    runner = YOLOLDAC(model, trusted=overrides.get("trusted") is True)  # safe loading unless trusted=True
    result = getattr(runner, mode)(**kwargs)
    if mode == "info" and isinstance(result, dict) and result.get("table"):
        print(result["table"])
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (without the program name); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or any(a in HELP_TOKENS for a in argv):
            print(usage(), end="")
            return 0
        if argv[0] in VERSION_TOKENS:
            print(f"yolo-ldac {__version__}")
            return 0
        if argv[0] in CFG_TOKENS:
            print(DEFAULT_CFG_PATH.read_text(encoding="utf-8"), end="")
            return 0
        if argv[0] in LIST_TOKENS:
            from yolo_ldac.utils.env import setup_offline_env

            setup_offline_env()
            from yolo_ldac.parts import describe

            print(describe(), end="")
            return 0
        mode, overrides = parse_args(argv)
        cfg = get_cfg(overrides, mode=mode)  # fail fast on a bad key or value, before the heavy imports
        if mode is None:  # as Ultralytics' CLI does: the default mode runs, and says so
            print(f"yolo-ldac: no mode given: running '{cfg['mode']}' (the default; modes: {', '.join(MODES)}; "
                  "write yolo-ldac MODE key=value ...)", file=sys.stderr)
        _dispatch(cfg["mode"], overrides)
        return 0
    except (LDACError, OSError, ImportError) as e:
        if isinstance(e, ImportError) and (e.name or "").startswith("yolo_ldac"):
            raise  # our own module missing: a broken install or a bug, not the user's to fix
        if _explicit_verbose(argv):
            traceback.print_exception(e, file=sys.stderr)
        line = (_one_line(e) if isinstance(e, LDACError) else
                _os_error_line(e) if isinstance(e, OSError) else _import_error_line(e))
        print(f"yolo-ldac: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a run's Interrupted says how to continue it
        print(f"yolo-ldac: error: {_one_line(e) if str(e) else 'interrupted'}", file=sys.stderr)
        return 130


def entrypoint() -> None:
    """Console-script entry point (``yolo-ldac``)."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    entrypoint()
