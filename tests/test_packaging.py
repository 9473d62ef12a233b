"""What an install pulls in: the mount never needs the emulator's web stack, which is the
`snfs[emulator]` extra; the benchmark stands on the product, not on the tests."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from snfs import cli

ROOT = Path(__file__).resolve().parent.parent
EMULATOR_STACK = ("starlette", "hypercorn", "python-multipart")


def test_emulator_stack_is_an_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for name in EMULATOR_STACK:
        assert name not in deps
        assert any(d.startswith(name) for d in extras["emulator"])
    assert "snfs[emulator]" in extras["test"]
    assert {"ruff", "mypy", "types-cachetools"} <= {
        d.split(">")[0].split("=")[0] for d in extras["test"]
    }


def test_mount_and_demo_do_not_import_the_emulator_stack() -> None:
    code = (
        "import sys, snfs.mount, snfs.demo, snfs.mount_helper, snfs.status;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('starlette', 'hypercorn',"
        " 'multipart', 'python_multipart') or m.startswith('snfs.emulator.')"
        " and m != 'snfs.emulator.launch'];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_missing_extra_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The extra cannot be uninstalled under the running suite: the import fails by hand."""

    def no_starlette(name: str) -> None:
        raise ModuleNotFoundError("No module named 'starlette'", name="starlette")

    monkeypatch.setattr(cli.importlib, "import_module", no_starlette)
    assert cli.main(["emulator", "--demo"]) == 2
    assert "pip install 'snfs[emulator]'" in capsys.readouterr().err


def test_bench_does_not_import_the_tests() -> None:
    for path in (ROOT / "bench").glob("*.py"):
        text = path.read_text()
        assert "from tests" not in text and "import tests" not in text, path.name
