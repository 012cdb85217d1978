"""lm-eval parity: the test tasks in ``tests/data/lmeval``, lm-eval's own requests and scores for them, and
the checks that layercheck's imported suites render and score the same (the ``lmeval`` extra; the
``lm_eval_dir`` fixture skips without it)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from repo_files import DATA

LMEVAL_TASKS = DATA / "lmeval"
TASKS = {"mc": "capitals_mc.yaml", "gen": "arith_gen.yaml"}
#: The parity tolerance of benchmarks/RESULTS.md (benchmarks/lmeval_parity.py): |log-likelihood difference| < 1e-3.
LL_TOLERANCE = 1e-3


@pytest.fixture
def lm_eval_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """lm-eval offline, in the folder its tasks' relative data_files are resolved against."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(LMEVAL_TASKS)
    yield LMEVAL_TASKS


def lm_eval_task(path: Path | str) -> Any:
    from lm_eval.tasks import TaskManager

    return next(iter(TaskManager(include_defaults=False).load([str(Path(path).resolve())])["tasks"].values()))


def lm_eval_requests(task: Any, chat: Any = None, system_instruction: str | None = None) -> list[list[tuple[str, str]]]:
    """lm-eval's own (context, continuation-or-kwargs) requests per document; ``chat``: the tokenizer whose
    template HFLM.apply_chat_template renders (called on a stand-in for the HFLM object)."""
    from lm_eval.models.huggingface import HFLM

    kwargs: dict[str, Any] = {"system_instruction": system_instruction}
    if chat is not None:
        stand_in = SimpleNamespace(tokenizer=chat["tokenizer"], chat_template_args={})
        kwargs.update(
            apply_chat_template=True,
            fewshot_as_multiturn=chat["multiturn"],
            chat_template=lambda history, add_generation_prompt=True: HFLM.apply_chat_template(
                stand_in, history, add_generation_prompt
            ),
        )
    task.build_all_requests(**kwargs)
    by_doc: dict[int, list[tuple[str, str]]] = {}
    for instance in task.instances:
        by_doc.setdefault(instance.doc_id, []).append(instance.arguments)
    return [by_doc[i] for i in sorted(by_doc)]


def our_requests(suite: Any, tokenizer: Any = None) -> list[list[tuple[str, Any]]]:
    from pytest_layercheck.scoring.rendering import render

    settings = suite.settings(suite.default_protocol)
    if suite.default_protocol == "generate_until":
        return [[(r.prompt, None)] for r in render(suite, suite.default_protocol)]
    return [
        [(r.prompt, settings.target_delimiter + c) for c in r.candidates] for r in render(suite, suite.default_protocol)
    ]


def assert_same_requests(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    for mine, lm_eval in zip(ours, theirs):
        assert [m[0] for m in mine] == [t[0] for t in lm_eval]
        if mine[0][1] is not None:
            assert [m[1] for m in mine] == [t[1] for t in lm_eval]


def lm_eval_samples(loaded: Any, tasks: Sequence[str], **options: Any) -> dict[str, list[dict[str, Any]]]:
    """lm-eval's own run (HFLM on the same model object) with per-document samples."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=8, device="cpu")
    result = lm_eval.simple_evaluate(
        model=lm,
        tasks=[str(Path(t).resolve()) for t in tasks],
        log_samples=True,
        task_manager=TaskManager(include_defaults=False),
        **options,
    )
    return {task: sorted(samples, key=lambda s: s["doc_id"]) for task, samples in result["samples"].items()}


def assert_scored_like_lm_eval(
    suite: Any, samples: list[dict[str, Any]], loaded: Any, profile: Any
) -> dict[str, float]:
    """Per document: the profile's metrics equal lm-eval's; log-likelihoods within LL_TOLERANCE; generations
    identical. Returns the measured differences (for the report)."""
    from pytest_layercheck.scoring.protocols import prepare, score

    evaluation = profile.evaluation(suite.name)
    ours = score(loaded.runtime, prepare(suite, None, loaded.tokenizer))
    assert len(ours.outcomes) == len(samples) == len(evaluation.outcomes[profile.suites[suite.name].primary_metric])
    if suite.default_protocol == "mc_text":
        for metric in ("acc", "acc_norm"):
            assert list(evaluation.outcomes[metric]) == [float(s[metric]) for s in samples], metric
        diff = max(
            float(np.abs(np.array(o.detail["loglikelihoods"]) - np.array([r[0] for r in s["filtered_resps"]])).max())
            for o, s in zip(ours.outcomes, samples)
        )
        assert diff < LL_TOLERANCE
        return {"acc": evaluation.mean("acc"), "max_ll_diff": diff}
    assert [o.detail["generation"] for o in ours.outcomes] == [s["resps"][0][0] for s in samples]
    assert list(evaluation.outcomes["exact_match"]) == [float(s["exact_match"]) for s in samples]
    return {"exact_match": evaluation.mean("exact_match")}


def intact_profile(loaded: Any, suites: Sequence[Any], paths: Sequence[Path], chat_template: Any = None) -> Any:
    from pytest_layercheck.evaluation.profiler import build_profile
    from pytest_layercheck.evaluation.result_cache import ResultCache
    from pytest_layercheck.evaluation.settings import ProfileSettings

    settings = ProfileSettings(
        suites=tuple(str(p) for p in paths), limit=None, sweep_limit=None, chat_template=chat_template
    )
    return build_profile(
        loaded, settings, cache=ResultCache(enabled=False), needs={s.name: frozenset() for s in suites}
    )
