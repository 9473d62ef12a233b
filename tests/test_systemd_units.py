"""The systemd units: `systemd-analyze verify` passes without a warning, and the units keep
the properties the mount depends on."""

from __future__ import annotations

import argparse
import configparser
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from snfs.arguments import add_arguments

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_UNIT = ROOT / "systemd" / "snfs@.service"
USER_UNIT = ROOT / "systemd" / "user" / "snfs@.service"
SNFS = ROOT / ".venv" / "bin" / "snfs"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Each of these gives the service its own mount namespace, from which the FUSE mount would not
# propagate to the host (PrivateDevices= would also hide /dev/fuse).
NAMESPACE_SETTINGS = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "MountFlags",
    "DynamicUser",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "RootDirectory",
    "RootImage",
    "PrivateNetwork",
    "PrivateUsers",
)


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if IN_CI:
            pytest.fail("systemd-analyze is missing (apt package systemd; make test-deps)")
        pytest.skip("systemd-analyze is missing (apt package systemd)")
    return tool


def snfs_binary() -> Path:
    if not os.access(SNFS, os.X_OK):
        pytest.fail(f"{SNFS} is missing: run make venv")
    return SNFS


def verify(tool: str, unit: Path, *extra: str, env: dict[str, str] | None = None) -> None:
    r = subprocess.run(
        [tool, *extra, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit.parent,
        env=env,
    )
    # verify exits 0 on unknown keys and bad values (it only warns): any output is a failure.
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (
        f"systemd-analyze verify {unit.name}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    )


def service_section(unit: Path) -> dict[str, list[str]]:
    """Key -> values of [Service] (keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_system_unit_verifies(tmp_path: Path) -> None:
    tool = systemd_analyze()
    text = SYSTEM_UNIT.read_text()
    assert "/usr/local/bin/snfs " in text
    # The unit's commands point at /usr/local/bin/snfs (a symlink to the venv, RUNNING.md);
    # verify checks that they exist, so verify a copy that differs only in that path.
    copy = tmp_path / SYSTEM_UNIT.name
    copy.write_text(text.replace("/usr/local/bin/snfs ", f"{snfs_binary()} "))
    verify(tool, copy)


def test_user_unit_verifies(tmp_path: Path) -> None:
    tool = systemd_analyze()
    # The real unit text: %h is $HOME, where ~/.local/bin/snfs is made to exist.
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "snfs").symlink_to(snfs_binary())
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    shutil.copy(USER_UNIT, unit_dir / USER_UNIT.name)
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    env.pop("XDG_CONFIG_HOME", None)
    verify(tool, unit_dir / USER_UNIT.name, "--user", env=env)


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_unit_properties(unit: Path) -> None:
    s = service_section(unit)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"]
    assert any(v.startswith("snfs-password:") for v in s["LoadCredential"])
    for key in NAMESPACE_SETTINGS:
        assert key not in s, f"{key}= would hide the mount from the host"
    # the ExecStart command line is one `snfs mount` accepts, in the foreground
    argv = shlex.split(s["ExecStart"][0])
    assert argv[0].endswith("/snfs") and argv[1] == "mount"
    assert "--daemon" not in argv
    argv = [a.replace("%i", "prod").replace("${MOUNTPOINT}", "/mnt/snfs/prod") for a in argv]
    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(argv[2:])
    assert a.instance == "prod" and a.credential == "snfs-password"
    assert any("unmount ${MOUNTPOINT}" in v for v in s["ExecStop"])


def test_system_unit_hardening() -> None:
    s = service_section(SYSTEM_UNIT)
    assert s["DeviceAllow"] == ["/dev/fuse rw"]
    assert s["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN"]
    assert "NoNewPrivileges" in s
    assert s["StateDirectory"] == ["snfs"] and s["CacheDirectory"] == ["snfs"]
    env = " ".join(s["Environment"])
    assert "XDG_STATE_HOME=/var/lib" in env and "XDG_CACHE_HOME=/var/cache" in env
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(SYSTEM_UNIT.read_text())
    assert "network-online.target" in unit["Unit"]["After"]
    assert "network-online.target" in unit["Unit"]["Wants"]


def test_user_unit_allows_setuid_fusermount() -> None:
    s = service_section(USER_UNIT)
    # Each of these implies NoNewPrivileges=yes in a user manager, which breaks fusermount3.
    for key in (
        "NoNewPrivileges",
        "SystemCallFilter",
        "RestrictAddressFamilies",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "ProtectClock",
        "ProtectHostname",
        "SystemCallArchitectures",
        "CapabilityBoundingSet",
    ):
        assert key not in s, key
    assert "%h/snfs/%i" in " ".join(s["Environment"])
