"""`snfs emulator --kind easyvista`: every endpoint over a real socket, auth, limits, switches."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote

import httpx
import pytest

from tests.support.client_support import payload, sha256, shared_emulator
from tests.support.emulator_proc import EmulatorProc, start_emulator

emu = shared_emulator("--kind", "easyvista", "--user", "bob:pw:norest", "--user", "ann:pw")
emu_b = shared_emulator(
    "--kind",
    "easyvista",
    "--account",
    "acme",
    "--no-delete",
    "--max-body",
    "1",
    "--delete-status",
    "200",
)


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest):
    """Faults and counters of the module's emulators start from zero in every test."""
    for name in ("emu", "emu_b"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset_stats()
    yield


ADMIN = ("admin", "admin")
RFC_RE = r"I\d{6}_\d{6}"


def api(e: EmulatorProc, account: str = "acme") -> str:
    return f"{e.url}/api/v1/{account}"


def new_ticket(e: EmulatorProc, account: str = "acme") -> str:
    r = httpx.post(
        f"{api(e, account)}/requests", json={"requests": [{"catalog_code": "x"}]}, auth=ADMIN
    )
    assert r.status_code == 201, r.text
    href = r.json()["HREF"]
    assert re.fullmatch(rf"{re.escape(api(e, account))}/requests/{RFC_RE}", href)
    return href.rsplit("/", 1)[1]


def attach(
    e: EmulatorProc, rfc: str, *docs: tuple[str, bytes], account: str = "acme", **kw
) -> httpx.Response:
    """As document 004 says: form-data, key `documents` (Base64 filedata + filename)."""
    documents = [{"filedata": base64.b64encode(d).decode(), "filename": n} for n, d in docs]
    return httpx.post(
        f"{api(e, account)}/requests/{rfc}/documents",
        files={"documents": (None, json.dumps(documents)), "description": (None, "test")},
        auth=kw.get("auth", ADMIN),
    )


def doc_ids(e: EmulatorProc, rfc: str, account: str = "acme") -> list[str]:
    r = httpx.get(f"{api(e, account)}/requests/{rfc}/documents", auth=ADMIN)
    assert r.status_code == 200, r.text
    return [d["DOCUMENT_ID"] for d in r.json()["Documents"]]


def test_auth_failures(emu) -> None:
    rfc = new_ticket(emu)
    url = f"{api(emu)}/requests/{rfc}"
    for auth in (None, ("admin", "wrong"), ("nobody", "x")):
        r = httpx.get(url, auth=auth)
        assert r.status_code == 401 and r.json() == {"error": "Invalid Login / Password"}
    r = httpx.get(url, auth=("bob", "pw"))  # norest: authenticated, no REST right
    assert r.status_code == 403 and "REST API" in r.json()["error"]
    assert httpx.get(url, auth=("ann", "pw")).status_code == 200
    r = httpx.post(f"{url}/documents", json={"documents": []}, auth=("bob", "pw"))
    assert r.status_code == 403


def test_account_switch(emu_b) -> None:
    # --account acme: another account name is refused like a wrong login (the doc's 401)
    r = httpx.post(f"{api(emu_b, 'other')}/requests", json={}, auth=ADMIN)
    assert r.status_code == 401 and r.json() == {"error": "Invalid Login / Password"}
    rfc = new_ticket(emu_b)
    assert httpx.get(f"{api(emu_b)}/requests/{rfc}", auth=ADMIN).status_code == 200


def test_tickets(emu) -> None:
    rfc = new_ticket(emu)
    r = httpx.get(f"{api(emu)}/requests/{rfc}", auth=ADMIN)
    assert r.status_code == 200 and r.json()["RFC_NUMBER"] == rfc
    r = httpx.get(f"{api(emu)}/requests/I000000_000000", auth=ADMIN)
    assert r.status_code == 404 and r.json() == {"error": "Resource not found"}
    # tickets are per account
    assert httpx.get(f"{api(emu, 'other')}/requests/{rfc}", auth=ADMIN).status_code == 404


def test_attach_list_download_delete(emu) -> None:
    rfc = new_ticket(emu)
    one, two = payload(70_000, 1), b"Je suis un document"
    r = attach(emu, rfc, ("report one.pdf", one), ("né.docx", two))
    assert r.status_code == 201 and r.json() == {"HREF": f"{api(emu)}/requests/{rfc}"}
    r = httpx.get(f"{api(emu)}/requests/{rfc}/documents", auth=ADMIN)
    body = r.json()
    assert body["PARENT_HREF"] == f"{api(emu)}/requests/{rfc}"
    assert body["HREF"] == f"{api(emu)}/requests/{rfc}/documents"
    docs = body["Documents"]
    assert len(docs) == 2 and set(docs[0]) == {"HREF", "PARENT_HREF", "DOCUMENT_ID"}
    assert re.fullmatch(r"\d+_[0-9a-f]+", docs[0]["DOCUMENT_ID"])
    d1, d2 = (d["DOCUMENT_ID"] for d in docs)
    r = httpx.get(f"{api(emu)}/requests/{rfc}/documents/{d1}", auth=ADMIN)
    assert r.status_code == 200 and sha256(r.content) == sha256(one)
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-length"] == str(len(one))
    assert (
        r.headers["content-disposition"]
        == "attachment; filename=\"report one.pdf\"; filename*=UTF-8''report%20one.pdf"
    )
    r = httpx.get(f"{api(emu)}/requests/{rfc}/documents/{d2}", auth=ADMIN)
    assert r.content == two and "filename*=UTF-8''n%C3%A9.docx" in r.headers["content-disposition"]
    r = httpx.get(
        f"{api(emu)}/requests/{rfc}/documents/{d1}", params={"encoding": "base64"}, auth=ADMIN
    )
    assert base64.b64decode(r.content) == one
    # the list's HREF (autoconnect link) serves the file too
    assert httpx.get(docs[1]["HREF"], auth=ADMIN).content == two
    # unknown document / document of another ticket
    other = new_ticket(emu)
    assert httpx.get(f"{api(emu)}/requests/{other}/documents/{d1}", auth=ADMIN).status_code == 404
    r = httpx.delete(f"{api(emu)}/requests/{rfc}/documents/{d1}", auth=ADMIN)
    assert r.status_code == 204
    assert doc_ids(emu, rfc) == [d2]
    assert httpx.delete(f"{api(emu)}/requests/{rfc}/documents/{d1}", auth=ADMIN).status_code == 404
    assert httpx.get(f"{api(emu)}/requests/{rfc}/documents/{d1}", auth=ADMIN).status_code == 404


def test_body_forms_beyond_the_document_refused(emu, emulator_factory) -> None:
    """Document 004: form-data with key `documents` (Base64). A JSON body and raw file parts
    are refused by default, taken with --any-body-form."""
    listed = json.dumps(
        [{"filedata": base64.b64encode(b"from the list").decode(), "filename": "a.txt"}]
    )
    raw = {"documents": ("raw.bin", b"\x00raw bytes", "application/octet-stream")}
    as_json = {"documents": json.loads(listed), "description": "d"}
    for e in (emu, emulator_factory("--kind", "easyvista", "--any-body-form")):
        rfc = new_ticket(e)
        url = f"{api(e)}/requests/{rfc}/documents"
        r1 = httpx.post(url, auth=ADMIN, data={"documents": listed}, files=raw)
        r2 = httpx.post(url, auth=ADMIN, json=as_json)
        lenient = e is not emu
        assert (r1.status_code, r2.status_code) == ((201, 201) if lenient else (400, 400))
        if not lenient:
            assert "form-data" in r2.json()["error"] and doc_ids(e, rfc) == []
            continue
        ids = doc_ids(e, rfc)
        got = {httpx.get(f"{url}/{d}", auth=ADMIN).content for d in ids}
        assert got == {b"from the list", b"\x00raw bytes"}


def test_any_ticket_id_and_description(emu) -> None:
    """rfc_number is any string (document 004: "string"); `description` is stored."""
    rfc = "Ticket #7 ü ok?"
    r = httpx.post(f"{api(emu)}/requests", json={"rfc_number": rfc}, auth=ADMIN)
    assert r.status_code == 201
    q = quote(rfc, safe="")
    assert attach(emu, q, ("a.txt", b"a")).status_code == 201
    assert len(doc_ids(emu, q)) == 1


def test_upload_failures(emu) -> None:
    rfc = new_ticket(emu)
    url = f"{api(emu)}/requests/{rfc}/documents"
    r = attach(emu, "I991231_999999", ("a.txt", b"a"))
    assert r.status_code == 404 and r.json() == {"error": "Resource not found"}

    def form(documents: object) -> httpx.Response:
        return httpx.post(url, files={"documents": (None, json.dumps(documents))}, auth=ADMIN)

    r = form([{"filedata": "not base64!!", "filename": "a.txt"}])
    assert r.status_code == 400 and "Base64" in r.json()["error"]
    r = form([{"filedata": "aGk="}])
    assert r.status_code == 400 and "filename" in r.json()["error"]
    r = httpx.post(url, files={"description": (None, "no documents")}, auth=ADMIN)
    assert r.status_code == 400
    r = httpx.post(url, files={"documents": (None, "{not json")}, auth=ADMIN)
    assert r.status_code == 400
    assert doc_ids(emu, rfc) == []


def test_max_body_and_no_delete(emu_b) -> None:
    rfc = new_ticket(emu_b)
    r = attach(emu_b, rfc, ("big.bin", payload(900_000)))  # ~1.2 MB of Base64 > 1 MB
    assert r.status_code == 413 and "maximum size of 1 MB" in r.json()["error"]
    r = attach(emu_b, rfc, ("ok.bin", payload(1000)))
    assert r.status_code == 201
    (doc,) = doc_ids(emu_b, rfc)
    r = httpx.delete(f"{api(emu_b)}/requests/{rfc}/documents/{doc}", auth=ADMIN)
    assert r.status_code == 405 and r.json() == {"error": "Method not allowed"}


def test_stats_faults_reset(emu) -> None:
    rfc = new_ticket(emu)
    attach(emu, rfc, ("a.txt", b"a"))
    (doc,) = doc_ids(emu, rfc)
    httpx.get(f"{api(emu)}/requests/{rfc}/documents/{doc}", auth=ADMIN)
    routes = emu.stats()["by_route"]
    assert routes["POST /requests"] == 1
    assert routes["POST /requests/{rfc_number}/documents"] == 1
    assert routes["GET /requests/{rfc_number}/documents"] == 1
    assert routes["GET /requests/{rfc_number}/documents/{document_id}"] == 1
    assert routes["DELETE /requests/{rfc_number}/documents/{document_id}"] == 0
    emu.fault(method="GET", path=r"/documents$", count=1, status=503, retry_after=1)
    r = httpx.get(f"{api(emu)}/requests/{rfc}/documents", auth=ADMIN)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "error" in r.json()
    assert httpx.get(f"{api(emu)}/requests/{rfc}/documents", auth=ADMIN).status_code == 200
    emu.json("POST", "/__emulator__/reset", {"data": True})
    assert emu.stats()["total"] == 0
    assert httpx.get(f"{api(emu)}/requests/{rfc}", auth=ADMIN).status_code == 404
    assert emu.request("GET", "/__emulator__/stats", auth=("bob", "pw"))[0] == 403


def test_data_persists_across_restart(tmp_path) -> None:
    e = start_emulator(tmp_path / "d", "--kind", "easyvista")
    try:
        rfc = new_ticket(e)
        attach(e, rfc, ("keep.txt", b"kept"))
    finally:
        e.stop()
    e = start_emulator(tmp_path / "d", "--kind", "easyvista")
    try:
        (doc,) = doc_ids(e, rfc)
        assert httpx.get(f"{api(e)}/requests/{rfc}/documents/{doc}", auth=ADMIN).content == b"kept"
    finally:
        e.stop()
