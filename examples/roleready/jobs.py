"""The jobs users tailor résumés for, and what the worker writes back (results and failures)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from examples.roleready import db


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    id: str
    owner: str
    title: str
    company: str
    keywords: list[str]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _job(row: tuple[Any, ...]) -> Job:
    return Job(id=row[0], owner=row[1], title=row[2], company=row[3], keywords=str(row[4]).split(","))


def get(job_id: str) -> Job | None:
    with db.connection() as conn:
        row = conn.execute("SELECT id, owner, title, company, keywords FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job(row)


def owned_job(user_id: str, job_id: str) -> Job | None:
    """The job if ``user_id`` owns it; None when it does not exist *or* belongs to someone else
    (the route answers 404 for both, so ids of other users' jobs cannot be probed)."""
    job = get(job_id)
    return job if job is not None and job.owner == user_id else None


def for_user(user_id: str) -> list[Job]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, owner, title, company, keywords FROM jobs WHERE owner = ? ORDER BY id", (user_id,)
        ).fetchall()
    return [_job(row) for row in rows]


def save_resume(task_id: str, job_id: str, resume: dict[str, Any]) -> str:
    """Store a tailored résumé, keyed by its task: a retried ``persist`` step writes it once."""
    with db.connection() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO tailored_resumes (task_id, job_id, headline, body) VALUES (?, ?, ?, ?)",
            (task_id, job_id, str(resume.get("headline", "")), json.dumps(resume)),
        )
    return task_id


def record_failure(task_id: str, job_id: str | None, reason: str) -> None:
    with db.connection() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO tailor_failures (task_id, job_id, reason) VALUES (?, ?, ?)",
            (task_id, job_id, reason),
        )
