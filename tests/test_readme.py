"""README.md and `yolo-ldac help` say what the code does: their commands run as written (the cheap ones are run,
every other one is parsed and checked the way the CLI checks it before a run), and the parts table names every
registered part."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# commands that print and exit: run as written
CHEAP = {"help", "--help", "-h", "version", "--version", "cfg", "list"}


def shell_lines(text: str) -> list[str]:
    """Every command line of the ```bash / ```sh blocks of ``text``, without its comment."""
    lines = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.splitlines():
            cmd = line.split(" #")[0].strip()
            if cmd and not cmd.startswith("#"):
                lines.append(cmd)
    return lines


def yolo_ldac_commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line)[1:] for line in lines if line.startswith("yolo-ldac")]


README_COMMANDS = yolo_ldac_commands(shell_lines(README.read_text(encoding="utf-8")))


def _cli() -> list[str]:
    """The installed console script next to this interpreter, else the module it runs."""
    script = Path(sys.executable).parent / "yolo-ldac"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "yolo_ldac.cli"]


def test_readme_has_commands():
    assert len(README_COMMANDS) > 20
    assert {tuple(c) for c in README_COMMANDS} >= {("list",), ("help",), ("version",), ("cfg",)}


@pytest.mark.parametrize("argv", [c for c in README_COMMANDS if c and c[0] in CHEAP], ids=" ".join)
def test_cheap_readme_commands_run_as_written(argv):
    out = subprocess.run(_cli() + argv, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and "error" not in out.stderr.lower(), out.stderr


@pytest.mark.parametrize("argv", [c for c in README_COMMANDS if c and c[0] not in CHEAP], ids=" ".join)
def test_readme_commands_parse_and_check(argv):
    """The mode exists, every key is one of default.yaml's or an Ultralytics key the CLI passes through, and the
    values pass the CLI's own checks (those that need the machine, `device=`, aside)."""
    from yolo_ldac.cfg import MODES, get_cfg, load_defaults, ultralytics_keys
    from yolo_ldac.cli import parse_args

    mode, overrides = parse_args(argv)
    assert mode in MODES
    unknown = set(overrides) - set(load_defaults()) - ultralytics_keys()
    assert not unknown, unknown
    overrides.pop("device", None)  # `device=0,1` is checked against this machine's GPUs
    get_cfg(overrides, mode=mode)


def test_help_examples_parse_and_check():
    from yolo_ldac.cfg import get_cfg
    from yolo_ldac.cli import parse_args, usage

    section = usage().split("Examples:")[1]
    examples = [line.split(" #")[0].strip() for line in section.splitlines() if line.strip().startswith("yolo-ldac ")]
    assert len(examples) >= 10
    for line in examples:
        mode, overrides = parse_args(shlex.split(line)[1:])
        get_cfg(overrides, mode=mode)
    assert "pruned.pt" not in usage()  # no mode writes it: a run's model is weights/best.pt


def test_readme_parts_table_names_every_registered_part():
    from yolo_ldac.parts import presets, registries

    text = README.read_text(encoding="utf-8")
    table = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(criterion|push|compensate)=` \|[^|]*\|(.*)\|$",
                                                         text, re.M)}
    for key, registry in registries().items():
        named = set(re.findall(r"`([a-z0-9_]+)`", table[key]))
        assert set(registry) <= named, (key, set(registry) - named)
    ldac = presets()["ldac"]
    assert (f"`method=ldac` (the default) is `criterion={ldac['criterion']} push={ldac['push']} "
            f"compensate={ldac['compensate']}`") in text
