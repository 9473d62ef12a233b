"""The emulator's REST API over real sockets, against one --demo emulator for the whole module."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from snfs.emulator.demo_data import demo_id
from tests.support.emulator_proc import EmulatorProc
from tests.support.waiting import eventually

INC1, INC2, INC3, HRC1 = demo_id("inc1"), demo_id("inc2"), demo_id("inc3"), demo_id("hrc1")
README, BIG, HR_ATT, SHOT = (
    demo_id("att:readme"),
    demo_id("att:big"),
    demo_id("att:hr"),
    demo_id("att:shot"),
)
DEMO_TOTAL = 17
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def emu(module_emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    return module_emulator_factory("--demo")


@pytest.fixture(scope="module")
def client(emu: EmulatorProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, auth=("admin", "admin"), timeout=30) as c:
        yield c


def as_user(emu: EmulatorProc, name: str) -> httpx.Client:
    return httpx.Client(base_url=emu.url, auth=(name, name), timeout=30)


def result(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    return resp.json()["result"]


def error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert body["status"] == "failure" and set(body["error"]) == {"message", "detail"}
    return body["error"]


def new_incident(client: httpx.Client, **fields: str) -> dict[str, str]:
    return result(
        client.post("/api/now/table/incident", json={"short_description": "t", **fields}), 201
    )


def upload(
    client: httpx.Client,
    record: str,
    name: str,
    data: bytes,
    ctype: str = "text/plain",
    table: str = "incident",
) -> httpx.Response:
    return client.post(
        "/api/now/attachment/file",
        params={"table_name": table, "table_sys_id": record, "file_name": name},
        content=data,
        headers={"Content-Type": ctype},
    )


# -- listing and paging ---------------------------------------------------------------------------


def test_list_json_fields_are_strings(client: httpx.Client, emu: EmulatorProc) -> None:
    resp = client.get(
        "/api/now/attachment", params={"sysparm_query": f"table_sys_id={INC1}^table_name=incident"}
    )
    rows = result(resp)
    assert resp.headers["content-type"] == "application/json;charset=UTF-8"
    assert resp.headers["x-total-count"] == str(len(rows)) == "10"
    assert "link" not in resp.headers  # one page only
    row = rows[0]
    assert list(row) == [
        "size_bytes",
        "file_name",
        "sys_mod_count",
        "average_image_color",
        "image_width",
        "sys_updated_on",
        "sys_tags",
        "table_name",
        "sys_id",
        "image_height",
        "sys_updated_by",
        "download_link",
        "content_type",
        "sys_created_on",
        "size_compressed",
        "compressed",
        "state",
        "table_sys_id",
        "chunk_size_bytes",
        "hash",
        "sys_created_by",
    ]
    assert all(isinstance(v, str) for r in rows for v in r.values())
    assert row["download_link"] == f"{emu.url}/api/now/attachment/{row['sys_id']}/file"
    assert (
        row["chunk_size_bytes"] == "700000"
        and row["compressed"] == "true"
        and HEX32.match(row["sys_id"])
    )
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", row["sys_created_on"])


def test_pagination_link_and_total(client: httpx.Client, emu: EmulatorProc) -> None:
    seen: list[str] = []
    offset = 0
    while True:
        resp = client.get(
            "/api/now/attachment",
            params={
                "sysparm_limit": "5",
                "sysparm_offset": str(offset),
                "sysparm_display_value": "False",
            },
        )
        rows = result(resp)
        assert resp.headers["x-total-count"] == str(DEMO_TOTAL)
        seen += [r["sys_id"] for r in rows]
        links = dict(
            (rel, url) for url, rel in re.findall(r'<([^>]*)>;rel="(\w+)"', resp.headers["link"])
        )
        if "next" not in links:
            break
        offset += 5
    assert len(seen) == len(set(seen)) == DEMO_TOTAL
    base = f"{emu.url}/api/now/attachment?sysparm_display_value=False&sysparm_limit=5"
    resp = client.get(
        "/api/now/attachment?sysparm_display_value=False&sysparm_offset=5&sysparm_limit=5"
    )
    assert resp.headers["link"] == (
        f'<{base}&sysparm_offset=0>;rel="first",<{base}&sysparm_offset=0>;rel="prev",'
        f'<{base}&sysparm_offset=10>;rel="next",<{base}&sysparm_offset=15>;rel="last"'
    )
    first = client.get("/api/now/attachment?sysparm_limit=5").headers["link"]
    assert 'rel="prev"' not in first and 'rel="next"' in first
    last = client.get("/api/now/attachment?sysparm_limit=5&sysparm_offset=15").headers["link"]
    assert 'rel="next"' not in last and 'rel="prev"' in last
    # limit=1 on the first page: a real instance sends prev with offset -1.
    assert (
        'sysparm_offset=-1>;rel="prev"'
        in client.get("/api/now/attachment?sysparm_limit=1").headers["link"]
    )


def test_default_limit_and_v1_prefix(client: httpx.Client) -> None:
    resp = client.get("/api/now/v1/attachment")
    assert len(result(resp)) == DEMO_TOTAL and "link" not in resp.headers
    assert result(client.get(f"/api/now/v1/attachment/{README}"))["file_name"] == "readme.txt"


def test_xml_list_and_get(client: httpx.Client) -> None:
    resp = client.get(
        "/api/now/attachment",
        params={"sysparm_query": f"sys_id={README}"},
        headers={"Accept": "application/xml"},
    )
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(resp.content)
    assert root.tag == "response" and root.find("result/file_name").text == "readme.txt"
    root = ET.fromstring(
        client.get(f"/api/now/attachment/{README}", headers={"Accept": "application/xml"}).content
    )
    assert root.find("result/sys_id").text == README
    err = ET.fromstring(
        client.get("/api/now/attachment/" + "0" * 32, headers={"Accept": "application/xml"}).content
    )
    assert err.find("status").text == "failure" and err.find("error/message").text


def test_queries_through_the_api(client: httpx.Client) -> None:
    def names(query: str) -> list[str]:
        return [
            r["file_name"]
            for r in result(client.get("/api/now/attachment", params={"sysparm_query": query}))
        ]

    assert names("file_name=a^^b.txt") == ["a^b.txt"]
    assert names("file_name=100% done #1.txt") == ["100% done #1.txt"]
    assert names("file_name=reports/2026.txt") == ["reports/2026.txt"]
    assert names("file_name=r\u00e9sum\u00e9.txt") == ["r\u00e9sum\u00e9.txt"]
    assert names("file_name=notes.txt") == ["notes.txt", "notes.txt"]  # duplicates allowed
    assert names(f"table_sys_id={INC2}^ORDERBYDESCsize_bytes") == ["capture.bin", "vpn.log"]
    assert names(f"table_sys_id={INC2}^ORDERBYsize_bytes") == ["vpn.log", "capture.bin"]
    assert names("table_nameSTARTSWITHZZ_YY") == ["avatar.png"]
    assert names("file_nameENDSWITH.pdf^ORfile_nameENDSWITH.png^table_name=incident") == [
        "screenshot.png",
        "report.pdf",
    ]
    assert names("table_name=problem^NQtable_name=change_request") == ["root-cause.txt", "plan.pdf"]
    assert names("table_nameINproblem,kb_knowledge") == ["root-cause.txt", "vpn-howto.txt"]
    assert len(names("size_bytes>1000000")) == 1
    assert len(names("bogus_field=1")) == DEMO_TOTAL  # unknown fields are ignored


# -- metadata and download ------------------------------------------------------------------------


def test_get_metadata_and_404(client: httpx.Client) -> None:
    meta = result(client.get(f"/api/now/attachment/{SHOT}"))
    assert (meta["image_width"], meta["image_height"], meta["content_type"]) == (
        "64",
        "48",
        "image/png",
    )
    err = error(client.get("/api/now/attachment/" + "0" * 32), 404)
    assert err == {
        "message": "No Record found",
        "detail": "Record doesn't exist or ACL restricts the record retrieval",
    }
    error(client.get("/api/now/attachment/" + "0" * 32 + "/file"), 404)


def test_file_identity(client: httpx.Client) -> None:
    meta = result(client.get(f"/api/now/attachment/{BIG}"))
    resp = client.get(
        f"/api/now/attachment/{BIG}/file",
        headers={"Accept-Encoding": "identity", "Range": "bytes=0-9"},
    )
    assert resp.status_code == 200  # Range is ignored without --range
    assert "content-encoding" not in resp.headers and "accept-ranges" not in resp.headers
    assert resp.headers.get("transfer-encoding") == "chunked"
    assert len(resp.content) == int(meta["size_bytes"]) == 3 * 1024 * 1024
    assert hashlib.sha256(resp.content).hexdigest() == meta["hash"]
    assert resp.headers["content-type"] == "application/octet-stream"


def test_file_gzip_and_headers(client: httpx.Client) -> None:
    with client.stream(
        "GET", f"/api/now/attachment/{README}/file", headers={"Accept-Encoding": "gzip"}
    ) as resp:
        raw = b"".join(resp.iter_raw())
    assert resp.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == b"Mail server outage notes.\n"
    assert resp.headers["content-type"] == "text/plain;charset=UTF-8"
    assert (
        resp.headers["content-disposition"]
        == "attachment;filename=\"readme.txt\";filename*=UTF-8''readme.txt"
    )
    header = resp.headers["x-attachment-metadata"]
    assert header.startswith(
        '{  "size_bytes" : "26",  "file_name" : "readme.txt",  '
    ) and header.endswith('"}')
    meta = json.loads(header)
    assert "download_link" not in meta and meta["sys_id"] == README and meta["state"] == "available"


def test_file_unicode_and_odd_names(client: httpx.Client) -> None:
    for key, name in (
        ("resume", "r\u00e9sum\u00e9.txt"),
        ("percent", "100% done #1.txt"),
        ("slash", "reports/2026.txt"),
    ):
        resp = client.get(f"/api/now/attachment/{demo_id('att:' + key)}/file")
        assert resp.status_code == 200
        assert resp.headers["content-disposition"].endswith(
            "filename*=UTF-8''" + quote(name, safe="")
        )
        assert json.loads(resp.headers["x-attachment-metadata"])["file_name"] == name


# -- uploads ------------------------------------------------------------------------------------


def test_upload_file_and_state_transition(client: httpx.Client, emu: EmulatorProc) -> None:
    data = b"hello emulator\n" * 1000
    resp = upload(client, INC3, "hello.txt", data)
    meta = result(resp, 201)
    assert resp.headers["location"] == f"{emu.url}/api/now/attachment/{meta['sys_id']}"
    assert (
        meta["state"] == "pending"
        and meta["sys_mod_count"] == "0"
        and meta["sys_updated_by"] == "admin"
    )
    assert meta["size_bytes"] == str(len(data)) and meta["hash"] == hashlib.sha256(data).hexdigest()
    assert int(meta["size_compressed"]) < len(data) and meta["content_type"] == "text/plain"
    assert meta["table_name"] == "incident" and meta["table_sys_id"] == INC3

    def available() -> dict:
        later = result(client.get(f"/api/now/attachment/{meta['sys_id']}"))
        return later if later["state"] == "available" else {}

    later = eventually(available, timeout=10)  # after --state-delay (1 s)
    assert (later["state"], later["sys_mod_count"], later["sys_updated_by"]) == (
        "available",
        "1",
        "system",
    )
    assert client.get(f"/api/now/attachment/{meta['sys_id']}/file").content == data


def test_upload_png_dimensions_and_v1_location(client: httpx.Client, emu: EmulatorProc) -> None:
    from snfs.emulator.demo_data import png

    resp = client.post(
        "/api/now/v1/attachment/file",
        params={"table_name": "incident", "table_sys_id": INC3, "file_name": "pic.png"},
        content=png(7, 5),
        headers={"Content-Type": "image/png"},
    )
    meta = result(resp, 201)
    assert (meta["image_width"], meta["image_height"]) == ("7", "5")
    assert resp.headers["location"] == f"{emu.url}/api/now/v1/attachment/{meta['sys_id']}"


def test_upload_multipart(client: httpx.Client) -> None:
    resp = client.post(
        "/api/now/attachment/upload",
        data={"table_name": "incident", "table_sys_id": INC3},
        files={"uploadFile": ("multi part.csv", b"a,b\n1,2\n", "text/csv")},
    )
    meta = result(resp, 201)
    assert (meta["file_name"], meta["content_type"], meta["size_bytes"]) == (
        "multi part.csv",
        "text/csv",
        "8",
    )
    assert "location" in resp.headers
    # Geneva alias record_sys_id, file_name field overriding the part's name, part named "file".
    resp = client.post(
        "/api/now/attachment/upload",
        data={"table_name": "incident", "record_sys_id": INC3, "file_name": "r\u00e9nam\u00e9.bin"},
        files={"file": ("ignored.bin", b"\x00\x01", "application/octet-stream")},
    )
    meta = result(resp, 201)
    assert meta["file_name"] == "r\u00e9nam\u00e9.bin" and meta["table_sys_id"] == INC3


def test_upload_multipart_errors(client: httpx.Client) -> None:
    # pysnow's multipart=True: multipart/form-data without a boundary.
    error(
        client.post(
            "/api/now/attachment/upload",
            content=b"raw",
            headers={"Content-Type": "multipart/form-data"},
        ),
        400,
    )
    error(
        client.post(
            "/api/now/attachment/upload",
            data={"table_name": "incident"},
            files={"f": ("x.txt", b"x", "text/plain")},
        ),
        400,
    )
    error(
        client.post(
            "/api/now/attachment/upload", data={"table_name": "incident", "table_sys_id": INC3}
        ),
        400,
    )
    error(
        client.post(
            "/api/now/attachment/upload",
            data={"table_name": "incident", "table_sys_id": "1" * 32},
            files={"f": ("x.txt", b"x", "text/plain")},
        ),
        404,
    )


def test_upload_errors(client: httpx.Client) -> None:
    for missing in ("table_name", "table_sys_id", "file_name"):
        params = {"table_name": "incident", "table_sys_id": INC3, "file_name": "x.txt"}
        del params[missing]
        err = error(
            client.post(
                "/api/now/attachment/file",
                params=params,
                content=b"x",
                headers={"Content-Type": "text/plain"},
            ),
            400,
        )
        assert missing in err["message"]
    resp = client.post(
        "/api/now/attachment/file",
        params={"table_name": "incident", "table_sys_id": INC3, "file_name": "x.txt"},
        content=b"x",
    )
    error(resp, 400)  # no Content-Type
    error(upload(client, "1" * 32, "x.txt", b"x"), 404)  # record does not exist
    error(
        upload(client, INC3, "x.txt", b"x", table="no_such_table"), 404
    )  # unknown table (default 404)


def test_delete_and_rename(client: httpx.Client) -> None:
    """The default release (zurich) has no PATCH rename: 405, the name unchanged (PATCH with
    `--release australia`: test_emulator_switches)."""
    meta = result(upload(client, INC3, "old.txt", b"rename me"), 201)
    sys_id = meta["sys_id"]
    error(client.patch(f"/api/now/attachment/{sys_id}", json={"file_name": "new name.txt"}), 405)
    assert result(client.get(f"/api/now/attachment/{sys_id}"))["file_name"] == "old.txt"
    assert client.delete(f"/api/now/attachment/{sys_id}").status_code == 204
    error(client.get(f"/api/now/attachment/{sys_id}"), 404)
    error(client.delete(f"/api/now/attachment/{sys_id}"), 404)


# -- Table API, Aggregate API, unknown paths -------------------------------------------------


def test_table_api(client: httpx.Client, emu: EmulatorProc) -> None:
    resp = client.post(
        "/api/now/table/problem", json={"short_description": "new problem", "bogus": "x"}
    )
    rec = result(resp, 201)
    assert (
        HEX32.match(rec["sys_id"]) and re.match(r"^PRB\d{7}$", rec["number"]) and "bogus" not in rec
    )
    assert resp.headers["location"] == f"{emu.url}/api/now/table/problem/{rec['sys_id']}"
    assert (
        result(client.get(f"/api/now/table/problem/{rec['sys_id']}"))["short_description"]
        == "new problem"
    )
    resp = client.get(
        "/api/now/table/incident",
        params={
            "sysparm_query": "number=INC0010001",
            "sysparm_fields": "sys_id,number,nonexistent",
        },
    )
    assert (
        result(resp) == [{"sys_id": INC1, "number": "INC0010001"}]
        and resp.headers["x-total-count"] == "1"
    )
    resp = client.get(
        "/api/now/table/incident", params={"sysparm_limit": "1", "sysparm_query": "ORDERBYnumber"}
    )
    assert result(resp)[0]["number"] == "INC0010001" and 'rel="next"' in resp.headers["link"]
    assert [
        r["number"] for r in result(client.get("/api/now/table/incident?number=INC0010002"))
    ] == ["INC0010002"]
    for prefix, table in (
        ("CHG", "change_request"),
        ("RITM", "sc_req_item"),
        ("SCTASK", "sc_task"),
        ("KB", "kb_knowledge"),
        ("HRC", "hr_case"),
        ("INC", "incident"),
    ):
        assert result(client.post(f"/api/now/table/{table}", json={}), 201)["number"].startswith(
            prefix
        )
    err = error(client.get("/api/now/table/no_such_table"), 400)
    assert err == {"message": "Invalid table no_such_table", "detail": None}
    err = error(client.get("/api/now/table/incident/" + "0" * 32), 404)
    assert err["message"] == "No Record found"


def test_delete_record_deletes_attachments(client: httpx.Client) -> None:
    rec = new_incident(client)
    att = result(upload(client, rec["sys_id"], "doomed.txt", b"x"), 201)
    assert client.delete(f"/api/now/table/incident/{rec['sys_id']}").status_code == 204
    error(client.get(f"/api/now/attachment/{att['sys_id']}"), 404)
    error(client.get(f"/api/now/table/incident/{rec['sys_id']}"), 404)


def test_aggregate_api(client: httpx.Client) -> None:
    rows = result(
        client.get(
            "/api/now/stats/sys_attachment",
            params={"sysparm_count": "true", "sysparm_group_by": "table_name"},
        )
    )
    by_table = {r["groupby_fields"][0]["value"]: r["stats"]["count"] for r in rows}
    assert (
        by_table["hr_case"] == "1"
        and by_table["ZZ_YYincident"] == "1"
        and by_table["problem"] == "1"
    )
    assert rows[0]["groupby_fields"][0]["field"] == "table_name"
    rows = result(
        client.get(
            "/api/now/stats/sys_attachment",
            params={
                "sysparm_count": "true",
                "sysparm_group_by": "table_sys_id",
                "sysparm_query": "table_name=problem",
            },
        )
    )
    assert rows == [
        {
            "stats": {"count": "1"},
            "groupby_fields": [{"field": "table_sys_id", "value": demo_id("prb1")}],
        }
    ]
    res = result(
        client.get(
            "/api/now/stats/incident",
            params={"sysparm_count": "True", "sysparm_query": "number=INC0010001"},
        )
    )
    assert res == {"stats": {"count": "1"}}
    res = result(
        client.get(
            "/api/now/stats/sys_attachment",
            params={
                "sysparm_count": "true",
                "sysparm_max_fields": "size_bytes",
                "sysparm_query": f"table_sys_id={INC2}",
            },
        )
    )
    assert res["stats"]["count"] == "2" and res["stats"]["max"]["size_bytes"] == str(
        3 * 1024 * 1024
    )
    error(client.get("/api/now/stats/nope?sysparm_count=true"), 400)


def test_unknown_path_and_method(client: httpx.Client) -> None:
    err = error(client.get("/api/now/nothing/here"), 400)
    assert err == {"message": "Requested URI does not represent any resource", "detail": None}
    error(client.put(f"/api/now/attachment/{README}", json={}), 405)


# -- authentication and roles ----------------------------------------------------------------


def test_auth_failures(emu: EmulatorProc) -> None:
    expected = {
        "message": "User Not Authenticated",
        "detail": "Required to provide Auth information",
    }
    assert error(httpx.get(f"{emu.url}/api/now/attachment"), 401) == expected
    assert (
        error(httpx.get(f"{emu.url}/api/now/attachment", auth=("admin", "wrong")), 401) == expected
    )
    assert (
        error(
            httpx.get(f"{emu.url}/api/now/attachment", headers={"Authorization": "Bearer nope"}),
            401,
        )
        == expected
    )
    error(httpx.get(f"{emu.url}/api/now/nothing"), 401)


def token(emu: EmulatorProc, **form: str) -> httpx.Response:
    return httpx.post(
        f"{emu.url}/oauth_token.do",
        data={"client_id": "snfs", "client_secret": "snfs-secret", **form},
    )


def test_oauth_password_refresh_and_client_credentials(emu: EmulatorProc) -> None:
    resp = token(emu, grant_type="password", username="itil", password="itil")
    body = resp.json()
    assert resp.status_code == 200 and list(body) == [
        "scope",
        "token_type",
        "expires_in",
        "refresh_token",
        "access_token",
    ]
    assert (
        body["scope"] == "useraccount"
        and body["token_type"] == "Bearer"
        and body["expires_in"] == 1799
    )
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(f"{emu.url}/api/now/attachment/{README}", headers=bearer).status_code == 200
    assert (
        httpx.get(f"{emu.url}/api/now/attachment/{HR_ATT}", headers=bearer).status_code == 404
    )  # runs as itil: a denied read is a 404 on a real instance
    refreshed = token(emu, grant_type="refresh_token", refresh_token=body["refresh_token"]).json()
    assert refreshed["access_token"] and "refresh_token" not in refreshed
    cc = token(emu, grant_type="client_credentials").json()
    assert (
        httpx.get(
            f"{emu.url}/api/now/attachment/{HR_ATT}",
            headers={"Authorization": f"Bearer {cc['access_token']}"},
        ).status_code
        == 200
    )  # admin
    assert token(emu, grant_type="password", username="itil", password="bad").status_code == 401
    assert token(emu, grant_type="refresh_token", refresh_token="bogus").status_code == 401
    bad_client = httpx.post(
        f"{emu.url}/oauth_token.do",
        data={
            "grant_type": "password",
            "client_id": "snfs",
            "client_secret": "x",
            "username": "admin",
            "password": "admin",
        },
    )
    assert bad_client.status_code == 401 and bad_client.json()["error"] == "server_error"
    as_json = httpx.post(
        f"{emu.url}/oauth_token.do",
        json={
            "grant_type": "password",
            "client_id": "snfs",
            "client_secret": "snfs-secret",
            "username": "admin",
            "password": "admin",
        },
    )
    assert as_json.status_code == 401


def test_roles(emu: EmulatorProc) -> None:
    """Real defaults: sysparm_limit before ACLs (X-Total-Count counts rows the user cannot
    read), denied reads answer 404, the Aggregate API needs read on sys_attachment (403)."""
    with as_user(emu, "itil") as itil, as_user(emu, "hr") as hr:
        listed = {r["table_name"] for r in result(itil.get("/api/now/attachment"))}
        assert "hr_case" not in listed and {"incident", "ZZ_YYincident", "kb_knowledge"} <= listed
        assert itil.get("/api/now/attachment").headers["x-total-count"] == str(
            len(emu.attachments())
        )
        error(itil.get(f"/api/now/attachment/{HR_ATT}"), 404)
        error(itil.get(f"/api/now/attachment/{HR_ATT}/file"), 404)
        error(itil.get(f"/api/now/table/hr_case/{HRC1}"), 404)
        error(upload(itil, HRC1, "x.txt", b"x", table="hr_case"), 404)
        assert result(itil.get("/api/now/table/hr_case")) == []
        error(
            itil.get(
                "/api/now/stats/sys_attachment?sysparm_count=true&sysparm_group_by=table_name"
            ),
            403,
        )
        error(itil.get("/__emulator__/stats"), 403)
        assert {r["table_name"] for r in result(hr.get("/api/now/attachment"))} == {"hr_case"}
        assert (
            hr.get(f"/api/now/attachment/{HR_ATT}/file").content
            == b"HR only: relocation details.\n"
        )
        error(hr.get(f"/api/now/attachment/{README}"), 404)


def _extra(emu: EmulatorProc) -> int:
    """Attachments other tests added to non-hr tables (the module shares one emulator)."""
    rows = emu.attachments()
    return len([r for r in rows if r["table_name"] != "hr_case"]) - (DEMO_TOTAL - 1)


def test_gzip_of_incompressible_file(client: httpx.Client) -> None:
    meta = result(client.get(f"/api/now/attachment/{BIG}"))
    assert int(meta["size_compressed"]) >= int(meta["size_bytes"])  # random bytes do not shrink
    resp = client.get(f"/api/now/attachment/{BIG}/file", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert hashlib.sha256(resp.content).hexdigest() == meta["hash"]
