"""The analyses, one entry each: what runs it, how the front ends show it, and its ``layercheck`` subcommand.

An analysis is one room, a package of ``analysis/`` (or of another distribution): its computation, its
result type, its renderers and an :class:`Analysis` entry per analysis in the room's ``ANALYSES``. The
front ends read this registry: the ``layercheck_analyses`` fixture runs, memoises and reports analyses by
name, ``cli/analyses.py`` builds a subcommand from every entry with a :class:`Command`, and
:mod:`pytest_layercheck.analysis` exports each public entry's function. A new analysis is its room plus one line in
:data:`BUILTIN_ROOMS` (or, from another distribution, an entry point in the ``layercheck.analyses``
group naming its room); a conftest can also :func:`register_analysis` one directly. A result that has
``to_dict()`` is reported in pytest's summary even without a renderer of its own.

Entries name their functions by import path (``"module:function"``), and rooms are imported on the first
lookup, so listing the analyses (and ``layercheck --help``) imports no model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pytest_layercheck.analysis.arguments import MODEL_ARGUMENT, Argument
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.core.registry import Registry

if TYPE_CHECKING:
    from pytest_layercheck.evaluation.profiler import ProgressHook
    from pytest_layercheck.model.loading import LoadedModel

#: A function, or ``"module:attribute"`` imported on first use.
Target = Callable[..., Any] | str

#: The built-in rooms, each a module with ``ANALYSES``; ``layercheck --help`` lists their subcommands in this order.
BUILTIN_ROOMS: tuple[str, ...] = (
    "pytest_layercheck.analysis.heads",
    "pytest_layercheck.analysis.retrieval_heads",
    "pytest_layercheck.analysis.redundancy",
    "pytest_layercheck.analysis.thinking",
    "pytest_layercheck.analysis.transfer",
    "pytest_layercheck.analysis.weight_delta",
    "pytest_layercheck.analysis.localise",
    "pytest_layercheck.analysis.compare",
)
#: Entry point group of rooms from other distributions (the entry point names the room's module).
ENTRY_POINTS = "layercheck.analyses"


def resolve(target: Target) -> Any:
    """The object ``target`` names (importing its module), or ``target`` itself."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Stage(Protocol):
    """One step of a command as the front end shows it: ``with stage("metrics", "removing blocks") as hook``
    times the step (saying ``metrics: 1.2 s``, with ``note()`` in brackets) and, when ``bar`` names a
    progress bar, yields its hook (else None)."""

    def __call__(
        self, label: str, bar: str | None = None, note: Callable[[], str] | None = None
    ) -> AbstractContextManager[ProgressHook | None]: ...


@dataclass(frozen=True)
class Outputs:
    """What the subcommand's ``--json``, ``--markdown`` and ``--html`` options say they write (no ``--html``
    when ``html`` is empty; True: the depth report's page), and whether ``--summary`` appends the markdown
    to the GitHub step summary."""

    json: str = "the result"
    markdown: str = "the markdown report"
    html: bool | str = ""
    summary: bool = False


@dataclass(frozen=True)
class Command:
    """An analysis's ``layercheck`` subcommand, which ``cli/analyses.py`` builds.

    The subcommand takes ``models`` (positional; loaded in this order) and their loading options, the
    option groups of :mod:`pytest_layercheck.evaluation.options` that ``options`` names (``"PROFILE"``,
    ``"VERDICT"``), ``arguments``, the output files and, for an analysis that ``uses_cache``, ``--no-cache``.
    ``module`` is the room's command module; it defines:

    * ``run(*models, stage, **keywords)``: the computation on the loaded models, its steps shown through
      ``stage`` (:class:`Stage`); the keywords are the arguments that are not ``view`` options (and ``cache``);
    * ``terminal(result, view)``, ``markdown(result, view)`` and ``html(result, view)``: the result as a rich
      renderable, markdown and an HTML page, ``view`` mapping the ``view`` options' keys to their values;
    * ``to_json(result)``: the result as JSON-ready data;

    and may define:

    * ``settings(keywords, values)``: the keywords ``run`` takes instead, made from the arguments' keywords
      and every parsed value (the option groups' too, by :attr:`~pytest_layercheck.evaluation.options.Option.key`)
      before any model loads, so that a typo costs no load;
    * ``passed(result)``: False when the result is a regression (the command then exits 1);
    * ``workflow_commands(result)``: GitHub workflow commands (annotations), printed in GitHub Actions.
    """

    name: str
    help: str
    module: str
    arguments: tuple[Argument, ...] = ()
    outputs: Outputs = field(default_factory=Outputs)
    #: The subcommand's own ``--help`` text (None: argparse shows none).
    description: str | None = None
    models: tuple[Argument, ...] = (MODEL_ARGUMENT,)
    options: tuple[str, ...] = ()

    def function(self, name: str) -> Callable[..., Any]:
        function: Callable[..., Any] = resolve(f"{self.module}:{name}")
        return function

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The command module's optional function ``name``, or None where it defines none."""
        hook: Callable[..., Any] | None = getattr(importlib.import_module(self.module), name, None)
        return hook


