"""The session's baseline: where it is, how to record it, and the refusal to record a candidate as its
own baseline (a guard whose baseline is the candidate itself always passes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pytest_layercheck.core.errors import BaselineError, ConfigError
from pytest_layercheck.evaluation.baseline import UPDATE_FLAG, BaselineStore, slugify

if TYPE_CHECKING:
    from pytest_layercheck.data.profile_data import DepthProfile
    from pytest_layercheck.model.loading import LoadedModel
    from pytest_layercheck.pytest_plugin.session_options import SessionOptions


class SessionBaseline:
    """Reads the stored baseline by name and says how to record one, from the trusted model only.

    ``model`` loads (once) the session model, which names the baseline when no name is configured.
    """

    def __init__(self, options: SessionOptions, suites: Sequence[str], model: Callable[[], LoadedModel]) -> None:
        self.options = options
        self.store = BaselineStore(options.baseline_dir)
        self._suites = ",".join(suites)
        self._model = model
        self._confirmed = False

    def name(self, profile: DepthProfile | None) -> str:
        """The configured name, else the profiled (or session) model's."""
        if self.options.baseline_name:
            return self.options.baseline_name
        if profile is not None:
            return str(profile.model["name"])
        return self._model().name

    def load(self, name: str) -> DepthProfile:
        if not self.store.exists(name):
            raise BaselineError(
                f"no baseline {name!r}: {self.store.path_for(name)} does not exist", self.how_to_record(name)
            )
        return self.store.load(name)

    def how_to_record(self, name: str) -> str:
        """Advice that records the baseline from the trusted model, never silently from a candidate."""
        path = self.store.path_for(name)
        if self.options.reference:
            return (
                f"record it from the reference model: `layercheck baseline {self.options.reference} "
                f"--name {name} --suites {self._suites}`, review it, and commit {path}"
            )
        if self.candidate_reason(name):
            return (
                f"this run tests {self._model().name!r}, not the model {name!r} names; record the baseline "
                f"from the model you trust: `layercheck baseline MODEL --name {name} --suites {self._suites}`, "
                f"and commit {path}"
            )
        return f"record it with `pytest {UPDATE_FLAG}` (or `layercheck baseline`), review it, and commit {path}"

    def candidate_reason(self, name: str) -> str | None:
        """Why the session model looks like a candidate rather than the baseline's model, if it does."""
        if self.options.reference:
            return f"a reference model is configured ({self.options.reference}), so the session model is a candidate"
        model = self._model()
        if slugify(model.name) != slugify(name):
            return f"the session model {model.name!r} is not the model the baseline {name!r} is named after"
        if self.store.exists(name):
            try:
                stored = self.store.load(name).model.get("fingerprint")
            except BaselineError:
                return None
            if stored != model.fingerprint:
                return (
                    f"the stored baseline {name!r} was recorded from other weights "
                    f"(fingerprint {str(stored)[:16]}, this model {model.fingerprint[:16]})"
                )
        return None

    def confirm_update(self, name: str) -> None:
        """Refuse to record a candidate as its own baseline unless the user confirmed it by flag."""
        if self._confirmed:
            return
        reason = self.candidate_reason(name)
        if reason and not self.options.allow_model_change:
            raise ConfigError(
                f"refusing to record the baseline {name!r} from this run: {reason}; "
                "a guard whose baseline is the candidate itself always passes",
                "record the baseline from the trusted model (`layercheck baseline MODEL`), or confirm with "
                "--layercheck-allow-model-change that this model is to become the baseline",
            )
        self._confirmed = True
