"""Errors that name what went wrong and how to fix it.

Every user-facing failure in pytest-layercheck is a ``LayercheckError``: the CLI prints it without a
traceback and the pytest plugin turns it into a clean test failure or usage error.
"""

from __future__ import annotations


class LayercheckError(Exception):
    """Base error: a problem statement plus the fix the user should apply."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.fix:
            return f"{self.problem}\n  How to fix: {self.fix}"
        return self.problem


class ModelLoadError(LayercheckError):
    """A model spec could not be turned into a loaded model."""


class UnsupportedArchitectureError(LayercheckError):
    """The model family has no architecture adapter."""


class DefaultModelCacheError(LayercheckError):
    """The default model could not be fetched or converted into the cache."""


class AblationError(LayercheckError):
    """An ablation request does not fit the model (bad layer index, head index, mismatched models)."""


class SuiteFormatError(LayercheckError):
    """A suite file is malformed; the message names file, line and field."""


class ProtocolError(LayercheckError):
    """A suite cannot be scored under the requested protocol."""


class BaselineError(LayercheckError):
    """A baseline is missing, unreadable or does not match the current run."""


class ConfigError(LayercheckError):
    """Invalid plugin, CLI or YAML-check configuration."""


class NonFiniteScoreError(LayercheckError):
    """A model produced NaN or infinite log-likelihoods or logits: its answers cannot be scored."""


def first_line(exc: BaseException) -> str:
    """``TypeName: first line of the message``: a library's exception, short enough for a problem text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def positive_int(text: str | int, problem: str, fix: str) -> int:
    """A setting that must be a whole number >= 1, or a :class:`ConfigError` with ``problem`` and ``fix``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(problem, fix)
    return value
