"""The server's comparison of event keys and the dashboard token: every configured key is
checked (constant time), and a key holding bytes that are not UTF-8 (read from the environment,
they arrive as lone surrogates) is compared rather than failing every request with a 500."""

from __future__ import annotations

import pytest

from stepline.server import auth

KEYS = ("the-first-event-key", "the-second-event-key", "not-utf8-\udcff-event-key")


@pytest.mark.parametrize(
    ("given", "matches"),
    [
        ("the-first-event-key", True),
        ("the-second-event-key", True),
        ("not-utf8-\udcff-event-key", True),
        ("the-first-event-ke", False),
        ("the-first-event-keyx", False),
        ("not-utf8-\udcfe-event-key", False),
        ("", False),
    ],
)
def test_an_event_key_matches_only_a_configured_one(given: str, matches: bool) -> None:
    assert auth.event_key_matches(given, KEYS) is matches


def test_no_configured_keys_match_nothing() -> None:
    assert auth.event_key_matches("anything", ()) is False


def test_a_dashboard_token_with_lone_surrogates_is_compared() -> None:
    assert auth.dashboard_token_matches("token-\udcff-of-the-dashboard", "token-\udcff-of-the-dashboard")
    assert not auth.dashboard_token_matches("token-\udcff-of-the-dashboard", "token-\udcfe-of-the-dashboard")
