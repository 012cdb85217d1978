"""The pytest plugin: options, fixtures, the ``layercheck`` marker, YAML checks and the summary.

The plugin is a thin layer over the library: the session lazily loads the model under test (torch is
imported only then, so a pytest run that checks no model starts as fast as without the plugin), computes
its depth profile once, and compares it with the stored baseline. Under pytest-xdist the workers share
the profile's evaluations out among themselves (each computes its share, takes the others' from the
result cache or the run's shared folder, and ends with the whole profile; see
:mod:`pytest_layercheck.evaluation.sharding`); with several GPUs and no device pinned, worker gwN runs
on cuda:N. Only the controller writes baselines and reports, so there are no racing writes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_layercheck.core.errors import LayercheckError
from pytest_layercheck.evaluation.checks import CellCheck
from pytest_layercheck.evaluation.options import MODEL, PROFILE, VERDICT, Option, add_pytest_options
from pytest_layercheck.pytest_plugin.checking import SESSION_KEY, assert_check, guard, session_of
from pytest_layercheck.pytest_plugin.session import LayercheckSession
from pytest_layercheck.pytest_plugin.session_options import SessionOptions
from pytest_layercheck.pytest_plugin.yaml_checks import collect_yaml_checks, is_check_file

if TYPE_CHECKING:
    from pytest_layercheck.data.profile_data import DepthProfile
    from pytest_layercheck.model.ablation import Ablation
    from pytest_layercheck.model.ablation_spec import HeadMode
    from pytest_layercheck.model.loading import LoadedModel
    from pytest_layercheck.pytest_plugin.session_analyses import SessionAnalyses
    from pytest_layercheck.suites.schema import Suite


#: The plugin's own settings; those the ``layercheck`` command shares come from evaluation.options.
PLUGIN_OPTIONS = (
    Option(
        "model", "model under test: 'default', a transformers folder, a .gguf file or a PEFT adapter folder", "default"
    ),
    Option("reference", "reference model for comparisons (same spec forms as the model)"),
    Option("baseline-dir", "folder of baseline JSON files (relative to the rootdir)", "baselines"),
    Option("baseline", "baseline name to compare against (default: derived from the model name)"),
    Option("report", "write a JSON report to this path"),
    Option("html", "write a self-contained HTML report (per-layer charts, cells, changed items) to this path"),
    Option("heatmap", "write a per-layer heatmap PNG to this path (needs matplotlib)"),
    Option(
        "shard-timeout",
        "under pytest-xdist: seconds a worker waits without a sign of life from the worker "
        "computing evaluations it needs, before computing them itself",
        "600",
    ),
)
SHARED_OPTIONS = (*MODEL, *PROFILE, *VERDICT)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("layercheck", "layer-level capability regression checks (pytest-layercheck)")
    add_pytest_options(group, parser, (*PLUGIN_OPTIONS, *SHARED_OPTIONS))
    group.addoption(
        "--layercheck-update",
        action="store_true",
        dest="layercheck_update",
        help="write a missing baseline, merge this run into an existing one and print what changed",
    )
    group.addoption(
        "--layercheck-allow-model-change",
        action="store_true",
        dest="layercheck_allow_model_change",
        help="with --layercheck-update: confirm that this run's model, though not the model the "
        "baseline names (or a candidate beside --layercheck-reference), becomes the baseline",
    )
    parser.addini(
        "layercheck_check_files",
        "glob patterns of YAML check files collected as tests",
        type="args",
        default=["layercheck_*.yaml", "layercheck_*.yml"],
    )


def _option(config: pytest.Config, option: Option) -> Any:
    """Command line over ini over default."""
    key = f"layercheck_{option.key}"
    value = config.getoption(key)
    return value if value is not None else config.getini(key)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "layercheck(capability, band='intact', protocol=None, metric=None, max_drop=None, relative=None, "
        "alpha=None, min=None, max_shift=None): assert that the capability's cell in the depth profile has not "
        "regressed against the baseline, or with band='shift' that it has not moved along depth (pytest-layercheck)",
    )
    plugin = {option.key: _option(config, option) for option in PLUGIN_OPTIONS}
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    options = SessionOptions(
        model=plugin["model"],
        reference=plugin["reference"],
        baseline_dir=Path(config.rootpath, plugin["baseline_dir"]),
        baseline_name=plugin["baseline"],
        report=plugin["report"],
        html=plugin["html"],
        heatmap=plugin["heatmap"],
        update=bool(config.getoption("layercheck_update")),
        allow_model_change=bool(config.getoption("layercheck_allow_model_change")),
        is_xdist_worker=hasattr(config, "workerinput"),
        worker=workerinput.get("workerid"),
        workers=int(workerinput.get("workercount") or 1),
        exchange=Path(workerinput["layercheck_exchange"]) if workerinput.get("layercheck_exchange") else None,
        shard_timeout=_seconds(plugin["shard_timeout"]),
        shared={option.key: _option(config, option) for option in SHARED_OPTIONS},
    )
    try:
        state = LayercheckSession(options)
    except LayercheckError as exc:
        raise pytest.UsageError(f"pytest-layercheck: {exc}") from None
    if not options.is_xdist_worker:
        state.progress = TerminalProgress(config)
    config.stash[SESSION_KEY] = state
    config.pluginmanager.register(CheckReports(state), "layercheck-check-reports")
    from pytest_layercheck.pytest_plugin import html_extras  # imports no pytest-html itself

    if html_extras.wanted(config):  # pytest-html (the optional extra) is loaded and writes a report
        config.pluginmanager.register(html_extras.HtmlExtras(config), html_extras.PLUGIN_NAME)


def _seconds(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        raise pytest.UsageError(
            f"pytest-layercheck: bad --layercheck-shard-timeout {text!r}\n"
            "  How to fix: give a number of seconds > 0, e.g. 600"
        )
    return value


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def layercheck_session(pytestconfig: pytest.Config) -> LayercheckSession:
    """The plugin's session state: settings, model, profile, baseline."""
    return session_of(pytestconfig)


