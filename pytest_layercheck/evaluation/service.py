"""The evaluation service: one suite scored intact and under ablations, through the on-disk result
cache, with the cache key every caller shares. Profiles, head importance, localisation and the other
analyses all evaluate through here, so they reuse one another's cached entries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from pytest_layercheck.data.profile_data import INTACT, Evaluation, SuiteInfo
from pytest_layercheck.data.records import MAX_ANSWER_CHARS
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.devices import dtype_name
from pytest_layercheck.model.loading import LoadedModel
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.protocols import PreparedSuite, prepare, score, score_sweep
from pytest_layercheck.scoring.results import ProtocolResult
from pytest_layercheck.suites.protocols import get_protocol
from pytest_layercheck.suites.schema import Suite

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def evaluate_ablations(
    runtime: ModelRuntime,
    tokenizer: PreTrainedTokenizerBase,
    suite: Suite,
    info: SuiteInfo,
    ablations: Sequence[Ablation],
    *,
    cache: ResultCache | None = None,
    identity: Callable[[str], dict[str, object]] | None = None,
    donor: Any = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    prepared: Callable[[], PreparedSuite] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Evaluation]:
    """Evaluations of ``suite`` intact and under each ablation, in that order.

    With a ``cache`` and an ``identity(ablation key)``, stored evaluations are reused and only the
    missing ones are computed, in one activation-reusing sweep (:func:`score_sweep`; ``donor`` for
    layer swaps); the suite is tokenised only if something must be computed (``prepared`` supplies a
    caller's tokenised suite instead). ``progress(done, total)`` counts evaluations.
    """
    keys = [INTACT, *(a.key for a in ablations)]
    total = len(keys)
    choices = choice_counts(suite, info)
    found: dict[str, Evaluation | None] = {
        k: cache.get(identity(k), choices=choices if k == INTACT else None)
        if cache is not None and identity is not None
        else None
        for k in keys
    }
    missing = [a for a in ablations if found[a.key] is None]
    if found[INTACT] is None or missing:
        tokenised = (
            prepared() if prepared is not None else prepare(suite, info.protocol, tokenizer, max_length=max_length)
        )
        cached = total - len(missing) - (found[INTACT] is None)

        def on_step(step: int, steps: int) -> None:
            if progress:
                progress(cached + step * (total - cached) // steps, total)

        intact, results = score_sweep(runtime, tokenised, missing, donor=donor, batch_size=batch_size, on_step=on_step)
        for ablation, result in [(Ablation(), intact), *zip(missing, results)]:
            key = ablation.key if not ablation.is_intact else INTACT
            if found[key] is None:
                evaluation = to_evaluation(result, info, key, ablation.skip)
                found[key] = evaluation
                if cache is not None and identity is not None:
                    cache.put(identity(key), evaluation)
    if progress:
        progress(total, total)
    evaluations: list[Evaluation] = []
    for key in keys:
        found_evaluation = found[key]
        assert found_evaluation is not None, f"no evaluation of {key}: neither cached nor computed"
        evaluations.append(found_evaluation)
    return evaluations


def to_evaluation(result: ProtocolResult, info: SuiteInfo, key: str, removed: Sequence[int]) -> Evaluation:
    """Per-item outcomes, re-ordered to the suite's item order (the scorer may batch by length)."""
    by_id = {o.item_id: o for o in result.outcomes}
    metrics = result.metrics
    ids = info.item_ids
    return Evaluation(
        suite=info.name,
        protocol=info.protocol,
        ablation=key,
        removed_layers=tuple(removed),
        outcomes={m: tuple(float(by_id[i].scores[m]) for i in ids) for m in metrics},
        answers=answers_of(result, info, ids) if key == INTACT else None,
    )


def answers_of(result: ProtocolResult, info: SuiteInfo, ids: Sequence[str]) -> tuple[int | str, ...] | None:
    """What the model answered per item of ``ids`` (:attr:`Evaluation.answers`): the chosen choice's index
    under the protocol's primary metric (``acc``: raw log-likelihood, ``acc_norm``: normalised), or the
    generated answer text; None for continuation protocols, which choose nothing."""
    protocol = get_protocol(info.protocol)
    by_id = {o.item_id: o for o in result.outcomes}
    if protocol.multiple_choice:
        field = "prediction_norm" if protocol.primary_metric == "acc_norm" else "prediction"
        return tuple(int(by_id[i].detail[field]) for i in ids)
    if protocol.generates:
        answers: list[int | str] = []
        for i in ids:
            details = by_id[i].detail
            answer = details.get("answer")
            text = answer if isinstance(answer, str) else str(details.get("generation", "")).strip()
            answers.append(text[:MAX_ANSWER_CHARS])
        return tuple(answers)
    return None


def choice_counts(suite: Suite, info: SuiteInfo) -> tuple[int, ...] | None:
    """How many choices each item of the intact evaluation has, for checking cached answers; None for
    protocols that choose no choice."""
    if not get_protocol(info.protocol).multiple_choice:
        return None
    by_id = {item.id: len(item.choices) for item in suite.items}
    return tuple(by_id.get(i, 0) for i in info.item_ids)


def cache_identity(loaded: LoadedModel, info: SuiteInfo, ablation_key: str, seed: int) -> dict[str, object]:
    """What a cached evaluation depends on; the same fields for every analysis, so they share entries.

    Weights and config (fingerprint), tokenizer, chat template, generation config, suite content (with
    its protocol settings), protocol, ablation, the items scored, dtype, device type, seed, library
    versions and the hash of the scoring code. The entry stores this and it is compared on read.
    """
    import tokenizers
    import transformers

    from pytest_layercheck.core.version import __version__
    from pytest_layercheck.model.fingerprint import chat_template_digest, code_fingerprint

    return {
        "fingerprint": loaded.fingerprint,
        "tokenizer": loaded.tokenizer_fingerprint,
        "chat_template": chat_template_digest(loaded.tokenizer),
        "generation_config": loaded.generation_fingerprint,
        "suite_hash": info.content_hash,
        "protocol": info.protocol,
        "ablation": ablation_key,
        "items": list(info.ids_for(ablation_key)),
        "dtype": dtype_name(loaded.dtype),
        "device": loaded.device.type,
        "seed": seed,
        "versions": {
            "pytest_layercheck": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "scoring_code": code_fingerprint(),
    }


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded, deterministic kernels for the duration of a profile; the caller's state is restored."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def score_suite(
    loaded: LoadedModel,
    suite: Suite,
    protocol: str | None = None,
    ablation: Ablation | None = None,
    limit: int | None = None,
) -> ProtocolResult:
    """Score one suite once, optionally under an ablation: the building block for ad-hoc tests."""
    limited = suite.limited(limit)
    prepared = prepare(limited, protocol or suite.default_protocol, loaded.tokenizer)
    with ablate(loaded.model, ablation or Ablation()):
        return score(loaded.runtime, prepared)
