"""The dashboard's tasks: the list (by owner, status and kind, paginated), a task's page with its
progress, reason and run, escaping of what apps put in tasks, and the cancel action."""

from __future__ import annotations

import html as html_
import re

from stepline.engine import tasks
from stepline.storage import records
from tests.server import support
from tests.ui.support import APP_CONFIG, HOSTILE, ORIGIN, act, assert_escaped


async def sync_shop(server: support.Server) -> None:
    reply = await server.client.post("/fn/register", json=APP_CONFIG)
    assert reply.status_code == 200, reply.text


async def enqueue(server: support.Server, owner: str = "u1", kind: str = "tailor_resume") -> records.TaskRecord:
    """A task whose run waits for an app that is down: it stays pending until cancelled."""
    request = tasks.TaskRequest.build(kind=kind, owner=owner, event={"name": "shop/signup", "data": {}})
    return (await server.runtime.enqueue_task(request)).task


async def test_the_list_filters_by_owner_and_status_and_pages(server: support.Server) -> None:
    await sync_shop(server)
    made = [await enqueue(server, owner=f"u{i % 2}") for i in range(55)]
    await server.runtime.cancel_task(made[0].id)

    html = (await server.client.get("/tasks")).text
    ids = re.findall(r'<a href="/tasks/([0-9A-Z]{26})"', html)
    assert ids == [task.id for task in reversed(made)][:50]
    older = re.search(r'href="/tasks\?(cursor=[0-9A-Z]{26})" rel="next"', html)
    assert older
    rest = re.findall(r'<a href="/tasks/([0-9A-Z]{26})"', (await server.client.get(f"/tasks?{older.group(1)}")).text)
    assert rest == [task.id for task in reversed(made)][50:]

    mine = (await server.client.get("/tasks?owner=u1")).text
    assert set(re.findall(r'<a href="/tasks/([0-9A-Z]{26})"', mine)) == {t.id for t in made if t.owner == "u1"}
    cancelled = (await server.client.get("/tasks?status=cancelled")).text
    assert re.findall(r'<a href="/tasks/([0-9A-Z]{26})"', cancelled) == [made[0].id]
    assert (await server.client.get("/tasks?status=sleepy")).status_code == 400


async def test_the_list_filters_by_kind_and_keeps_the_filter_on_the_next_page(server: support.Server) -> None:
    await sync_shop(server)
    embeds = [await enqueue(server, kind="embed") for _ in range(51)]
    await enqueue(server)

    html = (await server.client.get("/tasks?kind=embed")).text
    ids = re.findall(r'<a href="/tasks/([0-9A-Z]{26})"', html)
    older = re.search(r'href="/tasks\?(kind=embed&amp;cursor=[0-9A-Z]{26})" rel="next"', html)
    assert older
    next_page = (await server.client.get("/tasks?" + html_.unescape(older.group(1)))).text
    rest = re.findall(r'<a href="/tasks/([0-9A-Z]{26})"', next_page)

    assert ids + rest == [task.id for task in reversed(embeds)]
    assert 'name="kind" value="embed"' in html
    assert (await server.client.get("/tasks?kind=" + "k" * 201)).status_code == 400


async def test_a_task_page_shows_progress_run_and_escapes_what_apps_wrote(server: support.Server) -> None:
    await sync_shop(server)
    task = await enqueue(server, owner=HOSTILE, kind=HOSTILE)
    assert await server.runtime.report_task_progress(task.id, 0.4, HOSTILE)

    reply = await server.client.get(f"/tasks/{task.id}")

    assert reply.status_code == 200
    html = reply.text
    assert_escaped(html)
    assert 'id="task-status">pending<' in html
    assert 'value="40"' in html
    assert f'href="/runs/{task.run_id}"' in html
    assert f'data-live="/live/tasks/{task.id}"' in html
    run_page = (await server.client.get(f"/runs/{task.run_id}")).text
    assert f'href="/tasks/{task.id}"' in run_page
    assert (await server.client.get("/tasks/01J00000000000000000000000")).status_code == 404


async def test_cancel_from_the_task_page(server: support.Server) -> None:
    await sync_shop(server)
    task = await enqueue(server)

    reply = await act(server.client, f"/tasks/{task.id}/cancel")

    assert reply.headers["location"] == f"/tasks/{task.id}?done=cancelled"
    after = await server.runtime.store.get_task(task.id)
    assert after is not None
    assert after.status is records.TaskStatus.CANCELLED
    html = (await server.client.get(reply.headers["location"])).text
    assert "Task cancelled." in html
    assert 'id="task-status">cancelled<' in html
    assert "data-live" not in html.split('id="task-live"')[1].split(">")[0]


async def test_cancel_without_the_csrf_token_is_refused(server: support.Server) -> None:
    await sync_shop(server)
    task = await enqueue(server)

    reply = await server.client.post(f"/tasks/{task.id}/cancel", data={}, headers={"Origin": ORIGIN})

    assert reply.status_code == 403
    after = await server.runtime.store.get_task(task.id)
    assert after is not None
    assert after.status is records.TaskStatus.PENDING
