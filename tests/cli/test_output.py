"""What every command shares: where its output goes, and how it names itself."""

from __future__ import annotations

import os
import re
from importlib import metadata

import pytest

from tests.cli import support


def test_keys_generate_prints_two_keys() -> None:
    result = support.run("keys", "generate")

    assert result.exit_code == 0
    signing_line, event_line = result.stdout.splitlines()
    assert re.fullmatch(r"STEPLINE_SIGNING_KEY=signkey-prod-[0-9a-f]{64}", signing_line)
    assert re.fullmatch(r"STEPLINE_EVENT_KEY=[0-9a-f]{64}", event_line)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_that_cannot_be_written_is_one_line() -> None:
    with open("/dev/full", "w") as full:
        result = support.run_process("keys", "generate", stdout=full.fileno())

    assert result.returncode == 1
    assert result.stderr == "Error: cannot write the output: No space left on device\n"


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `stepline keys generate | head -0` would
    try:
        result = support.run_process("keys", "generate", stdout=write_end)
    finally:
        os.close(write_end)

    assert result.returncode == 1
    assert result.stderr == ""


def test_the_version_names_stepline_however_it_is_run() -> None:
    version = metadata.version("stepline")

    assert support.run("--version").stdout == f"stepline, version {version}\n"
    assert support.run_process("--version").stdout == f"stepline, version {version}\n"
