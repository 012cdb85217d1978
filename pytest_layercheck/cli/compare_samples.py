"""``layercheck compare-samples A B``: a paired comparison of two lm-eval ``--log_samples`` runs.

A and B are the outputs of ``lm_eval ... --log_samples --output_path DIR`` for the same task(s) and two
models (A the base, B the candidate): a ``samples_<task>_<date>.jsonl`` file, or a folder holding such
files (the newest per task is used). Documents are paired by ``doc_id`` and must be the same documents
(``doc_hash`` and ``target_hash``); prompts that differ (another chat template or few-shot setting) are
reported. Each task becomes the intact cell of a profile and the pair is judged exactly as
``layercheck compare`` judges its intact cells (:func:`pytest_layercheck.evaluation.comparison.compare_profiles`:
paired exact McNemar test per cell, Holm over the cells, tolerance and effect floor), with the same
terminal, JSON and markdown reports. There are no layer sweeps, weight deltas or localisation: lm-eval
ran the models, this command only reads what it logged.

Metrics: a task is judged by ``acc`` if lm-eval logged it, else ``exact_match`` (``--metrics`` picks
others: 0/1 metrics get the exact McNemar test, other numbers the Wilcoxon signed-rank test, and a metric
that is not a number per document is skipped with a warning). For ``loglikelihood`` tasks lm-eval's ``acc`` means "the target is the greedy continuation",
which layercheck's ``continuation`` protocol calls ``exact_match``, and it is reported under that name.

Exit status: 0 no cell regressed, 1 a cell regressed, 2 unreadable or mismatched inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_layercheck.cli.common import add_output_arguments, add_subcommand, console, write_outputs
from pytest_layercheck.cli.profile import add_verdict_arguments, verdict_from
from pytest_layercheck.core.errors import BaselineError, ConfigError

if TYPE_CHECKING:
    from pytest_layercheck.analysis.compare.models import ModelComparison
    from pytest_layercheck.data.profile_data import DepthProfile
    from pytest_layercheck.evaluation.comparison import Verdict
    from pytest_layercheck.evaluation.comparison_result import ProfileComparison

#: lm-eval metrics per protocol label, in the order a task is judged by them by default.
_PRIMARY = ("acc", "exact_match")


@dataclass
class TaskSamples:
    """One task's logged documents of one run: per doc id, the metric values and hashes."""

    task: str
    path: Path
    output_type: str
    filter: str
    filters: tuple[str, ...]
    docs: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        first = next(iter(self.docs.values()), {})
        return list(first.get("metrics_values", {}))


@dataclass
class SamplesRun:
    """What one ``--log_samples`` output holds: the model's name and each task's documents."""

    source: Path
    model: dict[str, Any]
    tasks: dict[str, TaskSamples]
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ reading
def _task_of(path: Path) -> tuple[str, str]:
    """``samples_<task>_<date>.jsonl`` -> (task, date), as lm-eval's own get_file_task_name does."""
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    body = stem[len("samples_") :] if stem.startswith("samples_") else stem
    task, sep, date = body.rpartition("_")
    return (task, date) if sep and task else (body, "")


def _output_type(arguments: Any) -> str:
    """From the logged request arguments: several (context, continuation) pairs, generation kwargs, or one pair."""
    if isinstance(arguments, Mapping):
        args = [list(v.values()) if isinstance(v, Mapping) else v for v in arguments.values()]
    else:
        args = list(arguments or [])
    if args and len(args[0]) > 1 and isinstance(args[0][1], Mapping):
        return "generate_until"
    return "multiple_choice" if len(args) > 1 else "loglikelihood"


