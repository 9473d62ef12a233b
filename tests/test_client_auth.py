"""Basic, static bearer and OAuth (password, client_credentials, refresh) against the emulator."""

from __future__ import annotations

import errno
import json
import logging
import urllib.parse
import urllib.request

import pytest
import trio

from snfs.auth import BasicAuth, BearerToken, OAuth
from snfs.backends.servicenow import query as q
from snfs.errors import AuthError
from snfs.secrets import Secret
from tests.support.client_support import client, fresh, new_record, route_count, shared_emulator
from tests.support.waiting import eventually_async

__all__ = ["fresh"]

emu = shared_emulator("--token-lifetime", "2", "--state-delay", "0")
pytestmark = pytest.mark.usefixtures("fresh")


class RecordingOAuth(OAuth):
    """OAuth that remembers which grants it used."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.grants: list[str] = []

    async def _post(self, form):
        self.grants.append(form["grant_type"])
        return await super()._post(form)


def oauth(emu, grant: str = "password", secret: str = "snfs-secret", **kw) -> RecordingOAuth:
    if grant == "password":
        kw.setdefault("user", "admin")
        kw.setdefault("password", "admin")
    return RecordingOAuth(emu.url + "/oauth_token.do", "snfs", secret, grant=grant, **kw)


async def test_basic_auth(emu) -> None:
    async with client(emu, auth=BasicAuth("admin", "admin")) as c:
        await c.check()


async def test_wrong_password_is_auth_error(emu, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="snfs"):
        async with client(emu, auth=BasicAuth("admin", "hunter2-wrong")) as c:
            with pytest.raises(AuthError) as e:
                await c.check()
            # check() leaves the report to its caller (the mount's one start-up line) ...
            failures = [
                r
                for r in caplog.records
                if r.name == "snfs.client" and r.levelno >= logging.WARNING
            ]
            assert failures == []
            with pytest.raises(AuthError):
                await c.list_all("")
    assert e.value.errno == errno.EACCES and e.value.status == 401
    assert "hunter2" not in str(e.value) and "hunter2" not in caplog.text
    # ... every other request logs its failure exactly once.
    failures = [
        r for r in caplog.records if r.name == "snfs.client" and r.levelno >= logging.WARNING
    ]
    assert len(failures) == 1 and "401" in failures[0].getMessage()
    assert "Authorization" not in caplog.text


def password_grant_token(emu) -> str:
    """A token from the emulator's OAuth endpoint, fetched outside the client under test."""
    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": "snfs",
            "client_secret": "snfs-secret",
            "username": "admin",
            "password": "admin",
        }
    ).encode()
    with urllib.request.urlopen(
        urllib.request.Request(emu.url + "/oauth_token.do", data=form), timeout=10
    ) as resp:
        return json.loads(resp.read())["access_token"]


async def test_static_bearer_token(emu) -> None:
    token = await trio.to_thread.run_sync(password_grant_token, emu)
    async with client(emu, auth=BearerToken(token)) as c:
        await c.check()
    async with client(emu, auth=BearerToken("not-a-token")) as c:
        with pytest.raises(AuthError):
            await c.check()


async def test_oauth_password_grant_shared_by_concurrent_requests(emu) -> None:
    auth = oauth(emu)
    async with client(emu, auth=auth) as c:
        async with trio.open_nursery() as n:
            for _ in range(20):
                n.start_soon(c.check)
        assert auth.grants == ["password"]
        assert c.stats.requests["auth"] == 1
    assert route_count(emu, "POST /oauth_token.do") == 1


async def test_oauth_client_credentials(emu) -> None:
    auth = oauth(emu, grant="client_credentials")
    async with client(emu, auth=auth) as c:
        await c.check()
        rec = new_record(emu)
        a = await c.upload("incident", rec, "cc.txt", b"client credentials")
        assert a.size_bytes == 18
    assert auth.grants == ["client_credentials"]


async def test_oauth_bad_client_secret(emu, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="snfs"):
        async with client(emu, auth=oauth(emu, secret="s3cret-wrong")) as c:
            with pytest.raises(AuthError) as e:
                await c.check()
    assert "s3cret" not in str(e.value) and "s3cret" not in caplog.text
    assert e.value.errno == errno.EACCES


async def test_oauth_refresh_before_expiry(emu) -> None:
    auth = oauth(emu)
    async with client(emu, auth=auth) as c:
        await c.check()

        async def refreshed() -> bool:  # --token-lifetime 2: a refresh before it runs out
            await c.check()
            return auth.grants != ["password"]

        await eventually_async(refreshed, timeout=10, interval=0.2)
        await c.check()
    assert auth.grants == ["password", "refresh_token"]


async def test_oauth_refresh_once_on_401(emu) -> None:
    auth = oauth(emu, grant="password")
    rec = new_record(emu)
    async with client(emu, auth=auth) as c:
        await c.check()
        emu.fault(method="GET", path=r"/attachment$", count=1, status=401)
        await c.check()  # 401 -> refresh -> resent by the auth flow
        assert auth.grants == ["password", "refresh_token"]
        # A streamed upload body cannot be resent by the auth flow: the client rebuilds it.
        emu.fault(method="POST", path=r"/attachment/file", count=1, status=401)
        a = await c.upload("incident", rec, "after401.txt", b"x" * 1000)
        assert auth.grants == ["password", "refresh_token", "refresh_token"]
        stored = await c.list_all(q.attachments_of_record("incident", rec))
        assert [x.sys_id for x in stored] == [a.sys_id]
        # A second 401 in a row is a real one: AuthError, no endless loop.
        emu.fault(method="GET", path=r"/attachment$", count=2, status=401)
        with pytest.raises(AuthError):
            await c.check()


async def test_oauth_failed_refresh_logs_in_again(emu) -> None:
    auth = oauth(emu)
    async with client(emu, auth=auth) as c:
        await c.check()
        assert auth._token is not None
        auth._token.refresh = Secret("bogus-refresh-token")
        auth.invalidate()
        await c.check()
    assert auth.grants == ["password", "refresh_token", "password"]
