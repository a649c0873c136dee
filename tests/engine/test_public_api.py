"""The public surface of ``import stepline``, and the SDK's independence from the engine and drivers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import stepline

PUBLIC_NAMES = [
    "Stepline",
    "Event",
    "Context",
    "ContextSync",
    "Engine",
    "on_event",
    "on_cron",
    "NonRetriableError",
    "RetryAfterError",
    "StepError",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_is_exposed(name: str) -> None:
    assert name in stepline.__all__
    assert getattr(stepline, name) is not None


def test_all_is_sorted_and_resolvable() -> None:
    assert list(stepline.__all__) == sorted(stepline.__all__)
    for name in stepline.__all__:
        assert getattr(stepline, name) is not None, name


def test_errors_share_one_root() -> None:
    for error in (
        stepline.NonRetriableError,
        stepline.RetryAfterError,
        stepline.StepError,
        stepline.ConfigurationError,
        stepline.ExpressionError,
        stepline.RunNotFoundError,
    ):
        assert issubclass(error, stepline.SteplineError)
    assert issubclass(stepline.ExpressionError, stepline.ConfigurationError)


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        stepline.no_such_thing  # noqa: B018


FORBIDDEN = ("stepline.engine", "stepline.storage", "stepline.server", "psycopg", "sqlite3")

SDK_IMPORT_CHECK = textwrap.dedent(
    """
    import importlib
    import pkgutil
    import sys

    import stepline
    import stepline.sdk

    imported = ["stepline"]
    for info in pkgutil.walk_packages(stepline.sdk.__path__, "stepline.sdk."):
        importlib.import_module(info.name)
        imported.append(info.name)

    forbidden = {forbidden!r}
    leaked = sorted(
        name for name in sys.modules if any(name == f or name.startswith(f + ".") for f in forbidden)
    )
    print("imported:", ", ".join(imported))
    if leaked:
        print("LEAKED:", ", ".join(leaked))
        sys.exit(1)
    """
)


def test_sdk_does_not_import_engine_storage_server_or_drivers() -> None:
    code = SDK_IMPORT_CHECK.format(forbidden=FORBIDDEN)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stepline.sdk.step" in result.stdout
    assert "stepline.sdk.client" in result.stdout


def test_the_subprocess_check_would_notice_a_leak() -> None:
    """Guard against the check above passing vacuously: accessing ``stepline.Engine`` does import the engine."""
    code = SDK_IMPORT_CHECK.format(forbidden=FORBIDDEN).replace(
        "import stepline.sdk\n", "import stepline.sdk\nstepline.Engine\n", 1
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "LEAKED:" in result.stdout
    assert "stepline.engine" in result.stdout
