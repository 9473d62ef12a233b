"""docs/SEMANTICS.md, executed: every errno its tables name is provoked on a real mount.

The test reads the document's tables; each row that names an errno (`ENOENT`, `EROFS`, ...)
is a claim (section, first cell, errno). `CHECKS` holds one check per claim: it does what the
row says through a real mount of the emulator and asserts that errno. A claim without a check
fails (the document says something nothing verifies), and so does a check without a claim (the
document stopped saying it). This is how mountpoint-s3 keeps its semantics document honest.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from snfs.emulator.demo_data import demo_id
from tests.support.client_support import shared_emulator
from tests.support.emulator_proc import EmulatorProc
from tests.support.mount_proc import MountProc, start_mount

DOC = Path(__file__).resolve().parent.parent / "docs" / "SEMANTICS.md"
ERRNO_NAMES = {n for n in dir(errno) if re.fullmatch(r"E[A-Z]+", n)}
INC1 = demo_id("inc1")

Claim = tuple[str, str, str]  # (section, row, errno name)


def claims(text: str) -> list[Claim]:
    """(section, row's first cell without backticks, errno) for each errno named in a row of
    a table of `text` (header rows and separators are not claims)."""
    out: list[Claim] = []
    section, in_table = "", False
    for line in text.splitlines():
        if line.startswith("#"):
            section, in_table = line.lstrip("#").strip(), False
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= set("-: "):
            continue
        if not in_table:  # the header
            in_table = True
            continue
        row = cells[0].replace("`", "")
        for name in sorted(set(re.findall(r"\bE[A-Z]{2,}\b", line)) & ERRNO_NAMES):
            out.append((section, row, name))
    return out


# -- what the checks work on -------------------------------------------------------------------

emu = shared_emulator("--demo")


@dataclass
class Ctx:
    emu: EmulatorProc
    mnt: MountProc
    ro: MountProc
    request: pytest.FixtureRequest
    done: dict[str, bool] = field(default_factory=dict)

    def p(self, *parts: str) -> Path:
        return self.mnt.path(*parts)

    def record(self) -> str:
        """A new incident, unseen by the mount."""
        return self.emu.json("POST", "/api/now/table/incident", {"short_description": "t"})[
            "result"
        ]["sys_id"]

    def attach(self, record: str, name: str = "f.txt", data: bytes = b"data\n") -> str:
        status, _, raw = self.emu.request(
            "POST",
            f"/api/now/attachment/file?table_name=incident&table_sys_id={record}&file_name={name}",
            data,
            headers={"Content-Type": "text/plain"},
        )
        assert status == 201, raw
        return json.loads(raw)["result"]["sys_id"]

    def fresh_file(self) -> tuple[Path, str]:
        """A file on a new record, looked up through the mount (its content never read)."""
        record = self.record()
        sys_id = self.attach(record)
        path = self.p("incident", record, "f.txt")
        assert path.stat().st_size == 5
        return path, sys_id


@pytest.fixture(scope="module")
def ctx(
    emu: EmulatorProc, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Ctx]:
    tmp = tmp_path_factory.mktemp("semantics")
    m = start_mount(emu.url, tmp / "rw", tmp / "rw-work")
    try:
        ro = start_mount(emu.url, tmp / "ro", tmp / "ro-work", "-o", "ro")
        try:
            yield Ctx(emu, m, ro, request)
        finally:
            ro.stop()
    finally:
        m.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(emu: EmulatorProc) -> Iterator[None]:
    yield
    emu.request("DELETE", "/__emulator__/faults")


def fails(code: int, action: Callable[[], Any]) -> None:
    with pytest.raises(OSError) as e:
        action()
    assert e.value.errno == code, f"{errno.errorcode.get(e.value.errno)}: {e.value}"


def refused_listing(c: Ctx, code: int, **fault: Any) -> None:
    record = c.record()
    c.emu.fault(method="GET", path="/attachment$", query=record, count=100, **fault)
    fails(code, lambda: c.p("incident", record, "x.txt").stat())


def refused_table(c: Ctx, table: str, code: int, **fault: Any) -> None:
    c.emu.fault(method="GET", path="/attachment$", query=f"table_name={table}", count=200, **fault)
    fails(code, lambda: os.listdir(c.p(table)))


def refused_read(c: Ctx, code: int, **fault: Any) -> None:
    path, sys_id = c.fresh_file()
    c.emu.fault(method="GET", path=f"/attachment/{sys_id}/file", count=100, **fault)
    fails(code, path.read_bytes)


def gone_before_read(c: Ctx) -> None:
    path, sys_id = c.fresh_file()
    c.emu.json("DELETE", f"/api/now/attachment/{sys_id}")
    fails(errno.ENOENT, path.read_bytes)


def refused_delete(c: Ctx, code: int, **fault: Any) -> None:
    path, sys_id = c.fresh_file()
    c.emu.fault(method="DELETE", path=f"/attachment/{sys_id}", count=100, **fault)
    fails(code, path.unlink)
    assert c.emu.attachments(f"sys_id={sys_id}"), "refused: still on the instance"


def rename_over_undeletable(c: Ctx) -> None:
    """`mv a b` on an instance with PATCH, where it refuses to delete the old `b`: `a` is
    renamed back, the `mv` fails, and the instance keeps both names as they were."""
    emu: EmulatorProc = c.request.getfixturevalue("patch_emulator")
    m: MountProc = c.request.getfixturevalue("patch_mount")
    record = emu.json("POST", "/api/now/table/incident", {"short_description": "t"})["result"][
        "sys_id"
    ]
    ids = {}
    for name in ("a.txt", "b.txt"):
        status, _, raw = emu.request(
            "POST",
            f"/api/now/attachment/file?table_name=incident&table_sys_id={record}&file_name={name}",
            name.encode(),
            headers={"Content-Type": "text/plain"},
        )
        assert status == 201, raw
        ids[json.loads(raw)["result"]["sys_id"]] = name
    b_id = next(k for k, v in ids.items() if v == "b.txt")
    emu.fault(method="DELETE", path=f"/attachment/{b_id}", count=100, status=500)
    d = m.path("incident", record)
    fails(errno.EIO, lambda: os.rename(d / "a.txt", d / "b.txt"))
    names = {a["sys_id"]: a["file_name"] for a in emu.attachments(f"table_sys_id={record}")}
    assert names == ids, names


def rename_exchange(c: Ctx) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    a, b = (os.fsencode(c.p("incident", INC1, n)) for n in ("readme.txt", "notes.txt"))
    if libc.renameat2(-100, a, -100, b, 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


ZZ = ("ZZ_YYincident", INC1)


def huawei(c: Ctx) -> Path:
    m: MountProc = c.request.getfixturevalue("huawei_mount")
    return m.path("accessorys", "incident")


def huawei_count(c: Ctx) -> None:
    d = huawei(c)
    (d / "first.txt").write_bytes(b"1")  # --limit-count 1: the next one is over it
    fails(errno.EDQUOT, lambda: (d / "second.txt").write_bytes(b"2"))


def easyvista_no_delete(c: Ctx) -> None:
    """A server without DELETE (it answers the mount's probe with 405): every `rm` gets EPERM
    without a request that could half-work, and the document stays on the server."""
    ev: EmulatorProc = c.request.getfixturevalue("easyvista")
    m: MountProc = c.request.getfixturevalue("easyvista_mount")
    api = "/api/v1/50004"
    rfc = ev.json("POST", f"{api}/requests", {"title": "t"})["HREF"].rsplit("/", 1)[1]
    doc = {"filename": "kept.txt", "filedata": base64.b64encode(b"kept").decode()}
    r = httpx.post(
        f"{ev.url}{api}/requests/{rfc}/documents",
        files={"documents": (None, json.dumps([doc]))},  # form-data, as document 004 says
        auth=("admin", "admin"),
    )
    assert r.status_code == 201, r.text
    fails(errno.EPERM, m.path("requests", rfc, "kept.txt").unlink)
    fails(errno.EPERM, m.path("requests", rfc, "kept.txt").unlink)
    assert len(ev.json("GET", f"{api}/requests/{rfc}/documents")["Documents"]) == 1


def easyvista_no_list(c: Ctx) -> Path:
    """A record directory of an EasyVista server without the documents list."""
    ev: EmulatorProc = c.request.getfixturevalue("easyvista_unlisted")
    m: MountProc = c.request.getfixturevalue("easyvista_unlisted_mount")
    rfc = ev.json("POST", "/api/v1/50004/requests", {"title": "t"})["HREF"].rsplit("/", 1)[1]
    return m.path("requests", rfc)


CHECKS: dict[Claim, Callable[[Ctx], None]] = {
    ("The tree", "/", "EROFS"): lambda c: fails(
        errno.EROFS, lambda: c.p(*ZZ, "new.png").write_bytes(b"x")
    ),
    ("The tree", "/", "EPERM"): lambda c: (
        fails(errno.EPERM, c.p(*ZZ, "avatar.png").unlink),
        fails(errno.EPERM, lambda: c.p(*ZZ, "avatar.png").rename(c.p(*ZZ, "other.png"))),
    ),
    ("Operations", "lookup", "ENOENT"): lambda c: fails(
        errno.ENOENT, lambda: c.p("incident", "0" * 32).stat()
    ),
    ("Operations", "lookup", "EACCES"): lambda c: refused_listing(c, errno.EACCES, status=403),
    ("Operations", "lookup", "EIO"): lambda c: refused_listing(c, errno.EIO, status=500),
    ("Operations", "lookup", "ENAMETOOLONG"): lambda c: fails(
        errno.ENAMETOOLONG, lambda: c.p("incident", INC1, "n" * 256).stat()
    ),
    ("Operations", "readdir", "EACCES"): lambda c: refused_table(
        c, "problem", errno.EACCES, status=403
    ),
    ("Operations", "readdir", "EAGAIN"): lambda c: refused_table(
        c, "kb_knowledge", errno.EAGAIN, status=429, retry_after=0
    ),
    ("Operations", "readdir", "EIO"): lambda c: refused_table(
        c, "change_request", errno.EIO, status=500
    ),
    ("Operations", "readlink", "EINVAL"): lambda c: fails(
        errno.EINVAL, lambda: os.readlink(c.p("incident", INC1, "readme.txt"))
    ),
    ("Operations", "open (read)", "EISDIR"): lambda c: fails(
        errno.EISDIR, lambda: os.open(c.p("incident"), os.O_WRONLY)
    ),
    ("Operations", "read", "ENOENT"): gone_before_read,
    ("Operations", "read", "EACCES"): lambda c: refused_read(c, errno.EACCES, status=403),
    ("Operations", "read", "EIO"): lambda c: refused_read(c, errno.EIO, status=500),
    ("Operations", "getxattr / listxattr", "ENODATA"): lambda c: fails(
        errno.ENODATA, lambda: os.getxattr(c.p("incident", INC1, "readme.txt"), "user.nope")
    ),
    ("Operations", "getxattr / listxattr", "ENOTSUP"): lambda c: fails(
        errno.ENOTSUP,
        lambda: os.getxattr(c.p("incident", INC1, "readme.txt"), "security.selinux"),
    ),
    ("Operations", "setxattr / removexattr", "ENOTSUP"): lambda c: (
        fails(
            errno.ENOTSUP, lambda: os.setxattr(c.p("incident", INC1, "readme.txt"), "user.x", b"1")
        ),
        fails(
            errno.ENOTSUP,
            lambda: os.removexattr(c.p("incident", INC1, "readme.txt"), "user.mime_type"),
        ),
    ),
    ("Operations", "unlink", "EACCES"): lambda c: refused_delete(c, errno.EACCES, status=403),
    ("Operations", "unlink", "EIO"): lambda c: refused_delete(c, errno.EIO, status=500),
    ("Operations", "unlink", "EROFS"): lambda c: fails(
        errno.EROFS, c.ro.path("incident", INC1, "readme.txt").unlink
    ),
    ("Operations", "mkdir", "EEXIST"): lambda c: fails(
        errno.EEXIST, lambda: os.mkdir(c.p("incident", INC1))
    ),
    ("Operations", "mkdir", "ENOENT"): lambda c: fails(
        errno.ENOENT, lambda: os.mkdir(c.p("incident", "0" * 32))
    ),
    ("Operations", "mkdir", "EPERM"): lambda c: (
        fails(errno.EPERM, lambda: os.mkdir(c.p("no_such_table_here"))),
        fails(errno.EPERM, lambda: os.mkdir(c.p("incident", INC1, "sub"))),
    ),
    ("Operations", "rmdir", "ENOTEMPTY"): lambda c: fails(
        errno.ENOTEMPTY, lambda: os.rmdir(c.p("incident", INC1))
    ),
    ("Operations", "rmdir", "EPERM"): lambda c: fails(
        errno.EPERM, lambda: os.rmdir(c.p("problem"))
    ),
    ("Operations", "setattr: mode, uid, gid", "EROFS"): lambda c: fails(
        errno.EROFS, lambda: os.chmod(c.ro.path("incident", INC1, "readme.txt"), 0o600)
    ),
    ("Operations", "setattr: times", "EROFS"): lambda c: fails(
        errno.EROFS, lambda: os.utime(c.ro.path("incident", INC1, "readme.txt"), (1, 1))
    ),
    ("Operations", "link, symlink, mknod", "EPERM"): lambda c: (
        fails(
            errno.EPERM,
            lambda: os.link(c.p("incident", INC1, "readme.txt"), c.p("incident", INC1, "l")),
        ),
        fails(errno.EPERM, lambda: os.symlink("readme.txt", c.p("incident", INC1, "s"))),
        fails(errno.EPERM, lambda: os.mknod(c.p("incident", INC1, "fifo"), stat.S_IFIFO | 0o600)),
    ),
    ("Renaming", "attachment → other real name, same record (mv a b)", "EIO"): (
        rename_over_undeletable
    ),
    ("Renaming", "RENAME_EXCHANGE", "EINVAL"): lambda c: fails(
        errno.EINVAL, lambda: rename_exchange(c)
    ),
    ("Renaming", "anything but files in record directories", "EPERM"): lambda c: fails(
        errno.EPERM, lambda: os.rename(c.p("incident", INC1), c.p("incident", "renamed"))
    ),
    ("Backends", "create (close)", "EFBIG"): lambda c: fails(
        errno.EFBIG, lambda: (huawei(c) / "big.txt").write_bytes(b"x" * (2 << 20))
    ),
    ("Backends", "create (close)", "EPERM"): lambda c: fails(
        errno.EPERM, lambda: (huawei(c) / "tool.exe").write_bytes(b"MZ")
    ),
    ("Backends", "create (close)", "ENAMETOOLONG"): lambda c: fails(
        errno.ENAMETOOLONG, lambda: (huawei(c) / ("n" * 300 + ".txt")).write_bytes(b"x")
    ),
    ("Backends", "create (close)", "EDQUOT"): huawei_count,
    ("Backends", "unlink", "EPERM"): easyvista_no_delete,
    ("Backends", "ls a record", "EOPNOTSUPP"): lambda c: fails(
        errno.EOPNOTSUPP, lambda: os.listdir(easyvista_no_list(c))
    ),
    ("Backends", "create (close)", "EOPNOTSUPP"): lambda c: fails(
        errno.EOPNOTSUPP, lambda: (easyvista_no_list(c) / "a.txt").write_bytes(b"a")
    ),
}


@pytest.fixture(scope="module")
def huawei_mount(
    module_emulator_factory: Callable[..., EmulatorProc],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MountProc]:
    hw = module_emulator_factory(
        "--kind", "huawei", "--limit-size", "1", "--limit-file-type", "txt", "--limit-count", "1"
    )
    tmp = tmp_path_factory.mktemp("huawei")
    m = start_mount(f"huawei+{hw.url}", tmp / "m", tmp / "w", env={"SNFS_TOKEN": "test-token"})
    yield m
    m.stop()


@pytest.fixture(scope="module")
def easyvista(module_emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    return module_emulator_factory("--kind", "easyvista", "--no-delete")


@pytest.fixture(scope="module")
def easyvista_unlisted(module_emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    return module_emulator_factory("--kind", "easyvista", "--no-list")


@pytest.fixture(scope="module")
def easyvista_unlisted_mount(
    easyvista_unlisted: EmulatorProc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MountProc]:
    tmp = tmp_path_factory.mktemp("easyvista-unlisted")
    m = start_mount(f"easyvista+{easyvista_unlisted.url}/api/v1/50004", tmp / "m", tmp / "w")
    yield m
    m.stop()


@pytest.fixture(scope="module")
def patch_emulator(module_emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    return module_emulator_factory("--release", "australia")  # the release with PATCH


@pytest.fixture(scope="module")
def patch_mount(
    patch_emulator: EmulatorProc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MountProc]:
    tmp = tmp_path_factory.mktemp("patch")
    m = start_mount(patch_emulator.url, tmp / "m", tmp / "w")
    yield m
    m.stop()


@pytest.fixture(scope="module")
def easyvista_mount(
    easyvista: EmulatorProc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MountProc]:
    tmp = tmp_path_factory.mktemp("easyvista")
    m = start_mount(f"easyvista+{easyvista.url}/api/v1/50004", tmp / "m", tmp / "w")
    yield m
    m.stop()


DOC_CLAIMS = claims(DOC.read_text())


def test_the_document_names_errnos_in_its_tables() -> None:
    assert len(DOC_CLAIMS) >= 30, DOC_CLAIMS


def test_every_claim_has_a_check_and_every_check_a_claim() -> None:
    unchecked = [c for c in DOC_CLAIMS if c not in CHECKS]
    stale = [c for c in CHECKS if c not in DOC_CLAIMS]
    assert not unchecked, f"SEMANTICS.md says, nothing checks: {unchecked}"
    assert not stale, f"checked, SEMANTICS.md no longer says: {stale}"


@pytest.mark.parametrize("claim", DOC_CLAIMS, ids=lambda c: f"{c[0]}:{c[1]}:{c[2]}")
def test_claim_holds_on_a_real_mount(ctx: Ctx, claim: Claim) -> None:
    check = CHECKS.get(claim)
    if check is None:
        pytest.fail(f"no check for {claim}")
    check(ctx)
