"""The database a server or ``stepline migrate`` is given: its URL checked, shown without its
password, and opened (and written to) once before anything is served.

A URL that cannot be right exits 2 before anything is created; a database that cannot be
opened, migrated or written exits 1, with the reason on one line and no password in it.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse

import psycopg
from psycopg import conninfo

from stepline import errors
from stepline.cli import console
from stepline.storage import open_store
from stepline.storage import url as url_

_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
"""libpq parameters a PostgreSQL URL's query may carry a secret in."""
MASK = "***"


def redact(url: str) -> str:
    """``url`` with the password of its user info and of any ``password=`` parameter as ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head, qmark, tail = rest.partition("?")
    # The user info ends at the *last* '@' before the query: a password holding an unencoded
    # '@' or '/' (which check_url refuses) must still not show.
    userinfo, at, host = head.rpartition("@")
    if at and ":" in userinfo:
        head = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    if qmark:
        query, hashmark, fragment = tail.partition("#")
        query = "&".join(_masked_parameter(part) for part in query.split("&"))
        tail = f"{query}{hashmark}{fragment}"
    return f"{scheme}{sep}{head}{qmark}{tail}"


def _masked_parameter(part: str) -> str:
    name, equals, value = part.partition("=")
    if equals and value and urllib.parse.unquote(name).lower() in _SECRET_PARAMETERS:
        return f"{name}={MASK}"
    return part


def scrub(text: str, url: str) -> str:
    """``text`` (an error's message) with ``url`` shown redacted, and its password masked where
    it stands alone: a password ``p`` must not mask every ``p`` and garble the reason."""
    text = text.replace(url, redact(url))
    for password in _passwords(url):
        text = re.sub(rf"(?<!\w){re.escape(password)}(?!\w)", MASK, text)
    return text


def _passwords(url: str) -> list[str]:
    """The passwords ``url`` holds, as written and as decoded."""
    userinfo = url.partition("://")[2].partition("?")[0].rpartition("@")[0]
    found = [userinfo.partition(":")[2]] if ":" in userinfo else []
    if url.startswith(("postgresql://", "postgres://")):
        try:
            parts = conninfo.conninfo_to_dict(url)
        except psycopg.Error:
            parts = {}
        found += [str(parts[key]) for key in _SECRET_PARAMETERS if parts.get(key)]
    return [password for password in found if password]


def check_url(url: str) -> None:
    """Exit 2 unless ``url`` names a database Stepline can open as it means it."""
    try:
        parsed = url_.parse_database_url(url)
    except errors.ConfigurationError as exc:
        console.fail(scrub(str(exc), url), console.BAD_INPUT)
    if parsed.backend == "postgres":  # storage.url checks a SQLite URL's file name itself
        _check_postgres(url)


def _check_postgres(url: str) -> None:
    head = url.partition("://")[2].partition("?")[0]
    authority, _, path = head.partition("/")
    # libpq ends the user info at the first '@' or '/': a password holding either would be cut
    # there, and the rest taken for the host (the error then names a host nobody typed).
    if authority.count("@") > 1 or ("@" not in authority and "@" in path):
        console.fail(
            f"invalid PostgreSQL URL {redact(url)!r}: the user name or password holds '@' or '/'; "
            "percent-encode them ('@' as %40, '/' as %2F)",
            console.BAD_INPUT,
        )
    for spec in authority.rpartition("@")[2].split(","):
        # libpq takes any port text here and fails only when resolving it, as if the host were wrong.
        port = spec.rpartition("]")[2] if spec.startswith("[") else spec
        digits = port.rpartition(":")[2] if ":" in port else ""
        if digits and not (digits.isdigit() and 1 <= int(digits) <= 65535):
            console.fail(
                f"invalid PostgreSQL URL {redact(url)!r}: the port must be a number from 1 to 65535 (got {digits!r})",
                console.BAD_INPUT,
            )
    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        reason = scrub(str(exc), url).strip()
        console.fail(
            f"invalid PostgreSQL URL {redact(url)!r}: {reason}; expected postgresql://user[:password]@host[:port]/database",
            console.BAD_INPUT,
        )


def check_opens(url: str, pool_size: int, *, write: bool) -> None:
    """Open the database (migrating it) and, with ``write``, write to it once: exit with one line
    if it cannot be done, before a server starts and logs the same failure on every loop."""

    async def check() -> None:
        db = await open_store(url, pool_size=min(pool_size, 2), listen=False)
        try:
            if write:
                try:
                    # A write that changes nothing (no change is older than 1970): a read-only
                    # file, a replica or a lock held elsewhere refuses it as it would the engine.
                    await db.prune_task_changes(0)
                except errors.StorageError as exc:
                    raise _NotWritable(str(exc)) from None
        finally:
            await db.close()

    try:
        asyncio.run(check())
    except _NotWritable as exc:
        what = (
            "that the file and its folder may be written, and that no other process holds it locked"
            if url.startswith("sqlite:")
            else "that the user may write to it, and that it is not a read-only replica"
        )
        console.fail(f"cannot write to the database {redact(url)}: {scrub(str(exc), url)}; check {what}")
    except errors.ConfigurationError as exc:
        console.fail(scrub(str(exc), url), console.BAD_INPUT)
    except errors.SteplineError as exc:
        console.fail(scrub(str(exc), url))


class _NotWritable(errors.StorageError):
    """The write of ``check_opens`` was refused (never leaves this module)."""
