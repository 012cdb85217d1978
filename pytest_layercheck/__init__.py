"""pytest-layercheck: depth-sensitivity profiles of language models as pytest regression tests.

The public API is what this module exports, and the analyses in :mod:`pytest_layercheck.analysis`; deeper
module paths may move between releases::

    from pytest_layercheck import load_model, build_profile, BaselineStore, compare_profiles

    loaded = load_model("default")
    profile = build_profile(loaded)
    comparison = compare_profiles(BaselineStore("baselines").load("smollm2-135m-instruct"), profile)

Names load on first use, so that pytest's start-up (which imports this package for the plugin) does
not pay for the model and scoring layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_layercheck.core.lazy import lazy_attributes
from pytest_layercheck.core.version import __version__

#: Public name -> the module that defines it (and the name there, when it differs).
_EXPORTS: dict[str, tuple[str, str]] = {
    # models and ablations
    "load_model": ("pytest_layercheck.model.loading", "load_model"),
    "LoadedModel": ("pytest_layercheck.model.loading", "LoadedModel"),
    "Ablation": ("pytest_layercheck.model.ablation", "Ablation"),
    "ablate": ("pytest_layercheck.model.ablation", "ablate"),
    "DepthBands": ("pytest_layercheck.data.bands", "DepthBands"),
    # suites and scoring
    "load_suite": ("pytest_layercheck.suites.loader", "load_suite"),
    "resolve_suite": ("pytest_layercheck.suites.builtin", "resolve_suite"),
    "score_suite": ("pytest_layercheck.evaluation.service", "score_suite"),
    # profiles, baselines, verdicts
    "ProfileSettings": ("pytest_layercheck.evaluation.settings", "ProfileSettings"),
    "build_profile": ("pytest_layercheck.evaluation.profiler", "build_profile"),
    "DepthProfile": ("pytest_layercheck.data.profile_data", "DepthProfile"),
    "BaselineStore": ("pytest_layercheck.evaluation.baseline", "BaselineStore"),
    "compare_profiles": ("pytest_layercheck.evaluation.comparison", "compare_profiles"),
    "Tolerance": ("pytest_layercheck.evaluation.comparison_result", "Tolerance"),
    "Verdict": ("pytest_layercheck.evaluation.comparison", "Verdict"),
    "ResultCache": ("pytest_layercheck.evaluation.result_cache", "ResultCache"),
    # errors
    "LayercheckError": ("pytest_layercheck.core.errors", "LayercheckError"),
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads these on first use
    from pytest_layercheck.core.errors import LayercheckError
    from pytest_layercheck.data.bands import DepthBands
    from pytest_layercheck.data.profile_data import DepthProfile
    from pytest_layercheck.evaluation.baseline import BaselineStore
    from pytest_layercheck.evaluation.comparison import Verdict, compare_profiles
    from pytest_layercheck.evaluation.comparison_result import Tolerance
    from pytest_layercheck.evaluation.profiler import build_profile
    from pytest_layercheck.evaluation.result_cache import ResultCache
    from pytest_layercheck.evaluation.service import score_suite
    from pytest_layercheck.evaluation.settings import ProfileSettings
    from pytest_layercheck.model.ablation import Ablation, ablate
    from pytest_layercheck.model.loading import LoadedModel, load_model
    from pytest_layercheck.suites.builtin import resolve_suite
    from pytest_layercheck.suites.loader import load_suite


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, __all__)
