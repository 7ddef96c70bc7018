"""yolo-ldac: channel pruning of Ultralytics YOLO detectors (LDAC and baseline criteria).

Example:
    >>> from yolo_ldac import YOLOLDAC
    >>> result = YOLOLDAC("yolo11n.pt").compress(data="coco8.yaml", ratio=0.5)  # doctest: +SKIP
"""

__version__ = "0.1.0"

from yolo_ldac.utils.env import setup_offline_env as _setup_env

_setup_env()  # private Ultralytics config dir and a local font, before Ultralytics is imported anywhere


def __getattr__(name: str):
    if name in {"YOLOLDAC", "CompressResult"}:
        from yolo_ldac import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["YOLOLDAC", "CompressResult", "__version__"]
