"""mount.snfs: mount(8)'s helper arguments -> `snfs mount ... --daemon`."""

from __future__ import annotations

import argparse
import sys

import pytest

from snfs import mount_helper
from snfs.arguments import add_arguments, from_args
from snfs.mount_helper import UsageError, translate


def test_minimal() -> None:
    assert translate(["prod", "/mnt/prod"]) == ["mount", "prod", "/mnt/prod", "--daemon"]


def test_fstab_line_options_dropped() -> None:
    # what mount(8) passes for `prod /mnt/prod fuse.snfs _netdev,noauto,x-systemd.automount`
    argv = [
        "prod",
        "/mnt/prod",
        "-o",
        "rw,_netdev,noauto,x-systemd.automount,"
        "x-systemd.idle-timeout=60,nofail,defaults,auto,users,comment=x",
        "-t",
        "fuse.snfs",
    ]
    assert translate(argv) == ["mount", "prod", "/mnt/prod", "--daemon"]


def test_what_mount8_really_passes() -> None:
    # recorded from util-linux 2.38 for
    # `mount -t fuse.snfs prod DIR -o user=svc,tables=a:b,_netdev,noauto,x-systemd.automount,ro`
    argv = ["prod", "/mnt/prod", "-o", "ro,tables=a:b,user=svc,_netdev,exec,suid,dev"]
    assert translate(argv) == [
        "mount",
        "prod",
        "/mnt/prod",
        "--daemon",
        "-o",
        "ro,exec,suid,dev",
        "--tables",
        "a,b",
        "--user",
        "svc",
    ]
    # `mount -fv -t fuse.snfs prod DIR -o allow_other`
    assert translate(["prod", "/mnt/prod", "-f", "-v", "-o", "rw,allow_other"]) == [
        "mount",
        "prod",
        "/mnt/prod",
        "--daemon",
        "-o",
        "allow_other",
        "-v",
    ]


def test_snfs_options_become_long_options() -> None:
    argv = [
        "prod",
        "/mnt/prod",
        "-o",
        "user=svc,tables=incident:problem,dir_cache_time=30,password_file=/etc/snfs/p",
    ]
    assert translate(argv) == [
        "mount",
        "prod",
        "/mnt/prod",
        "--daemon",
        "--user",
        "svc",
        "--tables",
        "incident,problem",
        "--dir-cache-time",
        "30",
        "--password-file",
        "/etc/snfs/p",
    ]


def test_user_flag_versus_user_value() -> None:
    assert translate(["p", "/m", "-o", "user"]) == ["mount", "p", "/m", "--daemon"]
    assert translate(["p", "/m", "-o", "user=svc"])[-2:] == ["--user", "svc"]
    assert translate(["p", "/m", "-o", "username=svc"])[-2:] == ["--user", "svc"]


def test_fuse_options_kept_and_mixed() -> None:
    argv = [
        "-v",
        "-o",
        "ro,allow_other",
        "https://acme.service-now.com",
        "/mnt/a",
        "-o",
        "uid=1000,gid=1000,umask=027,cache-size=512M,allow_insecure_http,"
        "credential=snfs-password,oauth-client-id=abc",
    ]
    assert translate(argv) == [
        "mount",
        "https://acme.service-now.com",
        "/mnt/a",
        "--daemon",
        "-o",
        "ro,allow_other,uid=1000,gid=1000,umask=027",
        "--cache-size",
        "512M",
        "--allow-insecure-http",
        "--credential",
        "snfs-password",
        "--oauth-client-id",
        "abc",
        "-v",
    ]


def test_bundled_and_attached_flags() -> None:
    assert translate(["-snvoro", "p", "/m"]) == ["mount", "p", "/m", "--daemon", "-o", "ro", "-v"]
    assert translate(["p", "/m", "-oro", "-tfuse.snfs"]) == [
        "mount",
        "p",
        "/m",
        "--daemon",
        "-o",
        "ro",
    ]


def test_flag_option_values() -> None:
    assert translate(["p", "/m", "-o", "allow_insecure_http=yes"])[-1] == "--allow-insecure-http"
    assert translate(["p", "/m", "-o", "allow_insecure_http=no"]) == [
        "mount",
        "p",
        "/m",
        "--daemon",
    ]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["p"], "usage"),
        (["p", "/m", "extra"], "usage"),
        (["p", "/m", "-o"], "needs a value"),
        (["p", "/m", "-o", "password=hunter2"], "secret"),
        (["p", "/m", "-o", "token=abc"], "secret"),
        (["p", "/m", "-o", "client_secret=abc"], "secret"),
        (["p", "/m", "-o", "dir_cache_time"], "needs a value"),
        (["p", "/m", "-t", "nfs"], "not snfs"),
        (["p", "/m", "-N", "/proc/1/ns/mnt"], "not supported"),
        (["p", "/m", "-x"], "unknown flag"),
    ],
)
def test_usage_errors(argv: list[str], needle: str) -> None:
    with pytest.raises(UsageError, match=needle) as e:
        translate(argv)
    assert "hunter2" not in str(e.value)


def test_output_parses_as_snfs_mount() -> None:
    out = translate(
        [
            "prod",
            "/mnt/prod",
            "-o",
            "rw,_netdev,ro,allow_other,user=svc,"
            "tables=a:b,dir_cache_time=30,cache_size=1G,max_in_flight=3",
        ]
    )
    assert out[0] == "mount"
    p = argparse.ArgumentParser()
    add_arguments(p)
    o = from_args(p.parse_args(out[1:]))
    assert o.daemon and o.read_only and o.allow_other and o.user == "svc"
    assert o.tables == ["a", "b"] and o.dir_cache_time == 30 and o.cache_size == 2**30
    assert o.max_in_flight == 3 and o.extra_fuse_options == []


def test_main_execs_python_safe_path_m_snfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`-P`: a folder named snfs in the current directory is never imported instead."""
    calls = []
    monkeypatch.setattr(mount_helper.os, "execv", lambda path, args: calls.append((path, args)))
    mount_helper.main(["prod", "/mnt/prod", "-o", "ro"])
    assert calls == [
        (
            sys.executable,
            [
                sys.executable,
                "-P",
                "-m",
                "snfs",
                "mount",
                "prod",
                "/mnt/prod",
                "--daemon",
                "-o",
                "ro",
            ],
        )
    ]


def test_main_fake_and_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(mount_helper.os, "execv", lambda *a: pytest.fail("must not exec"))
    assert mount_helper.main(["-f", "prod", "/mnt/prod"]) == 0
    assert mount_helper.main(["prod"]) == 1
    assert "mount.snfs: usage" in capsys.readouterr().err
