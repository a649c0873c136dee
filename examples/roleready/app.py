"""RoleReady: a FastAPI app that tailors résumés with a (simulated) model, as tracked tasks.

The route follows the five steps of the enqueue-then-poll contract and never waits on the model:

1. **who** is asking: ``Depends(auth)`` (bearer token, 401 otherwise);
2. **what** they ask for: the body is validated by pydantic (422 names the field);
3. **may** they: the job must be theirs (404 otherwise, as for a job that does not exist);
4. **enqueue**: ``client.tasks.enqueue(...)`` writes the quota use, the task, its event and its
   runs in one transaction (429 with ``Retry-After`` over quota; 503 if Stepline is unreachable);
5. **answer** ``202 {"aiJobId": ...}`` at once; the browser polls or streams ``/api/ai-jobs/{id}``.

Run it with ``./scripts/dev`` (which starts ``stepline dev`` too), or by hand::

    STEPLINE_DEV=1 .venv/bin/uvicorn examples.roleready.app:app --port 8001
    .venv/bin/stepline dev -u http://127.0.0.1:8001/api/stepline

Settings: ``ROLEREADY_DAILY_LIMIT`` (tailorings per user per day, default 20),
``ROLEREADY_DATABASE`` (see ``db.py``) and the simulated model's (see ``simulated_model.py``).
With ``STEPLINE_DATABASE_URL`` set to the Stepline server's PostgreSQL database, step 4 writes
the task there itself (``stepline.tasks.connect``) instead of asking the server over HTTP: one
hop fewer on the route; the server still runs the work.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import fastapi
import fastapi.responses
from pydantic import BaseModel, ConfigDict, Field

import stepline
import stepline.fastapi
import stepline.tasks
from examples.roleready import auth, db, jobs, worker

logger = logging.getLogger("roleready")
client = worker.client
DAILY_LIMIT = int(os.environ.get("ROLEREADY_DAILY_LIMIT", "20"))
TAILOR_QUOTA = stepline.Quota(feature="tailor_resume", limit=DAILY_LIMIT, window=timedelta(days=1))
CurrentUser = Annotated[auth.User, fastapi.Depends(auth.auth)]
"""The authenticated caller (401 without a valid bearer token)."""
INDEX_HTML = Path(__file__).with_name("static") / "index.html"


@asynccontextmanager
async def lifespan(_: fastapi.FastAPI) -> AsyncIterator[None]:
    db.setup()
    tokens = ", ".join(f"{user_id}: {token}" for user_id, _, token in db.DEMO_USERS)
    print(f"RoleReady: demo bearer tokens ({tokens}); database {db.path()}", flush=True)
    stepline_database = os.environ.get("STEPLINE_DATABASE_URL", "")
    if not stepline_database.startswith(("postgresql://", "postgres://")):
        yield  # tasks go to the server at STEPLINE_BASE_URL
        return
    async with stepline.tasks.connect(client, stepline_database):
        print("RoleReady: tasks are written straight to the Stepline database", flush=True)
        yield


app = fastapi.FastAPI(title="RoleReady (Stepline example)", lifespan=lifespan)


class TailorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> fastapi.Response:
    return fastapi.responses.JSONResponse({"error": message, "status": status, **extra}, status, headers=headers)


@app.post("/api/resumes/tailor", status_code=202)
async def tailor(body: TailorBody, user: CurrentUser) -> Any:
    """Start tailoring a résumé for one of the caller's jobs; answers before any model runs."""
    if jobs.owned_job(user.id, body.job_id) is None:
        return _error(404, f"no job {body.job_id!r}")
    try:
        task = await client.tasks.enqueue(
            kind="tailor_resume",
            owner=user.id,
            event=stepline.Event(name="ai/tailor.resume", data={"job_id": body.job_id}),
            quota=TAILOR_QUOTA,
        )
    except stepline.QuotaExceeded as exc:
        retry_after = max(1, math.ceil(exc.retry_after))
        message = f"you have used your {exc.limit} tailorings for today; try again in {retry_after} s"
        return _error(429, message, {"Retry-After": str(retry_after)}, retry_after=retry_after)
    except stepline.EventSendError as exc:
        logger.error("could not enqueue a tailoring task: %s", exc)
        return _error(503, "the tailoring service is unavailable right now; nothing was started, please retry")
    return {"aiJobId": task.id}


@app.get("/api/jobs")
async def my_jobs(user: CurrentUser) -> dict[str, Any]:
    """The caller's jobs, for the page's picker."""
    return {"user": {"id": user.id, "name": user.name}, "jobs": [job.to_json() for job in jobs.for_user(user.id)]}


@app.get("/", include_in_schema=False)
async def index() -> fastapi.responses.HTMLResponse:
    return fastapi.responses.HTMLResponse(INDEX_HTML.read_text(encoding="utf-8"))


# Poll, stream and cancel routes for the caller's own tasks: 404 for anyone else's.
app.include_router(stepline.fastapi.task_routes(client, owner=fastapi.Depends(auth.auth), prefix="/api/ai-jobs"))
# The signed endpoint the Stepline server calls to run ``tailor_resume`` (and its on_failure).
stepline.fastapi.serve(app, client, worker.FUNCTIONS, path="/api/stepline")