def read_task_samples(path: Path, filter_name: str | None = None) -> TaskSamples:
    """One ``samples_*.jsonl`` file; with several filters (``strict-match``, ``flexible-extract``) the
    named one, else the first logged (a task that logged a single filter keeps it)."""
    task, _ = _task_of(path)
    by_filter: dict[str, dict[int, dict[str, Any]]] = {}
    output_type = ""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read lm-eval samples: {exc}",
            "pass a samples_*.jsonl file written by lm-eval --log_samples",
        ) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
            doc_id = int(sample["doc_id"])
            names = list(sample["metrics"])
            values = {name: sample[name] for name in names if name in sample}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path}:{number}: not an lm-eval sample record ({type(exc).__name__}: {exc})",
                "pass the samples_*.jsonl files lm-eval writes with --log_samples",
            ) from None
        output_type = output_type or _output_type(sample.get("arguments"))
        docs = by_filter.setdefault(str(sample.get("filter", "none")), {})
        if doc_id in docs:
            raise ConfigError(
                f"{path}:{number}: document {doc_id} is logged twice for filter {sample.get('filter')!r}",
                "the file holds two runs appended; pass the file of one run",
            )
        docs[doc_id] = {
            "metrics_values": values,
            "doc_hash": sample.get("doc_hash"),
            "target_hash": sample.get("target_hash"),
            "prompt_hash": sample.get("prompt_hash"),
        }
    if not by_filter:
        raise ConfigError(f"{path}: no samples", "pass a samples_*.jsonl file written by lm-eval --log_samples")
    filters = tuple(by_filter)
    # A named filter applies to the tasks that logged it; a task with one filter keeps it
    chosen = filter_name if filter_name in by_filter else filters[0]
    if filter_name is not None and chosen != filter_name and len(filters) > 1:
        raise ConfigError(
            f"{path}: no samples for filter {chosen!r}", f"use --filter with one of: {', '.join(filters)}"
        )
    return TaskSamples(task, path, output_type, chosen, filters, by_filter[chosen])


