"""Bearer-token authentication: ``Authorization: Bearer <token>`` → the ``User`` it belongs to.

Tokens of the seeded demo users are in ``db.DEMO_USERS`` (and printed at start-up). A real app
would verify a session or a JWT here; what matters to Stepline is that the dependency resolves
to a user whose ``id`` becomes the task's owner.
"""

from __future__ import annotations

import dataclasses

import fastapi

from examples.roleready import db


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str


class Unauthorized(fastapi.HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": "Bearer"})


def user_for_token(token: str) -> User | None:
    with db.connection() as conn:
        row = conn.execute("SELECT id, name FROM users WHERE token = ?", (token,)).fetchone()
    return None if row is None else User(id=str(row[0]), name=str(row[1]))


async def auth(authorization: str | None = fastapi.Header(default=None)) -> User:
    """The FastAPI dependency every user route takes: 401 without a valid bearer token."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>' (demo tokens are printed at start-up)")
    user = user_for_token(token.strip())
    if user is None:
        raise Unauthorized("unknown token")
    return user
