"""Driving the dashboard's forms with the in-process test client, as a browser would."""

from __future__ import annotations

import re
from typing import Any

import httpx

TOKEN = re.compile(r'name="_csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = TOKEN.search(html)
    assert found, "the page has no CSRF token field"
    return found.group(1)


async def page_token(client: httpx.AsyncClient, path: str = "/dashboard/login") -> str:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return csrf_of(response.text)


async def sign_in(
    client: httpx.AsyncClient, org: Any, *, email: str | None = None, password: str | None = None
) -> httpx.Response:
    token = await page_token(client)
    return await client.post(
        "/dashboard/login",
        data={
            "_csrf_token": token,
            "org_code": org.code,
            "email": email or org.owner_email,
            "password": password or org.password,
        },
    )


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, Any]
) -> httpx.Response:
    """Open `page` for its token, then send the form to `action` with the page as Referer."""
    token = await page_token(client, page)
    return await client.post(
        action, data={"_csrf_token": token, **data}, headers={"Referer": f"http://testserver{page}"}
    )
