"""yolo-ldac: channel pruning of Ultralytics YOLO detectors (LDAC and baseline criteria).

Example:
    >>> from yolo_ldac import YOLOLDAC
    >>> result = YOLOLDAC("yolo11n.pt").compress(data="coco8.yaml", ratio=0.5)  # doctest: +SKIP
"""

__version__ = "0.1.0"

import sys as _sys

from yolo_ldac.utils.env import setup_offline_env as _setup_env

# A private Ultralytics config dir and a local font, before Ultralytics is imported anywhere. When Ultralytics is
# imported already (plain `YOLO("best.pt")` unpickling a yolo-ldac checkpoint imports this package), its settings
# are chosen and none of ours would apply: the user's Ultralytics is left alone, without a word.
if "ultralytics.utils" not in _sys.modules:
    _setup_env()


def __getattr__(name: str):
    if name in {"YOLOLDAC", "CompressResult"}:
        from yolo_ldac import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["YOLOLDAC", "CompressResult", "__version__"]