@pytest.fixture(scope="session")
def layercheck_model(layercheck_session: LayercheckSession) -> LoadedModel:
    """The model under test (``LoadedModel``), loaded once per session on CUDA if present, else CPU."""
    return guard(layercheck_session.model)


@pytest.fixture(scope="session")
def layercheck_reference_model(layercheck_session: LayercheckSession) -> LoadedModel:
    """The reference model from ``--layercheck-reference``; skips the test when none is configured."""
    if not layercheck_session.options.reference:
        pytest.skip("no reference model configured (--layercheck-reference)")
    return guard(layercheck_session.reference_model)


@pytest.fixture
def layercheck_ablate(layercheck_model: LoadedModel) -> Callable[..., contextlib.AbstractContextManager[LoadedModel]]:
    """Factory of ablation contexts on the session model: ``with layercheck_ablate(band="deep"): ...``."""
    from pytest_layercheck.data.bands import DepthBands
    from pytest_layercheck.model.ablation import Ablation

    def factory(
        skip: Iterable[int] = (),
        band: str | None = None,
        heads: Mapping[int, Iterable[int]] | None = None,
        head_mode: HeadMode = "zero",
        swap: Iterable[int] = (),
        donor: LoadedModel | Any = None,
    ) -> contextlib.AbstractContextManager[LoadedModel]:
        layers = tuple(skip)
        if band is not None:
            num_layers = layercheck_model.num_layers
            layers += tuple(DepthBands().layers(band, num_layers))
        donor_model = getattr(donor, "model", donor)
        ablation = Ablation.build(skip=layers, heads=heads or {}, head_mode=head_mode, swap=swap)
        return _model_context(layercheck_model, ablation, donor_model)

    return factory


@contextlib.contextmanager
def _model_context(loaded: LoadedModel, ablation: Ablation, donor: Any) -> Iterator[LoadedModel]:
    from pytest_layercheck.model.ablation import ablate

    with ablate(loaded.model, ablation, donor=donor):
        yield loaded


@pytest.fixture(scope="session")
def layercheck_suite() -> Callable[..., Suite]:
    """Suite loader: ``layercheck_suite("knowledge", limit=20)`` or a path to a YAML suite."""
    from pytest_layercheck.suites.builtin import resolve_suite

    def load(name_or_path: str, limit: int | None = None) -> Suite:
        return resolve_suite(name_or_path).limited(limit)

    return load


@pytest.fixture(scope="session")
def layercheck_profile(layercheck_session: LayercheckSession) -> DepthProfile:
    """The session's depth profile (``DepthProfile``), computed once and shared by every test."""
    return guard(lambda: layercheck_session.profile)


@pytest.fixture(scope="session")
def layercheck_baseline(layercheck_session: LayercheckSession) -> DepthProfile:
    """The stored baseline profile; fails with the fix when it is missing or incompatible."""
    return guard(lambda: layercheck_session.baseline)


@pytest.fixture(scope="session")
def layercheck_analyses(layercheck_session: LayercheckSession) -> SessionAnalyses:
    """Analyses of the session model: ``.heads()``, ``.retrieval_heads()``, ``.masking(k)``,
    ``.redundancy()``, ``.thinking()``, ``.transfer()`` and ``.compare()`` (against the reference);
    each computed once per argument set."""
    return layercheck_session.analyses


