"""Stopping ``stepline dev`` (and ``start``, the same code): SIGTERM drains and exits 0, Ctrl-C
drains and exits 130, both say they are draining, and a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from stepline.cli import database
from tests.cli import support
from tests.e2e import harness

DRAINING = (
    "Stopping: letting requests and calls to apps in flight finish (up to 10 s each); "
    "press Ctrl-C again to stop at once."
)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_drains_then_exits_with_the_expected_status(tmp_path: Path, sig: int, status: int) -> None:
    with support.dev_server(tmp_path) as server:
        server.popen.send_signal(sig)
        assert server.popen.wait(30) == status

    assert server.stderr().splitlines()[-1] == DRAINING
    assert "Traceback" not in server.stderr()
    assert "Aborted" not in server.stderr()


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    with support.dev_server(tmp_path) as server, socket.create_connection(_address(server.url)) as slow:
        # A request whose body never comes: draining would wait the whole grace period for it.
        slow.sendall(
            b"POST /e/key HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n{"
        )
        time.sleep(0.5)
        server.popen.send_signal(signal.SIGINT)
        harness.wait_for(lambda: DRAINING in server.stderr(), 10, "the draining line")
        assert server.popen.poll() is None, "still draining"
        stopped = time.monotonic()
        server.popen.send_signal(signal.SIGINT)
        assert server.popen.wait(30) == 130
        assert time.monotonic() - stopped < 5

    assert server.stderr().splitlines()[-2:] == [
        DRAINING,
        "Stopping at once: runs in flight are retried when their leases expire.",
    ]


def _address(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


def test_ctrl_c_while_starting_exits_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(database, "check_opens", interrupted)

    result = support.run("dev", "--port", str(harness.free_port()), "--database-url", f"sqlite:///{tmp_path}/s.db")

    assert result.exit_code == 130
    assert "Aborted" not in result.output


def test_the_banner_puts_an_ipv6_host_in_brackets(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")

    with support.dev_server(tmp_path, host="::1") as server:
        banner = server.stdout().splitlines()[0]

    assert banner == f"Stepline dev server on {server.url} (database sqlite:///{tmp_path}/stepline.db)"
    assert server.url.startswith("http://[::1]:")
