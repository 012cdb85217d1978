"""The command-line arguments an analysis declares for its ``layercheck`` subcommand.

An :class:`Argument` is what ``parser.add_argument(*flags, **options)`` takes, plus how its parsed value
reaches the analysis: ``convert`` turns it into the keyword the command's run function takes (under the
argument's destination name), or, with ``view``, into an option of how the result is shown. The value
types here (:func:`count`) are argparse types. Nothing here imports rich, numpy or torch, so the
parsers answer ``--help`` at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Argument:
    """One option of an analysis's subcommand: argparse's flags and keywords, and where its value goes."""

    flags: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Parsed value -> the run function's keyword value (e.g. "a,b" -> ["a", "b"]); None keeps it as parsed.
    convert: Callable[[Any], Any] | None = None
    #: An option of the renderers (how the result is shown), not of the computation.
    view: bool = False

    @property
    def key(self) -> str:
        """The destination argparse gives the value, and the keyword it is passed as: ``--cot-tokens`` -> ``cot_tokens``."""
        if "dest" in self.options:
            return str(self.options["dest"])
        flag = next((f for f in self.flags if f.startswith("--")), self.flags[0])
        return flag.lstrip("-").replace("-", "_")

    def value(self, parsed: Any) -> Any:
        return parsed if self.convert is None else self.convert(parsed)


def argument(*flags: str, convert: Callable[[Any], Any] | None = None, view: bool = False, **options: Any) -> Argument:
    """``argument("--limit", type=count, default=40, help=..., convert=all_if_zero)``, as ``add_argument`` reads."""
    return Argument(flags, options, convert, view)


#: The model a subcommand loads unless its command names others: optional, ``default`` when left out.
MODEL_ARGUMENT = argument(
    "model",
    nargs="?",
    default="default",
    help="'default', a transformers folder, a .gguf file or a PEFT adapter folder",
)


def count(text: str) -> int:
    """An argparse type: a whole number >= 0 (a negative limit would silently mean "all but the last N")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use a whole number >= 0")
    return value


def names(text: str) -> list[str]:
    """A comma-separated list: ``"knowledge, reasoning,"`` -> ``["knowledge", "reasoning"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def all_if_zero(value: int) -> int | None:
    """``--limit 0`` means every item: None."""
    return value or None
