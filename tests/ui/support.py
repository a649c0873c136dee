"""Helpers of the dashboard tests: an app in process, signed-in forms, seeded runs with steps."""

from __future__ import annotations

import re
from typing import Any

import httpx

from stepline.storage import records, store
from tests.server import support

ORIGIN = "http://localhost"
HOSTILE = "<script>alert('x')</script>"
"""In event data, step output, error messages and names: must reach the page as text only."""

APP_CONFIG = {
    "appName": "shop",
    "url": "http://127.0.0.1:9/api/stepline",
    "functions": [
        {
            "id": f"shop-{name}",
            "name": name,
            "triggers": [{"event": "shop/signup"}],
            "steps": {
                "step": {
                    "id": "step",
                    "runtime": {"url": f"http://127.0.0.1:9/api/stepline?fnId=shop-{name}"},
                    "retries": {"attempts": 2},
                }
            },
        }
        for name in ("welcome", "charge")
    ],
}
"""Two functions of an app that is not running (port 9): runs they start stay queued, retrying the call."""


async def csrf(client: httpx.AsyncClient, page: str = "/runs") -> str:
    """Open a page (which sets the CSRF cookie) and return the token its forms carry."""
    reply = await client.get(page)
    assert reply.status_code == 200, reply.text
    found = re.search(r'name="csrf" value="([^"]+)"', reply.text)
    assert found, "the page has no form with a CSRF token"
    assert client.cookies.get("stepline_csrf") == found.group(1)
    return found.group(1)


async def post_form(
    client: httpx.AsyncClient, path: str, form: dict[str, str], *, origin: str | None = ORIGIN
) -> httpx.Response:
    headers = {"Origin": origin} if origin else {}
    return await client.post(path, data=form, headers=headers, follow_redirects=False)


async def act(client: httpx.AsyncClient, path: str, **form: str) -> httpx.Response:
    """A dashboard action as the browser sends it: CSRF token, same origin, then follow the redirect."""
    token = await csrf(client)
    reply = await post_form(client, path, {"csrf": token, **form})
    assert reply.status_code == 303, reply.text
    return reply


async def seed_failed_run(db: store.Store, function_id: str = "shop-charge") -> records.RunRecord:
    """A failed run with a successful step, a sleep and the failed step, stored directly."""
    [run] = await support.seed(db, [support.Seed(function_id=function_id, status=records.RunStatus.FAILED)])
    start = run.created_at
    steps = [
        records.StepRecord(
            run.id, "a" * 40, "fetch", "run", {"data": {"rows": [1, 2], "note": HOSTILE}}, 0, 1, start + 1, start + 21
        ),
        records.StepRecord(run.id, "b" * 40, "settle", "sleep", None, 1, 1, start + 21, start + 5021),
        records.StepRecord(
            run.id,
            "c" * 40,
            "charge",
            "run",
            {"error": {"name": "PaymentError", "message": HOSTILE, "stack": f"Traceback\n  {HOSTILE}"}},
            2,
            3,
            start + 5021,
            start + 5100,
        ),
    ]
    async with db.transaction() as tx:
        for step in steps:
            assert await tx.record_step(step)
        run.step_count = 3
        await tx.update_run(run)
    return run


def text_without_tags(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def assert_escaped(html: str, *, shown: bool = True) -> None:
    """The hostile string appears only escaped (if ``shown``: it is there, as text), never as markup."""
    assert HOSTILE not in html
    assert "<script>alert" not in html
    assert ("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html) is shown


def json_of(reply: httpx.Response) -> Any:
    return reply.json()