def _results(folder: Path) -> dict[str, Any]:
    """The newest ``results_*.json`` beside the samples (model name, dtype, device, versions), or ``{}``."""
    for path in sorted(folder.glob("results_*.json"), reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return {}


def _model(results: Mapping[str, Any], fallback: str) -> dict[str, Any]:
    """What the profile records of the model: lm-eval's name for it, dtype and device when lm-eval logged them."""
    logged = results.get("config")
    config: Mapping[str, Any] = logged if isinstance(logged, Mapping) else {}
    args = config.get("model_args")
    pretrained = (
        args.get("pretrained")
        if isinstance(args, Mapping)
        else (str(args).split("pretrained=", 1)[1].split(",", 1)[0] if args and "pretrained=" in str(args) else None)
    )
    model: dict[str, Any] = {
        "name": str(results.get("model_name") or pretrained or fallback),
        "kind": "lm-eval samples",
    }
    if config.get("model_dtype"):
        model["dtype"] = str(config["model_dtype"]).removeprefix("torch.")
    if config.get("device"):
        model["device"] = str(config["device"])
    if config.get("model_sha"):
        model["fingerprint"] = str(config["model_sha"])
    return model


def read_samples(source: Path, filter_name: str | None = None) -> SamplesRun:
    """A samples file, or a folder (searched recursively) holding lm-eval's ``samples_*.jsonl`` files."""
    source = Path(source)
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(source.rglob("samples_*.jsonl"))
        if not files:
            raise ConfigError(
                f"{source}: no samples_*.jsonl files in it",
                "run lm-eval with --log_samples --output_path DIR and pass DIR (or one samples file)",
            )
    else:
        raise ConfigError(f"{source}: not found", "pass a samples_*.jsonl file or the --output_path folder of lm-eval")
    runs: dict[str, list[tuple[str, Path]]] = {}
    for path in files:
        task, date = _task_of(path)
        runs.setdefault(task, []).append((date, path))
    newest = {task: max(found)[1] for task, found in runs.items()}
    notes = [
        f"{source}: {len(found)} runs of task {task!r}; using the newest, {newest[task].name}"
        for task, found in runs.items()
        if len(found) > 1
    ]
    tasks = {task: read_task_samples(path, filter_name) for task, path in sorted(newest.items())}
    folder = files[0].parent
    results = _results(folder)
    model = _model(results, folder.name)  # lm-eval names the folder after the model
    return SamplesRun(source, {**model, "source": str(source)}, tasks, notes, results)


# ------------------------------------------------------------------------------------------ profiles
def _protocol(output_type: str) -> str:
    return {"multiple_choice": "mc_text", "generate_until": "generate_until", "loglikelihood": "continuation"}.get(
        output_type, "generate_until"
    )


def _metric_names(samples: TaskSamples) -> dict[str, str]:
    """lm-eval metric -> the name it is reported under (loglikelihood ``acc`` is ``exact_match``)."""
    rename = {"acc": "exact_match"} if samples.output_type == "loglikelihood" else {}
    return {m: rename.get(m, m) for m in samples.metrics}


def _judged(samples: TaskSamples, wanted: Sequence[str] | None) -> list[str]:
    names = _metric_names(samples)
    reported = list(names.values())
    if wanted:
        missing = [m for m in wanted if m not in reported]
        if len(missing) == len(wanted):
            raise ConfigError(
                f"task {samples.task!r} logged none of the metrics {list(wanted)} (it has {reported})",
                "pick metrics the task logs with --metrics",
            )
        return [m for m in wanted if m in reported]
    for metric in _PRIMARY:
        if metric in reported:
            return [metric]
    raise ConfigError(
        f"task {samples.task!r} logged neither acc nor exact_match (it has {reported})",
        "pick a 0/1 metric with --metrics",
    )


def _value(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    if isinstance(value, list) and len(value) == 1:
        return _value(value[0])
    return float("nan")


def samples_profile(run: SamplesRun, tasks: Sequence[str]) -> DepthProfile:
    """The intact cells of each task as a profile (``compare_profiles`` judges it like any other)."""
    from pytest_layercheck.data.profile_data import INTACT, DepthProfile, Evaluation, SuiteInfo

    suites, evaluations = {}, {}
    for name in tasks:
        samples = run.tasks[name]
        ids = sorted(samples.docs)
        digest = hashlib.sha256()
        for doc_id in ids:
            doc = samples.docs[doc_id]
            digest.update(f"{doc_id}\0{doc['doc_hash']}\0{doc['target_hash']}\n".encode())
        protocol = _protocol(samples.output_type)
        suites[name] = SuiteInfo(name, name, "sha256:" + digest.hexdigest(), protocol, tuple(str(i) for i in ids))
        outcomes = {
            reported: tuple(_value(samples.docs[i]["metrics_values"].get(metric)) for i in ids)
            for metric, reported in _metric_names(samples).items()
        }
        evaluations[(name, protocol, INTACT)] = Evaluation(name, protocol, INTACT, (), outcomes)
    versions = {k: run.results[f"{k}_version"] for k in ("transformers", "lm_eval") if run.results.get(f"{k}_version")}
    return DepthProfile(
        model=dict(run.model),
        environment={"versions": versions},
        settings={"mode": "lm-eval samples"},
        suites=suites,
        bands={},
        evaluations=evaluations,
    )


def _prompt_notes(base: SamplesRun, candidate: SamplesRun, tasks: Sequence[str]) -> list[str]:
    notes = []
    for name in tasks:
        a, b = base.tasks[name].docs, candidate.tasks[name].docs
        differ = [i for i in a if i in b and a[i]["prompt_hash"] != b[i]["prompt_hash"]]
        if differ:
            notes.append(
                f"task {name!r}: the prompts of {len(differ)} of {len(a)} documents differ between the runs "
                "(another chat template, system instruction or few-shot setting?), so the verdict mixes the "
                "prompt change with the model change"
            )
    return notes


def _check_pairing(base: SamplesRun, candidate: SamplesRun, tasks: Sequence[str]) -> None:
    problems = []
    for name in tasks:
        a, b = base.tasks[name], candidate.tasks[name]
        if set(a.docs) != set(b.docs):
            only_a, only_b = sorted(set(a.docs) - set(b.docs)), sorted(set(b.docs) - set(a.docs))
            problems.append(
                f"task {name!r}: {len(a.docs)} documents in A, {len(b.docs)} in B "
                f"(only in A: {only_a[:3]}, only in B: {only_b[:3]}); was --limit different?"
            )
            continue
        changed = [
            i
            for i in a.docs
            if (a.docs[i]["doc_hash"], a.docs[i]["target_hash"]) != (b.docs[i]["doc_hash"], b.docs[i]["target_hash"])
        ]
        if changed:
            problems.append(
                f"task {name!r}: documents {changed[:3]} differ between the runs (doc_hash/target_hash); "
                "the task's data or version changed"
            )
        if a.filter != b.filter:
            problems.append(f"task {name!r}: filter {a.filter!r} in A, {b.filter!r} in B")
    if problems:
        raise BaselineError(
            "the two runs did not score the same documents, so they cannot be paired:\n"
            + "\n".join(f"  - {p}" for p in problems),
            "run lm-eval on both models with the same tasks, task versions and --limit",
        )


def _shared_tasks(base: SamplesRun, candidate: SamplesRun, tasks: Sequence[str] | None) -> list[str]:
    """The tasks to compare: those named (each must be in both runs), else every task both runs logged."""
    shared = [t for t in base.tasks if t in candidate.tasks]
    if tasks:
        unknown = [t for t in tasks if t not in shared]
        if unknown:
            raise ConfigError(
                f"task(s) {unknown} are not in both runs (shared: {shared or 'none'})",
                "name tasks both runs logged with --tasks",
            )
        shared = list(tasks)
    if not shared:
        raise ConfigError(
            f"the runs share no task (A: {sorted(base.tasks)}, B: {sorted(candidate.tasks)})",
            "compare runs of the same task(s)",
        )
    return shared


def _annotate(comparison: ProfileComparison, base: SamplesRun, candidate: SamplesRun, shared: Sequence[str]) -> None:
    """Warn of tasks one run logged alone and of prompts that differ; note each run's notes and filters."""
    only = sorted(set(base.tasks) ^ set(candidate.tasks))
    if only:
        comparison.warnings.append(f"tasks logged by one run only (not compared): {', '.join(only)}")
    comparison.warnings.extend(_prompt_notes(base, candidate, shared))
    for run in (base, candidate):
        comparison.notes.extend(run.notes)
        for name in shared:
            samples = run.tasks[name]
            if len(samples.filters) > 1:
                comparison.notes.append(
                    f"{run.source}: task {name!r} has filters {list(samples.filters)}; "
                    f"compared: {samples.filter!r} (choose with --filter)"
                )


def compare_samples(
    base: SamplesRun,
    candidate: SamplesRun,
    *,
    tasks: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    verdict: Verdict | None = None,
) -> ModelComparison:
    """Judge ``candidate`` against ``base`` task by task, as ``layercheck compare`` judges intact cells
    (``verdict``: tolerance, alpha, correction and the rest; default: the defaults of ``layercheck compare``)."""
    from pytest_layercheck.analysis.compare.models import CompareSettings, ModelComparison
    from pytest_layercheck.evaluation.comparison import Verdict, compare_profiles, sensitivity_warning
    from pytest_layercheck.evaluation.settings import ProfileSettings

    verdict = verdict or Verdict()
    shared = _shared_tasks(base, candidate, tasks)
    _check_pairing(base, candidate, shared)
    started = time.perf_counter()
    base_profile, cand_profile = samples_profile(base, shared), samples_profile(candidate, shared)
    judged = {t: _judged(candidate.tasks[t], metrics) for t in shared}
    comparison = compare_profiles(
        base_profile,
        cand_profile,
        tolerance=verdict.tolerance,
        alpha=verdict.alpha,
        metrics=judged,
        **verdict.options(),
    )
    sensitivity_warning(comparison, strict=verdict.strict_power)  # strict: an underpowered cell is an error
    _annotate(comparison, base, candidate, shared)
    settings = CompareSettings(
        profile=ProfileSettings(suites=tuple(shared), limit=None, sweep_limit=None),
        tolerance=verdict.tolerance,
        alpha=verdict.alpha,
        localise="none",
        weights=False,
    )
    return ModelComparison(
        base_profile,
        cand_profile,
        comparison,
        None,
        None,
        settings,
        {"compare": round(time.perf_counter() - started, 2)},
    )


# ------------------------------------------------------------------------------------------ command
def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(
        subparsers,
        "compare-samples",
        help="paired comparison of two lm-eval --log_samples runs (base A, candidate B)",
        description="Pair the documents two lm-eval --log_samples runs scored (the same task, two models) and judge "
        "B against A with the paired exact McNemar test, as `layercheck compare` judges its intact cells.",
        handler=run_compare_samples,
    )
    parser.add_argument("base", help="samples_<task>_<date>.jsonl of the base model, or the --output_path folder")
    parser.add_argument("candidate", help="the same for the candidate model")
    parser.add_argument("--tasks", default="", help="comma-separated tasks to compare (default: every shared task)")
    parser.add_argument("--metrics", default="", help="metrics to judge (default: acc, else exact_match)")
    parser.add_argument("--filter", default=None, help="lm-eval filter to compare when a task logged several")
    add_verdict_arguments(parser)
    add_output_arguments(parser, "the comparison", summary=True)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run_compare_samples(args: argparse.Namespace) -> int:
    from pytest_layercheck.analysis.compare.render import render_compare_markdown, render_compare_terminal
    from pytest_layercheck.report.format import json_text

    verdict = verdict_from(args)
    base, candidate = read_samples(Path(args.base), args.filter), read_samples(Path(args.candidate), args.filter)
    result = compare_samples(base, candidate, tasks=_names(args.tasks), metrics=_names(args.metrics), verdict=verdict)
    console.print(render_compare_terminal(result, width=console.width), highlight=False)
    write_outputs(args, lambda: json_text(result.to_dict()), lambda: render_compare_markdown(result))
    return 0 if result.passed else 1
