"""The config file: profiles, types, errors, the permission check, and precedence."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from snfs import config
from snfs.arguments import add_arguments, from_args
from snfs.config import Profile, apply_profile, load_profile, profile_defaults
from snfs.errors import ConfigError
from snfs.secrets import Secret

FULL = """\
[instance.prod]
url = "https://acme.service-now.com"
user = "svc_snfs"
password_file = "/etc/snfs/prod.password"
tables = ["incident", "problem"]
mountpoint = "/mnt/prod"
options = "ro,allow_other"
dir_cache_time = 30
cache_size = "512M"
disk_cache_size = 1073741824
cache_dir = "cache"
spool_dir = "~/spool"
max_in_flight = 4
timeout = 12.5
umask = "027"
uid = 1000
verbose = 1
oauth_grant = "client_credentials"

[instance.dev]
url = "dev12345"
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_full_profile_types(tmp_path: Path) -> None:
    path = write(tmp_path, FULL, 0o644)
    p = load_profile("prod", path)
    assert isinstance(p, Profile)
    assert p.name == "prod" and p.url == "https://acme.service-now.com" and p.path == path
    v = p.values
    assert v["user"] == "svc_snfs"
    assert v["password_file"] == Path("/etc/snfs/prod.password")
    assert v["tables"] == ["incident", "problem"]
    assert v["mountpoint"] == Path("/mnt/prod")
    assert v["fuse_options"] == ["ro", "allow_other"]
    assert v["dir_cache_time"] == 30.0 and isinstance(v["dir_cache_time"], float)
    assert v["cache_size"] == 512 * 2**20
    assert v["disk_cache_size"] == 2**30
    assert v["cache_dir"] == tmp_path / "cache"  # relative to the config file
    assert v["spool_dir"] == Path.home() / "spool"
    assert v["max_in_flight"] == 4 and v["timeout"] == 12.5
    assert v["umask"] == 0o027 and v["uid"] == 1000 and v["verbose"] == 1
    assert v["oauth_grant"] == "client_credentials"
    dev = load_profile("dev", path)
    assert dev is not None and dev.url == "dev12345" and dev.values == {}


def test_no_file_or_no_profile(tmp_path: Path) -> None:
    assert load_profile("prod", tmp_path / "absent.toml") is None
    assert load_profile("staging", write(tmp_path, FULL)) is None


def test_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNFS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.config_path() == tmp_path / "xdg" / "snfs" / "config.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".config" / "snfs" / "config.toml"
    if not (os.geteuid() == 0 and config.SYSTEM_CONFIG.exists()):
        assert config.config_path() == expected
    monkeypatch.setenv("SNFS_CONFIG", str(tmp_path / "x.toml"))
    assert config.config_path() == tmp_path / "x.toml"
    # load_profile without a path uses config_path()
    write(tmp_path, FULL)
    monkeypatch.setenv("SNFS_CONFIG", str(tmp_path / "config.toml"))
    assert load_profile("prod").url == "https://acme.service-now.com"


@pytest.mark.parametrize(
    "line, needle",
    [
        ('colour = "blue"', "unknown key 'colour'"),
        ('instance = "x"', "unknown key 'instance'"),
        ("read-only = true\nread_only = false", "repeats"),
        ("dir_cache_time = 0", "dir_cache_time: must be a number of seconds above 0"),
        ('dir_cache_time = "30"', "dir_cache_time: must be"),
        ('cache_size = "lots"', "cache_size: must be a size"),
        ("max_in_flight = 0", "max_in_flight: must be"),
        ('allow_other = "yes"', "allow_other: must be true or false"),
        ("tables = [1, 2]", "tables: must be a list"),
        ('umask = "999"', "umask: must be an octal"),
        ('oauth_grant = "implicit"', "oauth_grant: must be"),
        ("uid = -1", "uid: must be"),
    ],
)
def test_bad_values_name_key_and_file(tmp_path: Path, line: str, needle: str) -> None:
    path = write(tmp_path, f'[instance.prod]\nurl = "https://a.example"\n{line}\n')
    with pytest.raises(ConfigError) as e:
        load_profile("prod", path)
    assert needle in e.value.message
    assert str(path) in e.value.message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'debug = true\n[instance.prod]\nurl = "x"\n')
    with pytest.raises(ConfigError, match="unknown key 'debug'"):
        load_profile("prod", path)


def test_missing_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing url"):
        load_profile("prod", write(tmp_path, '[instance.prod]\nuser = "u"\n'))


def test_error_in_another_profile_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, FULL + '\n[instance.bad]\nurl = "x"\nbogus = 1\n')
    with pytest.raises(ConfigError, match="bogus"):
        load_profile("prod", path)


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[instance.prod]\nurl = "https://a.example"\nuser = \n')
    with pytest.raises(ConfigError) as e:
        load_profile("prod", path)
    assert "line 3" in e.value.message and str(path) in e.value.message


SECRET = '[instance.prod]\nurl = "https://a.example"\nuser = "u"\npassword = "hunter2"\n'


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_in_readable_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, SECRET, mode)
    with pytest.raises(ConfigError) as e:
        load_profile("prod", path)
    assert f"chmod 600 {path}" in e.value.message
    assert "hunter2" not in e.value.message


