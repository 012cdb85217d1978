"""The key-value cache is passed and read under the installed transformers' own name, with no warning."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
import torch
from tiny_models import tiny_model

from pytest_layercheck.model import kv_cache


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_cached_step_equals_the_full_forward_and_warns_of_nothing(
    family: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_model(family).eval()
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="transformers"), torch.no_grad():
        warnings.simplefilter("error")  # a FutureWarning of a renamed argument fails the test
        full = model(ids).logits[:, -1]
        prefix = model(ids[:, :-1], use_cache=True)
        cache = kv_cache.returned_cache(prefix)
        assert cache is not None
        step = model(ids[:, -1:], use_cache=True, **kv_cache.cache_kwargs(model, cache)).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-5)
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_the_name_follows_the_model_signature_then_the_installed_release() -> None:
    class OldRemoteCode(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, past_key_values: Any = None) -> None: ...

    class NewRemoteCode(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, cache: Any = None) -> None: ...

    class Wrapper(torch.nn.Module):  # a PEFT-like wrapper: passes everything on to transformers
        def forward(self, *args: Any, **kwargs: Any) -> None: ...

    assert kv_cache.argument_name(OldRemoteCode()) == "past_key_values"
    assert kv_cache.argument_name(NewRemoteCode()) == "cache"
    assert kv_cache.argument_name(Wrapper()) == kv_cache.installed_name()
    assert kv_cache.cache_kwargs(Wrapper(), None) == {} and kv_cache.generate_kwargs(None) == {}


def test_the_installed_name_is_the_one_the_model_declares() -> None:
    """Read independently of the output type: the tiny Llama's own forward signature names it."""
    import inspect

    parameters = inspect.signature(tiny_model("llama").forward).parameters
    expected = "cache" if "cache" in parameters else "past_key_values"
    assert expected in parameters and kv_cache.installed_name() == expected
