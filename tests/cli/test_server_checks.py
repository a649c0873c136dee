"""``stepline dev|start|migrate``: settings that cannot work stop the command with one line before
anything is created or served (exit status 2), and a database that cannot be written stops it
before the server logs the same failure forever (exit status 1). Passwords never show."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import support
from tests.e2e import harness

KEYS = ["--signing-key", harness.SIGNING_KEY, "--event-key", harness.EVENT_KEY]


def server_args(command: str, database_url: str, *extra: str) -> list[str]:
    keys = KEYS if command == "start" else []
    return [command, "--port", str(harness.free_port()), "--database-url", database_url, *keys, *extra]


@pytest.mark.parametrize("text", ["1000000000d", "9" * 400 + "d", "36501d"])
def test_a_retention_too_long_is_one_line(text: str) -> None:
    line = support.one_line_error(support.run("dev", "--port", str(harness.free_port()), "--retention", text), 2)

    assert (
        line == f"Error: --retention must be at most 36500d; use 0/off to keep finished history forever (got {text!r})"
    )


@pytest.mark.parametrize("command", ["dev", "start", "migrate"])
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://u:s3cret-pw@db/x", "unsupported database URL 'mysql://u:***@db/x'"),
        ("postgresql://u:s3cret@pw@127.0.0.1/x", "invalid PostgreSQL URL 'postgresql://u:***@127.0.0.1/x': the user"),
        ("postgresql://u:s3cret/pw@127.0.0.1/x", "percent-encode them ('@' as %40, '/' as %2F)"),
        ("postgresql://u:s3cret-pw@127.0.0.1:abc/x", "the port must be a number from 1 to 65535 (got 'abc')"),
        ("postgresql://u@[::1]:0/x?password=s3cret-pw", "'postgresql://u@[::1]:0/x?password=***': the port"),
        ("postgresql://u@127.0.0.1/x?nonsense=1", "invalid URI query parameter"),
    ],
)
def test_a_database_url_that_cannot_work_exits_2_without_its_password(command: str, url: str, reason: str) -> None:
    args = ["migrate", "--database-url", url] if command == "migrate" else server_args(command, url)

    line = support.one_line_error(support.run(*args), 2)

    assert reason in line
    assert "s3cret" not in line


@pytest.mark.parametrize("command", ["dev", "start", "migrate"])
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("x.db?mode=ro", "Stepline takes no options after '?' ('mode=ro'); name just the file"),
        ("x.db?", "Stepline takes no options after '?' ('')"),
        ("sub/", "sub/ names a folder; name the database file in it, such as sqlite:///"),
        ("", "names a folder"),
    ],
)
def test_a_sqlite_url_that_names_no_file_exits_2_and_creates_nothing(
    tmp_path: Path, command: str, path: str, reason: str
) -> None:
    url = f"sqlite:///{tmp_path}/{path}"
    args = ["migrate", "--database-url", url] if command == "migrate" else server_args(command, url)

    line = support.one_line_error(support.run(*args), 2)

    assert line.startswith(f"Error: invalid SQLite URL {url!r}")
    assert reason in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "urls",
    [
        ["localhost:8000/api/stepline"],
        ["http://127.0.0.1:8000/api/stepline", "127.0.0.1:8001/api"],
        ["http://127.0.0.1:port/api"],
        ["http:///api"],
    ],
)
def test_a_bad_sdk_url_exits_2(tmp_path: Path, urls: list[str]) -> None:
    args = [arg for url in urls for arg in ("--sdk-url", url)]

    line = support.one_line_error(support.run(*server_args("dev", f"sqlite:///{tmp_path}/s.db", *args)), 2)

    assert line.startswith("Error: --sdk-url must be an http(s) address such as http://127.0.0.1:8000/api/stepline")
    assert repr(urls[-1]) in line
    assert list(tmp_path.iterdir()) == []


def test_a_bad_sdk_url_from_the_environment_exits_2(tmp_path: Path) -> None:
    args = server_args("dev", f"sqlite:///{tmp_path}/s.db")
    result = support.run(*args, env={"STEPLINE_SDK_URL": "http://127.0.0.1:8000/api,localhost:8001"})

    assert "(got 'localhost:8001': it needs http:// or https://)" in support.one_line_error(result, 2)


@pytest.mark.parametrize(
    ("option", "key", "what"),
    [
        ("--signing-key", "ab", "signing key (--signing-key)"),
        ("--signing-key", "signkey-prod-" + "ab" * 15, "signing key (--signing-key)"),
        ("--signing-key-fallback", "signkey-prod-0f", "fallback signing key (--signing-key-fallback)"),
    ],
)
def test_start_refuses_a_weak_signing_key(tmp_path: Path, option: str, key: str, what: str) -> None:
    args = server_args("start", f"sqlite:///{tmp_path}/s.db", option, key)

    line = support.one_line_error(support.run(*args), 2)

    digits = len(key.removeprefix("signkey-prod-"))
    assert line == (
        f"Error: the {what} is too short for a production server: {digits} hex digits, at least 32 (16 bytes) "
        "needed; make one with 'stepline keys generate'"
    )


def test_start_takes_a_key_of_16_bytes(tmp_path: Path) -> None:
    with socket.socket() as taken:  # a port in use stops the command just after the key checks
        taken.bind((harness.HOST, 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        key = "ab" * 16
        args = ["start", "--port", port, "--database-url", f"sqlite:///{tmp_path}/s.db", "--signing-key", key]
        result = support.run(*args, "--event-key", "k" * 16)  # the shortest event key taken, too

    assert support.one_line_error(result, 1).startswith(f"Error: cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("k", "event keys must be at least 16 characters in production (one is 1)"),
        ("k" * 15, "event keys must be at least 16 characters in production (one is 15)"),
        ("NO_EVENT_KEY_SET", "NO_EVENT_KEY_SET is what SDKs send when they have no event key, not a key"),
    ],
)
def test_start_refuses_a_guessable_event_key(tmp_path: Path, key: str, reason: str) -> None:
    args = server_args("start", f"sqlite:///{tmp_path}/s.db", "--event-key", key)

    line = support.one_line_error(support.run(*args), 2)

    assert line == f"Error: {reason} (make one with 'stepline keys generate')"
    assert not (tmp_path / "s.db").exists(), "nothing is created before the keys are checked"


def test_a_dev_server_takes_a_short_event_key(tmp_path: Path) -> None:
    with socket.socket() as taken:  # a port in use stops the command just after the settings checks
        taken.bind((harness.HOST, 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = support.run("dev", "--port", port, "--database-url", f"sqlite:///{tmp_path}/s.db", "--event-key", "k")

    assert support.one_line_error(result, 1).startswith(f"Error: cannot listen on 127.0.0.1:{port}")


def test_migrate_shows_the_url_without_its_password(postgres_url: str) -> None:
    with_password = postgres_url.replace("postgres@", "postgres:s3cret-pw@", 1) + "?password=s3cret-pw2"

    result = support.run("migrate", "--database-url", with_password)

    assert result.exit_code == 0, result.output
    masked = postgres_url.replace("postgres@", "postgres:***@", 1) + "?password=***"
    assert result.stdout == f"Database {masked} is up to date.\n"


def test_a_password_in_an_error_is_masked_and_the_reason_is_not(postgres_url: str) -> None:
    dead_port = harness.free_port()
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{dead_port}/x?connect_timeout=3"

    line = support.one_line_error(support.run("migrate", "--database-url", url), 1)

    assert "s3cret" not in line
    assert f"port {dead_port} failed" in line


def test_a_short_password_does_not_garble_the_reason() -> None:
    dead_port = harness.free_port()
    url = f"postgresql://postgres:p@127.0.0.1:{dead_port}/x?connect_timeout=3"

    line = support.one_line_error(support.run("migrate", "--database-url", url), 1)

    assert f"port {dead_port} failed" in line
    assert "accepting" in line


def test_the_banner_masks_the_password(tmp_path: Path, postgres_url: str) -> None:
    database = postgres_url.replace("postgres@", "postgres:s3cret-pw@", 1) + "?password=s3cret-pw"

    with support.dev_server(tmp_path, database=database) as server:
        banner = server.stdout()

    assert "s3cret" not in banner
    assert f"(database {postgres_url.replace('postgres@', 'postgres:***@', 1)}?password=***)" in banner


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` made read-only, for root too (the immutable attribute), or the test skipped."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make a file read-only as root here: {made.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("command", ["dev", "start"])
def test_a_read_only_sqlite_file_stops_the_server_in_one_line(tmp_path: Path, command: str) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    assert support.run("migrate", "--database-url", url).exit_code == 0

    with read_only(tmp_path / "s.db"):
        result = support.run_process(*server_args(command, url), timeout=60)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: cannot write to the database {url}: ")
    assert "attempt to write a readonly database" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_sqlite_file_locked_by_another_process_stops_the_server_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    assert support.run("migrate", "--database-url", url).exit_code == 0
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # as a backup tool or a forgotten sqlite3 shell might
        result = support.run_process(*server_args("dev", url), timeout=60)
    finally:
        holder.close()

    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"Error: cannot write to the database {url}: ")
    assert "database is locked" in result.stderr
    assert "no other process holds it locked" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
