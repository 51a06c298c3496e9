"""/favicon.ico: the browser asks for it on every first visit."""

from __future__ import annotations

import struct


def test_favicon_ico_is_an_icon_kept_for_a_day(client):
    with client.get("/favicon.ico") as response:
        assert response.status_code == 200
        assert response.mimetype == "image/x-icon"
        assert response.cache_control.public
        assert response.cache_control.max_age == 86400
        icon = response.data
    reserved, kind, count = struct.unpack("<HHH", icon[:6])
    assert (reserved, kind) == (0, 1), "an ICO header"
    assert count >= 1
    sizes = set()
    for index in range(count):
        width, height, *_, length, offset = struct.unpack(
            "<BBBBHHII", icon[6 + 16 * index : 22 + 16 * index]
        )
        assert icon[offset : offset + 8] == b"\x89PNG\r\n\x1a\n"
        assert offset + length <= len(icon)
        sizes.add((width, height))
    assert {(16, 16), (32, 32)} <= sizes


def test_favicon_ico_is_revalidated_by_its_etag(client):
    with client.get("/favicon.ico") as first:
        etag = first.headers["ETag"]
    with client.get("/favicon.ico", headers={"If-None-Match": etag}) as again:
        assert again.status_code == 304
