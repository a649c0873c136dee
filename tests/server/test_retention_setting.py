"""``--retention`` / ``STEPLINE_RETENTION`` and ``Engine(retention=...)``: what they accept and refuse."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

import stepline
from stepline import errors
from stepline.cli import main as cli
from stepline.engine import retention
from stepline.server import settings as settings_


@pytest.mark.parametrize("text", ["0", "off", "OFF", " off "])
def test_zero_or_off_turns_retention_off(text: str) -> None:
    assert settings_.parse_retention(text) is None
    assert retention.parse(None) is None
    assert retention.parse(timedelta(0)) is None


def test_periods_are_the_protocols_time_strings() -> None:
    assert settings_.parse_retention("7d") == timedelta(days=7)
    assert settings_.parse_retention("12h") == timedelta(hours=12)
    assert settings_.parse_retention("30m") == timedelta(minutes=30)
    assert settings_.parse_retention("1h30m") == timedelta(minutes=90)
    assert settings_.ServerSettings(dev=True, database_url="sqlite:///x.db").retention == timedelta(days=7)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("soon", "--retention must be a duration such as '7d', '12h' or '30m', or 'off'"),
        ("-1d", "--retention must be a duration"),
        ("7", "--retention must be a duration"),
        ("30s", "--retention must be at least 1m, or 0/off"),
    ],
)
def test_the_cli_refuses_a_bad_retention_in_one_line(text: str, reason: str) -> None:
    result = CliRunner().invoke(cli.main, ["dev", "--retention", text])

    assert result.exit_code == 2
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"Error: {reason}")
    assert repr(text) in result.output


def test_the_cli_reads_stepline_retention() -> None:
    result = CliRunner().invoke(cli.main, ["dev"], env={"STEPLINE_RETENTION": "forever"})

    assert result.exit_code == 2
    assert "--retention must be a duration" in result.output


def test_the_embedded_engine_takes_the_same_values() -> None:
    client = stepline.Stepline(app_id="retention-setting")
    assert stepline.Engine(client, [], retention="12h").retention == timedelta(hours=12)
    assert stepline.Engine(client, [], retention="off").retention is None
    assert stepline.Engine(client, [], retention=None).retention is None
    assert stepline.Engine(client, []).retention == timedelta(days=7)
    with pytest.raises(errors.ConfigurationError, match="retention must be a duration"):
        stepline.Engine(client, [], retention="a week")
