"""pysnow 0.7.17, unchanged, against the emulator: list, upload, delete attachments; query
records."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from snfs.emulator.demo_data import demo_id
from tests.support.emulator_proc import EmulatorProc

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pysnow
    import requests

INC1, INC3 = demo_id("inc1"), demo_id("inc3")


@pytest.fixture(scope="module")
def emu(module_emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    return module_emulator_factory("--demo")


@pytest.fixture(scope="module")
def incidents(emu: EmulatorProc) -> pysnow.Resource:
    host = emu.url.removeprefix("http://")
    client = pysnow.Client(host=host, user="admin", password="admin", use_ssl=False)
    return client.resource(api_path="/table/incident")


def test_query_records(incidents: pysnow.Resource) -> None:
    record = incidents.get(query={"number": "INC0010001"}).one()
    assert record["sys_id"] == INC1
    # pysnow's new API does not follow Link: it gets exactly one page.
    assert len(list(incidents.get(query="numberSTARTSWITHINC", limit=2).all())) == 2


def test_list_attachments(incidents: pysnow.Resource) -> None:
    rows = list(incidents.attachments.get(INC1))
    names = sorted(r["file_name"] for r in rows)
    assert "notes.txt" in names and names.count("notes.txt") == 2 and "avatar.png" not in names


def test_upload_and_delete(incidents: pysnow.Resource, emu: EmulatorProc, tmp_path: Path) -> None:
    path = tmp_path / "from pysnow.txt"
    path.write_bytes(b"uploaded by pysnow\n")
    result = incidents.attachments.upload(INC3, str(path)).one()
    assert result["file_name"] == "from pysnow.txt" and result["table_sys_id"] == INC3
    assert result["size_bytes"] == str(len(path.read_bytes()))
    listed = [r["sys_id"] for r in incidents.attachments.get(INC3)]
    assert result["sys_id"] in listed
    assert incidents.attachments.delete(result["sys_id"]) == {"status": "record deleted"}
    assert result["sys_id"] not in [r["sys_id"] for r in emu.attachments(f"table_sys_id={INC3}")]


def test_multipart_without_boundary_is_rejected(incidents: pysnow.Resource, tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_bytes(b"x")
    with pytest.raises(requests.HTTPError) as info:
        incidents.attachments.upload(INC3, str(path), multipart=True).one()
    assert info.value.response.status_code == 400