@pytest.mark.parametrize("key", ["token", "client_secret", "oauth_secret"])
def test_other_secrets_refused_too(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f'[instance.prod]\nurl = "https://a.example"\n{key} = "s3cret"\n', 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_profile("prod", path)


def test_secret_in_private_file(tmp_path: Path) -> None:
    path = write(tmp_path, SECRET + 'token = "tok"\noauth_secret = "cs"\n', 0o600)
    p = load_profile("prod", path)
    assert isinstance(p.values["password"], Secret)
    assert p.secret("password") == "hunter2"
    assert p.secret("token") == "tok"
    assert p.secret("client_secret") == "cs"
    assert p.secret("absent") is None
    assert "hunter2" not in repr(p) and "hunter2" not in repr(p.values)
    assert "password" not in profile_defaults(p) and "token" not in profile_defaults(p)


def test_secret_in_other_profile_still_refuses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL + '\n[instance.x]\nurl = "y"\npassword = "p"\n', 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_profile("dev", path)


def test_bad_secret_value_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, '[instance.prod]\nurl = "x"\npassword = 12345678\n')
    with pytest.raises(ConfigError) as e:
        load_profile("prod", path)
    assert "12345678" not in e.value.message


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_profile_defaults_keys_are_dests(tmp_path: Path) -> None:
    p = load_profile("prod", write(tmp_path, FULL))
    d = profile_defaults(p)
    dests = {a.dest for a in parser()._actions}
    assert set(d) <= dests
    assert d["tables"] == "incident,problem"
    assert d["fuse_options"] == ["ro", "allow_other", "uid=1000", "umask=027"]
    assert d["cache_size"] == 512 * 2**20


def test_precedence_cli_then_profile_then_defaults(tmp_path: Path) -> None:
    prof = load_profile("prod", write(tmp_path, FULL))
    ap = parser()
    ap.set_defaults(**profile_defaults(prof))
    args = ap.parse_args(
        [
            "prod",
            str(tmp_path / "mnt"),
            "--dir-cache-time",
            "5",
            "--tables",
            "change_request",
            "-o",
            "rw,uid=0",
            "--cache-size",
            "1G",
        ]
    )
    o = from_args(args)
    # command line wins
    assert o.dir_cache_time == 5.0
    assert o.tables == ["change_request"]
    assert o.read_only is False and o.uid == 0
    assert o.cache_size == 2**30
    # profile beats the built-in defaults
    assert o.user == "svc_snfs"
    assert o.password_file == Path("/etc/snfs/prod.password")
    assert o.allow_other is True
    assert o.umask == 0o027
    assert o.max_in_flight == 4 and o.timeout == 12.5
    assert o.disk_cache_size == 2**30
    assert o.oauth_grant == "client_credentials"
    # built-in defaults where neither says anything
    assert o.password_env == "SNFS_PASSWORD" and o.ca_bundle is None
    # and without command-line overrides the profile applies
    o2 = from_args(ap.parse_args(["prod", str(tmp_path / "mnt")]))
    assert o2.dir_cache_time == 30.0 and o2.read_only is True and o2.uid == 1000
    assert o2.tables == ["incident", "problem"] and o2.cache_size == 512 * 2**20


def test_apply_profile(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    args, prof = apply_profile(parser(), ["prod", "/mnt/x", "--timeout", "3"], path)
    assert prof is not None and args.profile == "prod"
    assert args.instance == "https://acme.service-now.com"
    assert args.timeout == 3.0 and args.dir_cache_time == 30.0
    assert args.mountpoint == Path("/mnt/x")
    # options before the positionals, and a name that is no profile: left as is
    args, prof = apply_profile(parser(), ["-v", "--user", "a", "dev999", "/mnt/y"], path)
    assert prof is None and args.instance == "dev999" and args.dir_cache_time == 60.0
    # a URL is never looked up
    args, prof = apply_profile(parser(), ["https://prod", "/mnt/y"], path)
    assert prof is None


def test_apply_profile_mountpoint_from_profile(tmp_path: Path) -> None:
    def optional_mountpoint_parser() -> argparse.ArgumentParser:
        ap = parser()
        for action in ap._actions:  # what options.py needs for `snfs mount PROFILE`
            if action.dest == "mountpoint":
                action.nargs, action.required, action.default = "?", False, None
        return ap

    path = write(tmp_path, FULL)
    args, _ = apply_profile(optional_mountpoint_parser(), ["prod"], path)
    assert args.mountpoint == Path("/mnt/prod")
    args, _ = apply_profile(optional_mountpoint_parser(), ["prod", "/mnt/cli"], path)
    assert args.mountpoint == Path("/mnt/cli")
    with pytest.raises(SystemExit):
        apply_profile(optional_mountpoint_parser(), ["dev"], path)  # no mountpoint anywhere


def test_apply_profile_config_error_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write(tmp_path, SECRET, 0o644)
    with pytest.raises(SystemExit) as e:
        apply_profile(parser(), ["prod", "/mnt/x"], path)
    assert e.value.code == 2
    assert "chmod 600" in capsys.readouterr().err
