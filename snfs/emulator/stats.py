"""Request counters for GET /__emulator__/stats (route keys are templates without /api/now[/v1])."""

from __future__ import annotations

import re
from collections import Counter

# v2 only for CCCIF, whose document names it ("For example, v1 or v2").
API_PREFIX = re.compile(r"^/api/now(?:/v1|/v2(?=/cccif/))?(?=/)")
_ID = r"[^/]+"
ROUTES: list[tuple[str, str, re.Pattern[str]]] = [
    (method, f"{method} {template}", re.compile("^" + pattern + "$"))
    for method, template, pattern in (
        ("GET", "/attachment", "/attachment"),
        ("GET", "/attachment/{sys_id}", f"/attachment/{_ID}"),
        ("GET", "/attachment/{sys_id}/file", f"/attachment/{_ID}/file"),
        ("POST", "/attachment/file", "/attachment/file"),
        ("POST", "/attachment/upload", "/attachment/upload"),
        ("DELETE", "/attachment/{sys_id}", f"/attachment/{_ID}"),
        ("PATCH", "/attachment/{sys_id}", f"/attachment/{_ID}"),
        ("GET", "/table/{table}", f"/table/{_ID}"),
        ("GET", "/table/{table}/{sys_id}", f"/table/{_ID}/{_ID}"),
        ("POST", "/table/{table}", f"/table/{_ID}"),
        ("DELETE", "/table/{table}/{sys_id}", f"/table/{_ID}/{_ID}"),
        ("GET", "/stats/{table}", f"/stats/{_ID}"),
        ("POST", "/oauth_token.do", "/oauth_token.do"),
        ("POST", "/cccif/media/upload", "/cccif/media/upload"),
        ("GET", "/cs/media/{token}", f"/cs/media/{_ID}"),
    )
]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def route_key(method: str, path: str) -> str | None:
    """`GET /attachment/{sys_id}` for `GET /api/now/v1/attachment/abc`; None for other paths."""
    if path == "/oauth_token.do":
        rel = path
    else:
        m = API_PREFIX.match(path)
        if not m:
            return None
        rel = path[m.end() :]
    method = "GET" if method == "HEAD" else method
    for route_method, key, pattern in ROUTES:
        if route_method == method and pattern.match(rel):
            return key
    return None


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total = 0
        self.by_method: Counter[str] = Counter({m: 0 for m in METHODS})
        self.by_route: Counter[str] = Counter({key: 0 for _, key, _ in ROUTES})
        self.bytes_out = 0
        self.bytes_in = 0

    def count(self, method: str, path: str) -> None:
        self.total += 1
        self.by_method[method] += 1
        key = route_key(method, path)
        if key:
            self.by_route[key] += 1

    def as_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "by_method": dict(self.by_method),
            "by_route": dict(self.by_route),
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
        }
