"""pytest-html integration: its report carries the layercheck cells and per-layer charts, through its hooks.

Registered by :func:`..plugin.pytest_configure` only when pytest-html is loaded and writing a report
(``--html``), so nothing here runs, and nothing imports pytest-html, without it (``pip install
'pytest-layercheck[html]'``). Two hooks:

- ``pytest_html_results_summary``: the summary gets the run's verdict, the capability × band table and,
  per suite profiled by the checks that ran, the findings and the per-layer chart (the parts of the
  ``--layercheck-html`` page, :func:`..report.html_page.summary_html`), styled by a copy of that page's CSS
  scoped to them, so pytest-html's own page keeps its look.
- ``pytest_runtest_makereport``: a failed check's test row gets its cell's evidence (values, Δ, CI, raw
  and adjusted p, detectable drop, verdict) as an HTML extra. Under pytest-xdist the worker that ran the
  check adds it, and the extra travels to the controller with the report.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pytest_layercheck.core.errors import LayercheckError
from pytest_layercheck.pytest_plugin.checking import OUTCOME_KEY, session_of

#: The class of every element layercheck adds to pytest-html's page; its styles apply under it only.
SCOPE = "layercheck"
#: The name the plugin registers :class:`HtmlExtras` under.
PLUGIN_NAME = "layercheck-html-extras"


def wanted(config: pytest.Config) -> bool:
    """Whether pytest-html is loaded (not blocked with ``-p no:html``) and writes a report this run."""
    return config.pluginmanager.hasplugin("html") and bool(config.getoption("htmlpath", None))


class HtmlExtras:
    """pytest-html's hooks, implemented from the layercheck session's profile and comparison."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.when == "call" and report.failed:
            evidence = failed_check_html(item)
            if evidence is not None:
                from pytest_html import extras

                report.extras = [*getattr(report, "extras", []), extras.html(evidence)]  # type: ignore[attr-defined]
        return report

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
    ) -> None:
        """After pytest-html's own summary, before its results table: what ``--layercheck-html`` shows
        first. Nothing when no check computed a profile."""
        from pytest_layercheck.report.html import esc, scoped_css
        from pytest_layercheck.report.html_page import summary_html

        state = session_of(session.config)
        profile = state.current
        if profile is None:
            return
        comparison = state.comparison()  # the session's, as pytest_sessionfinish reported it
        try:
            baseline = state.baseline if comparison is not None else None
        except LayercheckError:
            baseline = None
        body = summary_html(
            profile, comparison, baseline=baseline, refused=state.refused, failed_checks=state.failed_checks
        )
        name = esc(profile.model.get("name", "?"))
        postfix.append(
            f"<style>{scoped_css('.' + SCOPE)}</style>"
            f'<section class="{SCOPE}" id="layercheck-summary"><h2>layercheck depth-sensitivity '
            f"profile of {name}</h2>{body}</section>"
        )


def failed_check_html(item: pytest.Item) -> str | None:
    """The evidence of the cell a failed check judged (the cell :func:`..evaluation.checks.run_check`
    compared, kept with its outcome), as an HTML fragment; None when the item is no layercheck check, or it
    failed before there was a cell to judge (no profile, no baseline, a bad argument, a pure ``min`` check:
    its failure message says why)."""
    from pytest_layercheck.report.html import esc
    from pytest_layercheck.report.html_verdict import evidence_table, findings_list

    outcome = item.stash.get(OUTCOME_KEY, None)
    cell = outcome.cell if outcome is not None else None
    if outcome is None or cell is None:
        return None
    verdict = outcome.message.splitlines()[0]
    label = dict(item.user_properties).get("layercheck_cell", cell.label)  # the check's own label
    return (
        f'<div class="{SCOPE} layercheck-evidence" data-cell="{esc(str(label))}" '
        f'data-failed="{str(cell.failed).lower()}"><h3>layercheck cell {esc(cell.label)}</h3>'
        f'<p class="muted">{esc(verdict)}</p>{findings_list([cell])}{evidence_table([cell])}</div>\n'
    )
