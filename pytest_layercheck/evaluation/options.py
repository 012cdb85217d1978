"""One definition of every setting both front ends share: its name, default, help and parsing.

The pytest plugin adds each as ``--layercheck-NAME`` plus the ini setting ``layercheck_NAME``; the
``layercheck`` command adds it as ``--NAME``. Both read the values back into the same objects
(:func:`profile_settings`, :func:`verdict`), so the two front ends cannot drift apart (the way
pytest-benchmark feeds one option table to its plugin and its CLI).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_layercheck.core.errors import ConfigError, positive_int
from pytest_layercheck.data.bands import DepthBands
from pytest_layercheck.data.statistics import CORRECTIONS

if TYPE_CHECKING:
    # Loaded where the values are read, not where the options are declared: `layercheck --help` and
    # pytest's option parsing must not import torch and transformers.
    from pytest_layercheck.evaluation.comparison import Verdict
    from pytest_layercheck.evaluation.settings import Limit, ProfileSettings


@dataclass(frozen=True)
class Option:
    """A setting: ``--layercheck-NAME`` / ini ``layercheck_NAME`` in pytest, ``--NAME`` on the CLI."""

    name: str
    help: str
    default: str | None = None
    flag: bool = False  # a switch (store_true) rather than a value
    choices: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        """The attribute name: ``sweep-limit`` -> ``sweep_limit``."""
        return self.name.replace("-", "_")


MODEL = (
    Option("device", "auto (CUDA if available), cpu, cuda, cuda:N", "auto"),
    Option("dtype", "auto (bf16 on CUDA, float32 on CPU), float32, bfloat16, float16", "auto"),
    Option("adapter-base", "base model of a PEFT adapter whose adapter_config.json names no local base"),
    Option("device-map", "accelerate device map (auto, balanced, sequential) for a model larger than one device"),
    Option("trust-remote-code", "run the model repository's own code (only for models you trust)", flag=True),
)
PROFILE = (
    Option("suites", "comma-separated suites: built-in names or suite YAML paths", "knowledge,reasoning,retrieval"),
    Option("protocols", "per-suite protocol overrides, e.g. knowledge=mc_text,reasoning=continuation", ""),
    Option(
        "limit",
        "items per suite scored intact: N, or suite=N,... (0 = all; default: all knowledge and "
        "reasoning items, 40 retrieval)",
    ),
    Option(
        "sweep-limit",
        "leading items per suite scored with layers removed: N, or suite=N,... (0 = all; "
        "default: knowledge 140, reasoning 110, retrieval 28, other suites 40; never more than the limit)",
    ),
    Option("mode", "ablation mode: layers (one layer at a time), bands (whole band) or window:K", "layers"),
    Option("bands", "depth bands as fractions, e.g. shallow=0:0.3,middle=0.3:0.7,deep=0.7:1", ""),
    Option(
        "chat-template",
        "render prompts through the tokenizer's chat template as lm-eval's "
        "--apply_chat_template: on (few-shot examples as turns), singleturn or off",
        "off",
    ),
    Option("system-instruction", "system message under --chat-template (lm-eval's --system_instruction)"),
    Option("batch-size", "most sequences per forward pass (default: sized by a memory budget)"),
    Option("no-cache", "recompute every evaluation instead of reading the on-disk result cache", flag=True),
)
VERDICT = (
    Option("max-drop", "tolerated drop: absolute (0.05), relative to the baseline (5%%) or both (0.02,5%%)", "0.05"),
    Option(
        "metric",
        "metric cells are judged by where a suite records it: p_correct (multiple choice's default), "
        "acc, acc_norm, margin, loglikelihood or exact_match; other suites keep their own",
        "",
    ),
    Option(
        "max-shift",
        "largest allowed move of a capability's centre of depth, as a share of the model's depth (the shift cells)",
        "0.1",
    ),
    Option("alpha", "family-wise significance level of the paired tests over items", "0.05"),
    Option("correction", "multiplicity correction over the compared cells", "holm", choices=CORRECTIONS),
    Option(
        "allow-precision-mismatch",
        "compare with a baseline measured in another dtype or device type (the report says so)",
        flag=True,
    ),
    Option(
        "strict-power",
        "an error when a compared cell cannot detect a drop of the tolerance's size with 80%% power",
        flag=True,
    ),
    Option("fail-on-improvement", "also fail cells that improved significantly", flag=True),
)


# ------------------------------------------------------------------------------------ front ends
def add_cli_arguments(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """``--NAME`` arguments of a ``layercheck`` command."""
    for option in options:
        if option.flag:
            parser.add_argument(f"--{option.name}", action="store_true", help=option.help)
        else:
            parser.add_argument(
                f"--{option.name}",
                default=option.default,
                choices=option.choices,
                help=option.help + (f" (default: {option.default})" if option.default else ""),
            )


def add_pytest_options(group: Any, parser: Any, options: Iterable[Option]) -> None:
    """``--layercheck-NAME`` options with an ini setting ``layercheck_NAME`` each (command line wins)."""
    for option in options:
        ini = f"layercheck_{option.key}"
        if option.flag:
            group.addoption(
                f"--layercheck-{option.name}",
                action="store_true",
                dest=ini,
                default=None,
                help=f"{option.help} [ini: {ini}]",
            )
            parser.addini(ini, option.help.replace("%%", "%"), type="bool", default=False)
        else:
            group.addoption(
                f"--layercheck-{option.name}",
                dest=ini,
                default=None,
                choices=option.choices,
                help=f"{option.help} [ini: {ini}]",
            )
            parser.addini(ini, option.help.replace("%%", "%"), default=option.default)


# --------------------------------------------------------------------------------------- parsing
def parse_protocols(text: str | None) -> dict[str, str]:
    """'knowledge=mc_text,reasoning=continuation' -> mapping; empty text -> suite defaults."""
    result: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        suite, sep, protocol = part.partition("=")
        if not sep or not suite.strip() or not protocol.strip():
            raise ConfigError(f"bad protocol override {part!r}", "use SUITE=PROTOCOL, e.g. knowledge=mc_text")
        result[suite.strip()] = protocol.strip()
    return result


def parse_limit(text: str | int | None, defaults: Mapping[str, int | None] | None = None) -> Limit:
    """``""``/None: the built-in per-suite ``defaults``; ``N``: N items of every suite (0 = all);
    ``suite=N,...``: per suite, the others keep their defaults."""
    if defaults is None:
        from pytest_layercheck.evaluation.settings import DEFAULT_LIMITS

        defaults = DEFAULT_LIMITS
    if text is None or text == "":
        return dict(defaults)
    if isinstance(text, str) and "=" in text:
        limits: dict[str, int | None] = dict(defaults)
        for part in filter(None, (p.strip() for p in text.split(","))):
            suite, _, value = part.partition("=")
            if not suite.strip():
                raise ConfigError(f"bad item limit {part!r}", "write suite=N, e.g. knowledge=40,retrieval=10")
            limits[suite.strip()] = _items(value.strip())
        return limits
    return _items(text)


def _items(text: str | int) -> int | None:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(
            f"bad item limit {text!r}", "use a whole number of items per suite (0 means all), or suite=N,..."
        ) from None
    if value < 0:
        raise ConfigError(f"bad item limit {text!r}", "use a whole number >= 0; 0 means all items")
    return None if value == 0 else value


def parse_alpha(text: str | float) -> float:
    """A significance level: a probability strictly between 0 and 1."""
    try:
        alpha = float(text)
    except (TypeError, ValueError):
        alpha = float("nan")
    if not 0 < alpha < 1:
        raise ConfigError(
            f"bad alpha {text!r}: a significance level lies strictly between 0 and 1", "use a probability such as 0.05"
        )
    return alpha


def parse_metric(text: str | None) -> str | None:
    """A metric name a check can be judged by, or None (each suite's own) for an empty value."""
    from pytest_layercheck.data.metrics import METRIC_NAMES

    name = (text or "").strip()
    if not name:
        return None
    if name not in METRIC_NAMES:
        close = difflib.get_close_matches(name, METRIC_NAMES, n=1)
        raise ConfigError(
            f"unknown metric {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
            f"use one of {', '.join(METRIC_NAMES)}",
        )
    return name


def parse_max_shift(text: str | float) -> float:
    """A share of depth in [0, 1]: how far a capability's centre of depth may move."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 <= value <= 1:
        raise ConfigError(
            f"bad max-shift {text!r}: a move along depth is a share of the model's depth in [0, 1]",
            "e.g. 0.1 (three layers of a 30-layer model)",
        )
    return value


def _value(values: Mapping[str, Any], option: Option) -> Any:
    value = values.get(option.key)
    return option.default if value is None and not option.flag else value


def profile_settings(values: Mapping[str, Any]) -> ProfileSettings:
    """What a profile computes, from the PROFILE options' values (keyed by :attr:`Option.key`)."""
    from pytest_layercheck.evaluation.settings import DEFAULT_SWEEP_LIMITS, ProfileSettings
    from pytest_layercheck.scoring.rendering import ChatTemplate

    get = {option.key: _value(values, option) for option in PROFILE}
    settings = ProfileSettings(
        suites=tuple(s.strip() for s in str(get["suites"]).split(",") if s.strip()),
        protocols=parse_protocols(get["protocols"]),
        mode=get["mode"] or "layers",
        bands=DepthBands.parse(get["bands"]) if get["bands"] else DepthBands(),
        limit=parse_limit(get["limit"]),
        sweep_limit=parse_limit(get["sweep_limit"], DEFAULT_SWEEP_LIMITS),
        chat_template=ChatTemplate.parse(get["chat_template"], get["system_instruction"]),
        batch_size=_positive(get["batch_size"], "batch size"),
    )
    named = {"protocols": list(settings.protocols)}
    for key in ("limit", "sweep_limit"):
        given = parse_limit(get[key], {})  # the user's own entries, without the defaults
        named[key.replace("_", "-")] = list(given) if isinstance(given, dict) else []
    check_suite_names(settings.suites, named)
    return settings


def checked_profile_settings(values: Mapping[str, Any]) -> ProfileSettings:
    """:func:`profile_settings` with every suite read and checked: what a command calls before any model loads."""
    from pytest_layercheck.suites.builtin import resolve_suites

    settings = profile_settings(values)
    resolve_suites(settings.suites)
    return settings


def check_suite_names(suites: Iterable[str], named: Mapping[str, Iterable[str]]) -> None:
    """Every suite a per-suite setting names (``limit``: ``knowlege=10``) must be a suite of the run: a
    name that matches none would be dropped silently, and the suite it meant profiled with its defaults."""
    named = {option: list(names) for option, names in named.items() if names}
    if not named:
        return  # nothing to check: no suite needs loading
    from pytest_layercheck.suites.builtin import resolve_suites

    run = [suite.name for suite in resolve_suites(suites)]
    for option, names in named.items():
        for name in names:
            if name not in run:
                close = difflib.get_close_matches(name, run, n=1)
                raise ConfigError(
                    f"the {option} setting (--{option} / --layercheck-{option}) names suite {name!r}, which is not a "
                    f"suite of this run (its suites: {', '.join(run)})",
                    (f"did you mean {close[0]!r}? " if close else "")
                    + "name a suite by its 'name:' (a built-in name or the name inside a suite file), or add it to --suites",
                )


def _positive(text: str | int | None, what: str) -> int | None:
    if text is None or text == "":
        return None
    return positive_int(text, f"bad {what} {text!r}", f"use a whole number >= 1, or leave the {what} unset")


def model_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``load_model`` from the MODEL options' values."""
    get = {option.key: _value(values, option) for option in MODEL}
    return {
        "device": get["device"],
        "dtype": get["dtype"],
        "adapter_base": get["adapter_base"],
        "device_map": get["device_map"] or None,
        "trust_remote_code": bool(get["trust_remote_code"]),
    }


def verdict(values: Mapping[str, Any]) -> Verdict:
    """How a comparison is judged, from the VERDICT options' values (keyed by :attr:`Option.key`)."""
    from pytest_layercheck.evaluation.comparison import Verdict
    from pytest_layercheck.evaluation.comparison_result import Tolerance

    get = {option.key: _value(values, option) for option in VERDICT}
    return Verdict(
        tolerance=Tolerance.parse(str(get["max_drop"])),
        alpha=parse_alpha(get["alpha"]),
        max_shift=parse_max_shift(get["max_shift"]),
        metric=parse_metric(get["metric"]),
        correction=get["correction"] or "holm",
        fail_on_improvement=bool(get["fail_on_improvement"]),
        allow_precision_mismatch=bool(get["allow_precision_mismatch"]),
        strict_power=bool(get["strict_power"]),
    )
