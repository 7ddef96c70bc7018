"""Test-suite setup: offline, single-threaded, with a private Ultralytics config dir.

The environment is set at import time, before any test module imports ultralytics: Ultralytics reads
YOLO_CONFIG_DIR, YOLO_OFFLINE and YOLO_AUTOINSTALL once, when it is first imported.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "False"
if not os.environ.get("YOLO_CONFIG_DIR"):
    _config_dir = tempfile.mkdtemp(prefix="yolo-ldac-tests-")
    atexit.register(shutil.rmtree, _config_dir, ignore_errors=True)
    os.environ["YOLO_CONFIG_DIR"] = _config_dir

from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)



def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains, prunes or exports a model (seconds to minutes on 2 CPU cores)")


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """data.yaml of the synthetic shapes dataset: 16 train / 8 val images of 128x128, 3 classes."""
    from yolo_ldac.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_train=16, n_val=8, imgsz=128, seed=0)


@pytest.fixture(scope="session")
def shared_weights():
    """A function name -> Path of a pretrained checkpoint in ../shared/weights, skipping the test if absent.

    The folder is ``$YOLO_LDAC_SHARED_WEIGHTS`` when set, else ``shared/weights`` beside the repository (the
    developers' and CI's machines have it; a user's clone does not, and the tests that need it skip).
    """
    from yolo_ldac.utils.env import shared_weights_dir

    folder = shared_weights_dir()

    def get(name: str) -> Path:
        path = folder / name
        if not path.is_file():
            pytest.skip(f"pretrained weights {name!r} not found in {folder} (set YOLO_LDAC_SHARED_WEIGHTS)")
        return path

    return get


@pytest.fixture(scope="session")
def bus_image() -> Path:
    """Ultralytics' bundled bus.jpg: a real photo (810x1080, people and a bus)."""
    from ultralytics.utils import ASSETS

    path = Path(ASSETS) / "bus.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found in the installed ultralytics package")
    return path


# Ultralytics binds its log handler to the sys.stdout of its first import; importing it here (after the offline
# setup above) keeps that from being a test's captured, later closed, stream.
import ultralytics  # noqa: E402,F401


@pytest.fixture(scope="session")
def calib_batches(shapes_data):
    """Two calibration batches of 4 shapes images at 128 px, with labels."""
    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac.pruning.calibration import build_calibration_batches

    return build_calibration_batches(check_det_dataset(str(shapes_data)), imgsz=128, batch=4, n_batches=2)
