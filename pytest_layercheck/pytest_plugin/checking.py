"""What a check needs at run time, shared by marked tests and YAML check items: the session in the
pytest stash, clean failures for LayercheckErrors, and the assertion itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_layercheck.core.errors import LayercheckError
from pytest_layercheck.evaluation.checks import CellCheck, CheckOutcome, run_check
from pytest_layercheck.pytest_plugin.session import LayercheckSession

SESSION_KEY = pytest.StashKey[LayercheckSession]()
#: A check item's outcome, for reports of that test (pytest-html's row extras).
OUTCOME_KEY = pytest.StashKey[CheckOutcome]()


def session_of(config: pytest.Config) -> LayercheckSession:
    return config.stash[SESSION_KEY]


def guard(getter: Callable[[], Any]) -> Any:
    """Call ``getter``; a LayercheckError becomes a clean failure (no traceback, no chained error)."""
    try:
        return getter()
    except LayercheckError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


def assert_check(session: LayercheckSession, check: CellCheck, item: pytest.Item | None = None) -> None:
    """Run one check against the session profile; a failure is a clean pytest failure.

    The cell's values go into the JUnit XML (``record_property``), and a failure becomes a GitHub
    annotation on the check's file and line.
    """

    def verdict() -> CheckOutcome:
        baseline = session.baseline_or_none_for(check)  # a missing baseline fails before the profile's cost
        verdict = session.verdict
        return run_check(
            check, session.profile_for(check), baseline, verdict.tolerance, verdict.alpha, **verdict.options()
        )

    outcome = guard(verdict)
    session.record_check(check, outcome)
    if item is not None:
        item.stash[OUTCOME_KEY] = outcome
        item.user_properties.append(("layercheck_cell", check.label))
        item.user_properties.append(("layercheck_passed", outcome.passed))
        item.user_properties.append(("layercheck_verdict", outcome.message.splitlines()[0]))
        for name, value in getattr(outcome, "properties", {}).items():
            item.user_properties.append((f"layercheck_{name}", value))
    if not outcome.passed:
        pytest.fail(outcome.message, pytrace=False)