# ------------------------------------------------------------------------ the marker
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Plan the profile from the collected checks: a run computes only the cells its checks ask for."""
    from pytest_layercheck.pytest_plugin.yaml_checks import YamlCheckItem

    state = session_of(config)
    for item in items:  # named in its reports, which reach the xdist controller (CheckReports)
        if isinstance(item, YamlCheckItem) or item.get_closest_marker("layercheck") is not None:
            item.keywords[CHECK_KEYWORD] = True
    try:
        for item in items:
            check = item_check(item)
            if check is not None:
                state.plan_check(check)  # reads and checks the suites: bad input stops before any model loads
    except LayercheckError as exc:
        raise pytest.UsageError(f"pytest-layercheck: {exc}") from None


def item_check(item: pytest.Item) -> CellCheck | None:
    """The check a collected item asserts (a marked test or a YAML check); None when it has none or
    its arguments are bad (the test then reports that, with the fix, when it runs)."""
    from pytest_layercheck.pytest_plugin.yaml_checks import YamlCheckItem

    if isinstance(item, YamlCheckItem):
        return item.check
    marker = item.get_closest_marker("layercheck")
    if marker is None:
        return None
    try:
        return CellCheck.from_mapping(_marker_arguments(marker), where=item.nodeid)
    except LayercheckError:
        return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    marker = item.get_closest_marker("layercheck")
    if marker is not None:
        check = guard(lambda: CellCheck.from_mapping(_marker_arguments(marker), where=item.nodeid))
        assert_check(session_of(item.config), check, item)
    return result


def _marker_arguments(marker: pytest.Mark) -> dict[str, Any]:
    arguments = dict(marker.kwargs)
    positional = ("capability", "band")
    for name, value in zip(positional, marker.args):
        arguments[name] = value
    return arguments


#: The keyword that marks a layercheck check (a marked test or a YAML check) in its test reports.
CHECK_KEYWORD = "layercheck_check"


class CheckReports:
    """Notes each failed layercheck check in the session (on the xdist controller too: workers' reports
    reach it), so that the JSON report's verdict agrees with pytest's exit status."""

    def __init__(self, state: LayercheckSession) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed and CHECK_KEYWORD in report.keywords:
            self.state.failed_checks.append(report.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A failed check becomes a GitHub annotation on its file and line (also for xdist workers'
    reports, which carry the properties to the controller)."""
    if report.failed and os.environ.get("GITHUB_ACTIONS") == "true":
        verdict = dict(report.user_properties).get("layercheck_verdict")
        if verdict:
            path, line, _ = report.location
            ANNOTATIONS.append(workflow_command("error", str(verdict), path=path, line=line))


#: Annotations of this run's failed checks, printed in the terminal summary.
ANNOTATIONS: list[str] = []


def workflow_command(kind: str, message: str, *, path: str, line: int | None) -> str:
    """A GitHub ``::error file=…,line=…`` command; ``path`` relative to the rootdir, ``line`` 0-based
    as pytest reports it."""
    from pytest_layercheck.report.markdown import _escape

    position = f"file={Path(path).as_posix()}" + (f",line={line + 1}" if line is not None else "")
    return f"::{kind} {position},title=layercheck::{_escape(message)}"


class TerminalProgress:
    """Progress of a long profile in pytest's terminal, shown while output capture is suspended: a
    redrawn bar on a terminal, a line every 10% otherwise (CI logs)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = 0.0
        self.shown = -1

    def __call__(self, what: str, done: int, total: int) -> None:
        import time

        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or total <= 0:
            return
        if done == 0 or self.started == 0.0:
            self.started = self.started or time.perf_counter()
        tty = reporter.isatty()
        step = done * 10 // total
        if not tty and (step == self.shown and done < total):
            return
        self.shown = step
        elapsed = time.perf_counter() - self.started
        filled = done * 24 // total
        text = (
            f"layercheck: profiling {what:<10} [{'#' * filled}{'.' * (24 - filled)}] "
            f"{done}/{total} evaluations, {elapsed:.0f} s"
        )
        context = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
        with context:
            if tty:
                reporter.write("\r" + text + ("\n" if what == "done" else ""), flush=True)
            else:
                reporter.write_line(text)
        if what == "done":
            self.started, self.shown = 0.0, -1


# ------------------------------------------------------------------------ YAML checks
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if is_check_file(file_path, parent.config.getini("layercheck_check_files")):
        return collect_yaml_checks(file_path, parent)
    return None


# ---------------------------------------------------------------- xdist and summary
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session_of(session.config)
    if state.options.is_xdist_worker:
        payload = state.worker_payload()
        if payload is not None:
            session.config.workeroutput["layercheck"] = payload  # type: ignore[attr-defined]
        return
    try:
        failed = state.finish()
    except LayercheckError as exc:
        state.messages.append(f"error: {exc}")
        failed = True
    if failed and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller, before a worker starts: the folder the run's workers share evaluations through."""
    node.workerinput["layercheck_exchange"] = str(session_of(node.config).workers.folder())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: take a worker's profile (they end with the same one) and its counts."""
    payload = getattr(node, "workeroutput", {}).get("layercheck")
    if payload is not None:
        session_of(node.config).absorb_worker_payload(payload)


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        session_of(config).workers.cleanup()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = session_of(config)
    if state.options.is_xdist_worker:
        return
    for command in ANNOTATIONS:
        terminalreporter.write_line(command)
    ANNOTATIONS.clear()
    width = terminalreporter._tw.fullwidth
    lines = state.summary_lines(width=width, color=bool(getattr(terminalreporter, "hasmarkup", False)))
    if lines:
        terminalreporter.section("layercheck depth-sensitivity profile")
        for line in lines:
            terminalreporter.write_line(line)
    if state.has_analyses:
        from pytest_layercheck.report.format import render_text

        terminalreporter.section("layercheck analyses")
        for renderable in state.analyses.renderables():
            terminalreporter.write(render_text(renderable, width=width))
