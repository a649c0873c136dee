"""Every server setting and every option of ``stepline dev`` / ``stepline start`` is in docs/reference/settings.md."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click

from stepline.cli import main as cli
from stepline.server import settings as settings_

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "settings.md"
SERVER_COMMANDS = (cli.dev, cli.start)


def server_section() -> str:
    """From the ``## Server settings`` heading to the next heading of the same level."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("\n## Server settings\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def options() -> list[click.Option]:
    return [param for command in SERVER_COMMANDS for param in command.params if isinstance(param, click.Option)]


def row_of(section: str, flag: str) -> str:
    rows = [line for line in section.splitlines() if line.startswith(f"| `{flag}`")]
    assert len(rows) == 1, f"settings.md needs one table row for {flag}, found {len(rows)}"
    return rows[0]


def test_every_option_is_documented_with_its_variable_and_default() -> None:
    section = server_section()
    for option in options():
        row = row_of(section, option.opts[0])
        for name in (*option.opts, *option.secondary_opts):
            assert f"`{name}`" in row, f"{name} is missing from its row in settings.md"
        assert option.envvar, f"{option.opts[0]} has no STEPLINE_* variable"
        assert f"`{option.envvar}`" in row, f"{option.envvar} is not documented next to {option.opts[0]}"
        if option.secondary_opts:  # an on/off pair: the default is the flag that is on by default
            default = option.opts[0] if option.default else option.secondary_opts[0]
            assert f"`{default}`" in row.split("|")[3], f"the default of {option.opts[0]} is not documented"
        elif option.default is not None and not option.multiple:
            assert f"`{option.default}`" in row, f"the default of {option.opts[0]} ({option.default}) is not documented"


def test_only_real_options_are_documented() -> None:
    known = {name for option in options() for name in (*option.opts, *option.secondary_opts)}
    table = [line for line in server_section().splitlines() if line.startswith("| `-")]
    documented = {flag for line in table for flag in re.findall(r"`(-{1,2}[a-z-]+)`", line.split("|")[1])}
    assert documented == known


def test_every_server_setting_is_documented() -> None:
    section = server_section()
    by_option = {option.name for option in options()}
    for field in dataclasses.fields(settings_.ServerSettings):
        if field.name in by_option:
            continue  # documented through its flag, above
        if field.name == "dev":
            assert "`stepline dev`" in section
            assert "`stepline start`" in section
        else:
            assert f"`{field.name}`" in section, f"ServerSettings.{field.name} is not documented in settings.md"


def test_production_requirements_are_documented() -> None:
    section = server_section()
    requirements = section[section.index("### What production mode requires") :]
    for flag in ("--database-url", "--signing-key", "--event-key"):
        assert f"`{flag}`" in requirements
