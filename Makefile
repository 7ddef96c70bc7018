# yolo-ldac developer tasks. `make test` is the command CI runs (.ci/run).
#
# The virtual environment lives in .venv. torch and torchvision are installed in a pip call of their own,
# before the project: on the project's machines pip finds these exact releases on local disk, and doing it
# first keeps the project's resolver from ever choosing another torch build to download.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

TORCH_PINS := torch==2.14.1 torchvision==0.29.1

# Private, offline Ultralytics settings: no settings file in the user's home, no downloads, no auto-installs.
RUN_ENV := OMP_NUM_THREADS=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR="$(CURDIR)/.cache/ultralytics"

PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: install test demo bench-data clean distclean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-run only when the project's metadata changes (or the venv is new); a no-op otherwise.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --progress-bar off $(TORCH_PINS)
	$(PIP) install --progress-bar off -e ".[dev,export]"
	@touch $(STAMP)

test: install
	@mkdir -p .cache/ultralytics
	$(RUN_ENV) $(PY) -m pytest tests -q -x --durations=15 $(PYTEST_ARGS)

demo: install
	@mkdir -p .cache/ultralytics
	$(RUN_ENV) $(PY) examples/demo.py $(DEMO_ARGS)

# Real photos for the composite benchmark set: Debian's opencv-doc ships ~100 stills and vtest.avi (needs root).
bench-data:
	apt-get update -qq && apt-get install -y -qq opencv-doc

# Build and run outputs. The virtual environment is kept: `make distclean` removes it too.
clean:
	rm -rf build dist *.egg-info .pytest_cache .cache runs
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
