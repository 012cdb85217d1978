"""The name transformers gives the key-value cache, on input and on output.

transformers 5.25 renamed the cache argument of ``forward`` and ``generate``, and the output field,
from ``past_key_values`` to ``cache``; the old name still works there but warns that it will go.
Older 5.x releases know only ``past_key_values``. Every cache the package passes or reads goes
through this module, so each transformers release sees its own name and no deprecation warning
reaches the user.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

NEW_NAME = "cache"
OLD_NAME = "past_key_values"


@functools.cache
def installed_name() -> str:
    """The cache's name in the installed transformers, read from its causal-LM output type."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    fields = {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
    return NEW_NAME if NEW_NAME in fields else OLD_NAME


def argument_name(model: Any) -> str:
    """The keyword under which ``model``'s forward takes a cache.

    A model whose ``forward`` names one of the two explicitly (remote code may keep the old name) gets
    that one; a wrapper that takes ``**kwargs`` (PEFT) passes it on to transformers, so it gets the
    installed release's name.
    """
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return installed_name()
    for name in (NEW_NAME, OLD_NAME):
        if name in parameters:
            return name
    return installed_name()


def as_keyword(name: str, cache: Any) -> dict[str, Any]:
    """``{name: cache}``; empty when there is no cache to pass."""
    return {} if cache is None else {name: cache}


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``model(**...)``; empty when there is no cache to pass."""
    return as_keyword(argument_name(model), cache)


def generate_kwargs(cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``model.generate(**...)`` (generation is transformers' own code)."""
    return as_keyword(installed_name(), cache)


def returned_cache(output: Any) -> Any:
    """The cache a forward call returned, or None; read under the name the output type declares."""
    fields = getattr(type(output), "__dataclass_fields__", {})
    name = NEW_NAME if NEW_NAME in fields else OLD_NAME
    return getattr(output, name, None)
