"""Running the CLI as a user does: in process (click's runner, stderr apart) or as a process."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
from click.testing import CliRunner, Result

from stepline.cli import main as cli
from tests.e2e import harness


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """``stepline ARGS`` in process, without the caller's STEPLINE_* variables."""
    clean: dict[str, str | None] = {name: None for name in os.environ if name.startswith("STEPLINE_")}
    return CliRunner().invoke(cli.main, list(args), env={**clean, **(env or {})}, catch_exceptions=False)


def one_line_error(result: Result, code: int) -> str:
    """The one error line a failed command printed on stderr (nothing on stdout), checked."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def run_process(
    *args: str, stdout: int | None = subprocess.PIPE, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m stepline.cli ARGS`` as a process."""
    return subprocess.run(
        [sys.executable, "-m", "stepline.cli", *args],
        cwd=harness.ROOT,
        env=_clean_env(),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )


def _clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith(("STEPLINE_", "INNGEST_"))}


@dataclasses.dataclass
class ServerProcess:
    popen: subprocess.Popen[bytes]
    url: str
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()


@contextlib.contextmanager
def dev_server(
    folder: Path, *args: str, host: str = harness.HOST, database: str | None = None
) -> Iterator[ServerProcess]:
    """``stepline dev`` as a process on a free port (a SQLite file in ``folder`` unless told
    otherwise), answering /health; killed on the way out."""
    port = harness.free_port()
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    database = database or f"sqlite:///{folder}/stepline.db"
    command = [sys.executable, "-m", "stepline.cli", "dev", "--host", host, "--port", str(port)]
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(
            [*command, "--database-url", database, *args],
            cwd=harness.ROOT,
            env=_clean_env(),
            stdout=stdout,
            stderr=stderr,
        )
    running = ServerProcess(popen, url, out, err)
    try:
        harness.wait_for(lambda: _healthy(running), 30, "the server to answer GET /health")
        yield running
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait(10)


def _healthy(server: ServerProcess) -> bool:
    if server.popen.poll() is not None:
        raise AssertionError(f"the server exited with {server.popen.returncode}: {server.stderr()}")
    try:
        return httpx.get(f"{server.url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclasses.dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of_json(cls, status: int, value: object) -> Answer:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json"})


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _FakeServer

    def do_GET(self) -> None:
        answer = self.server.answer
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:  # quiet: the test reads the CLI, not this log
        pass


class _FakeServer(http.server.ThreadingHTTPServer):
    answer = Answer(200)


@contextlib.contextmanager
def fake_server() -> Iterator[_FakeServer]:
    """Something on a port that is not a Stepline server: it answers every request with ``.answer``."""
    server = _FakeServer((harness.HOST, 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def fake_url(server: _FakeServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"
