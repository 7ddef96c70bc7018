"""Process environment for running Ultralytics without network access, and a description of the machine.

`setup_offline_env()` must run BEFORE the first `import ultralytics` anywhere in the process: Ultralytics reads
``YOLO_CONFIG_DIR``, ``YOLO_OFFLINE`` and ``YOLO_AUTOINSTALL`` once, when ``ultralytics.utils`` is imported.
Called later, it still copies the fonts into the directory Ultralytics is already using, but the environment
variables it sets no longer change what Ultralytics does (a warning says so).

Example:
    >>> from yolo_ldac.utils.env import setup_offline_env
    >>> cfg_dir = setup_offline_env(offline=True)  # first, before ultralytics is imported
    >>> from ultralytics import YOLO  # now finds Arial.ttf locally and never tries to download it
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path

from yolo_ldac.utils.log import LOGGER  # noqa: E402

# Fonts that Ultralytics' plotting code looks up by name in its config dir and downloads when absent.
ULTRALYTICS_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def _default_config_dir() -> Path:
    """``$YOLO_LDAC_HOME/ultralytics``, or ``~/.cache/yolo-ldac/ultralytics`` when YOLO_LDAC_HOME is unset."""
    home = os.environ.get("YOLO_LDAC_HOME") or Path.home() / ".cache" / "yolo-ldac"
    return Path(home).expanduser() / "ultralytics"


def _matplotlib_font() -> Path | None:
    """Path of matplotlib's bundled DejaVuSans.ttf, found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        font = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if font.is_file():
            return font
    return None


def _install_fonts(target: Path) -> None:
    """Copy DejaVuSans.ttf to ``target/Arial.ttf`` and ``target/Arial.Unicode.ttf`` where they are absent."""
    missing = [target / name for name in ULTRALYTICS_FONTS if not (target / name).exists()]
    if not missing:
        return
    font = _matplotlib_font()
    if font is None:
        LOGGER.warning("matplotlib's DejaVuSans.ttf was not found: Ultralytics may try to download Arial.ttf")
        return
    try:
        target.mkdir(parents=True, exist_ok=True)
        for dst in missing:
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")  # atomic: parallel processes may race here
            shutil.copyfile(font, tmp)
            os.replace(tmp, dst)
    except OSError as e:
        LOGGER.warning(f"could not copy fonts into {target} ({e}): Ultralytics may try to download Arial.ttf")


def setup_offline_env(offline: bool | None = None) -> Path:
    """Give Ultralytics a private config directory with local fonts; optionally switch it fully offline.

    Call it before ``ultralytics`` is imported (see the module docstring). It

    - sets ``YOLO_CONFIG_DIR`` to ``$YOLO_LDAC_HOME/ultralytics`` (default ``~/.cache/yolo-ldac/ultralytics``)
      unless ``YOLO_CONFIG_DIR`` is already set, so Ultralytics' ``settings.json`` stays out of the user's
      own Ultralytics settings;
    - copies matplotlib's bundled DejaVuSans.ttf to ``$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf`` and
      ``Arial.Unicode.ttf`` where absent, so Ultralytics' plotting never downloads a font;
    - if ``offline`` is True, also sets ``YOLO_OFFLINE=1`` (no online checks, no hub or download attempts)
      and ``YOLO_AUTOINSTALL=False`` (no pip installs of missing requirements). ``None`` or ``False`` leave
      those two variables as they are.

    Safe to call repeatedly.

    Args:
        offline: set YOLO_OFFLINE=1 and YOLO_AUTOINSTALL=False when True.

    Returns:
        The directory Ultralytics keeps its settings and fonts in (``$YOLO_CONFIG_DIR/Ultralytics``, or, if
        ultralytics was already imported, the one it chose then).
    """
    os.environ.setdefault("YOLO_CONFIG_DIR", str(_default_config_dir()))
    if offline:
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["YOLO_AUTOINSTALL"] = "False"

    target = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser() / "Ultralytics"
    ultralytics_utils = sys.modules.get("ultralytics.utils")
    if ultralytics_utils is not None:  # imported already: the directory it chose is the one that counts
        in_use = Path(ultralytics_utils.USER_CONFIG_DIR)
        still_online = getattr(ultralytics_utils, "ONLINE", False) or getattr(ultralytics_utils, "AUTOINSTALL", False)
        if in_use != target or (offline and still_online):
            LOGGER.warning(
                "setup_offline_env() was called after ultralytics was imported: its environment settings "
                f"have no effect on this process; fonts go to {in_use}"
            )
        target = in_use
    _install_fonts(target)
    return target


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)  # kB -> GiB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (AttributeError, ValueError, OSError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def usable_cores() -> int:
    """The number of CPUs this process may run on (its affinity mask; all CPUs where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def shared_weights_dir() -> Path:
    """Folder of the pretrained checkpoints shared with a checkout: ``$YOLO_LDAC_SHARED_WEIGHTS`` when set, else
    ``shared/weights`` beside the repository (it may not exist: callers check the file they need).

    Example:
        >>> (shared_weights_dir() / "yolo11n-coco.pt").name
        'yolo11n-coco.pt'
    """
    return Path(os.environ.get("YOLO_LDAC_SHARED_WEIGHTS") or Path(__file__).resolve().parents[2].parent / "shared"
                / "weights")


def machine_info() -> dict:
    """Describe the machine and the library versions, for benchmark records and reports.

    Returns:
        A JSON-serialisable dict: ``cpu`` (model name), ``cores`` (logical CPUs), ``cores_usable`` (CPUs this
        process may run on), ``ram_gb`` (GiB), ``os``, ``python``, the versions of ``torch``, ``torchvision``,
        ``ultralytics``, ``torch_pruning``, ``onnxruntime``, ``ai_edge_litert``, ``litert_torch``, ``openvino`` and ``ncnn`` (None if
        not installed), ``torch_threads``,
        and ``gpu`` (CUDA device name, or None).
    """
    cores_usable = usable_cores()
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": cores_usable,
        "ram_gb": _ram_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "ultralytics": _version("ultralytics"),
        "torch_pruning": _version("torch-pruning"),
        "onnxruntime": _version("onnxruntime"),
        "ai_edge_litert": _version("ai-edge-litert"),
        "litert_torch": _version("litert-torch"),
        "openvino": _version("openvino"),
        "ncnn": _version("ncnn"),
        "torch_threads": None,
        "gpu": None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info