@dataclass(frozen=True)
class Analysis:
    """One analysis: ``target`` is its function, ``run(loaded, **kwargs) -> result``.

    ``compares``: the function takes a reference (base) model first, ``run(reference, loaded, **kwargs)``,
    and the fixture passes ``--layercheck-reference``. ``summary`` renders a result for pytest's terminal
    summary (default: its name and ``to_dict()``). ``public``: the function is in the public API
    (:mod:`pytest_layercheck.analysis`), under its own name.
    """

    name: str
    target: Target
    #: One line for listings and error messages.
    description: str
    #: The function takes ``cache=`` (a result cache) and should share the session's.
    uses_cache: bool = False
    compares: bool = False
    summary: Target | None = None
    command: Command | None = None
    public: bool = False

    def function(self) -> Callable[..., Any]:
        function: Callable[..., Any] = resolve(self.target)
        return function

    def run(self, loaded: LoadedModel, reference: LoadedModel | None = None, **kwargs: Any) -> Any:
        """The analysis of ``loaded`` (a :class:`~pytest_layercheck.model.loading.LoadedModel`), against
        ``reference`` when it ``compares``."""
        if self.compares:
            if reference is None:
                raise ConfigError(f"analysis {self.name!r} compares two models", "pass the reference model")
            return self.function()(reference, loaded, **kwargs)
        return self.function()(loaded, **kwargs)


_REGISTRY: Registry[Analysis] = Registry("analysis", ConfigError)
_loaded_rooms: list[str] = []


def _rooms() -> list[str]:
    """The built-in rooms, then those other distributions declare as entry points."""
    from importlib.metadata import entry_points  # read on the first lookup: importing the package stays cheap

    return [*BUILTIN_ROOMS, *(point.value for point in entry_points(group=ENTRY_POINTS))]


def _load_rooms() -> None:
    """Register every room's analyses, once (on the first lookup, not at import)."""
    if _loaded_rooms:
        return
    for room in _rooms():
        _loaded_rooms.append(room)
        for analysis in room_analyses(room):
            register_analysis(analysis)


def room_analyses(room: str) -> tuple[Analysis, ...]:
    """The ``ANALYSES`` a room module declares."""
    analyses: tuple[Analysis, ...] = importlib.import_module(room).ANALYSES
    return analyses


def register_analysis(analysis: Analysis) -> Analysis:
    """Make ``analysis`` available to the ``layercheck_analyses`` fixture by its name."""
    return _REGISTRY.register(
        analysis.name, analysis, "choose another name, or unregister_analysis() the old one first"
    )


def unregister_analysis(name: str) -> None:
    """Remove an analysis (tests register toy analyses and remove them afterwards)."""
    _REGISTRY.unregister(name)


def get_analysis(name: str) -> Analysis:
    _load_rooms()
    return _REGISTRY.get(name, ", or register_analysis() your own")


def analysis_names() -> tuple[str, ...]:
    _load_rooms()
    return tuple(sorted(_REGISTRY.names()))


def commands() -> list[Analysis]:
    """The analyses with a ``layercheck`` subcommand, in registration order."""
    _load_rooms()
    entries = [_REGISTRY.get(name) for name in _REGISTRY.names()]
    return [analysis for analysis in entries if analysis.command is not None]


def public_functions() -> Mapping[str, tuple[str, str]]:
    """The built-in analyses' public functions: name -> (defining module, the same name)."""
    exported = {}
    for room in BUILTIN_ROOMS:
        for analysis in room_analyses(room):
            if analysis.public and isinstance(analysis.target, str):
                module, _, attribute = analysis.target.partition(":")
                exported[attribute] = (module, attribute)
    return exported
