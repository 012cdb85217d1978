"""``layercheck compare-samples``: two lm-eval ``--log_samples`` runs judged like ``layercheck compare`` judges
intact cells; on a tiny model that memorised facts, the same verdict as ``layercheck compare`` on the same items."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from user_shell import quiet_env, sh

from pytest_layercheck.cli import main
from pytest_layercheck.cli.compare_samples import compare_samples, read_samples
from pytest_layercheck.core.errors import BaselineError, ConfigError
from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.data.statistics import exact_mcnemar
from pytest_layercheck.evaluation.comparison import compare_profiles
from pytest_layercheck.evaluation.describe import comparison_to_json

DATE = "2026-01-02T03-04-05.000001"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_samples(
    folder: Path,
    task: str,
    correct: Sequence[float],
    *,
    output_type: str = "multiple_choice",
    date: str = DATE,
    filters: Sequence[str] = ("none",),
    prompt: str = "Q{i}",
    extra: dict[str, Sequence[float]] | None = None,
    model: str | None = None,
) -> Path:
    """A samples file as lm-eval writes it (``save_results_samples``), one record per document and filter."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"samples_{task}_{date}.jsonl"
    metric = {"multiple_choice": "acc", "loglikelihood": "acc", "generate_until": "exact_match"}[output_type]
    lines = []
    for name in filters:
        for i, value in enumerate(correct):
            if output_type == "generate_until":
                arguments = {"gen_args_0": {"arg_0": prompt.format(i=i), "arg_1": {"until": ["\n"]}}}
            elif output_type == "loglikelihood":
                arguments = {"gen_args_0": {"arg_0": prompt.format(i=i), "arg_1": " a"}}
            else:
                arguments = {
                    f"gen_args_{k}": {"arg_0": prompt.format(i=i), "arg_1": f" {c}"} for k, c in enumerate("ab")
                }
            record = {
                "doc_id": i,
                "doc": {"q": i},
                "target": "0",
                "arguments": arguments,
                "resps": [],
                "filtered_resps": [],
                "filter": name,
                "metrics": [metric, *(extra or {})],
                "doc_hash": h(f"doc{i}"),
                "prompt_hash": h(prompt.format(i=i)),
                "target_hash": h("0"),
                metric: value,
                **{k: v[i] for k, v in (extra or {}).items()},
            }
            lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    if model:
        (folder / f"results_{date}.json").write_text(json.dumps({"model_name": model, "config": {"model": "hf"}}))
    return path


def test_a_regression_fails_with_the_paired_test_and_a_harmless_change_passes(tmp_path: Path) -> None:
    base = write_samples(tmp_path / "base", "facts", [1.0] * 40, model="org/base")
    worse = write_samples(tmp_path / "worse", "facts", [1.0] * 25 + [0.0] * 15, model="org/tuned")
    result = compare_samples(read_samples(tmp_path / "base"), read_samples(worse))
    cell = result.comparison.cell("facts", "intact", "acc")  # lm-eval logs 0/1 acc, no p_correct
    assert not result.passed and cell.status == "regressed" and cell.test == "McNemar"
    assert (cell.baseline, cell.current, len(cell.worse_items)) == (1.0, 0.625, 15)
    assert cell.p_value == pytest.approx(exact_mcnemar(15, 0) / 2)  # one-sided, in the direction of the drop
    assert result.base.model["name"] == "org/base" and result.candidate.model["name"] == "org/tuned"
    same = write_samples(tmp_path / "same", "facts", [1.0] * 39 + [0.0])
    fine = compare_samples(read_samples(base), read_samples(same))
    assert fine.passed and fine.candidate.model["name"] == "same"  # without results_*.json: the folder
    # The verdict is compare_profiles' own, on the profiles built from the samples
    direct = compare_profiles(result.base, result.candidate, metrics=["acc"])  # the metric lm-eval logged
    assert [(c.label, c.status, c.p_adjusted) for c in direct.cells] == [
        (c.label, c.status, c.p_adjusted) for c in result.comparison.cells
    ]


def test_several_tasks_metrics_filters_and_loglikelihood_accuracy(tmp_path: Path) -> None:
    write_samples(tmp_path / "a", "mc", [1.0] * 20, extra={"acc_norm": [1.0] * 20, "f1": [0.5] * 20})
    write_samples(tmp_path / "a", "gen", [1.0] * 20, output_type="generate_until", filters=("strict", "flexible"))
    write_samples(tmp_path / "a", "ll", [1.0] * 20, output_type="loglikelihood")
    write_samples(tmp_path / "b", "mc", [1.0] * 20, extra={"acc_norm": [0.0] * 20, "f1": [0.4] * 20})
    write_samples(tmp_path / "b", "gen", [0.0] * 20, output_type="generate_until", filters=("strict", "flexible"))
    write_samples(tmp_path / "b", "ll", [1.0] * 20, output_type="loglikelihood")
    a, b = read_samples(tmp_path / "a"), read_samples(tmp_path / "b")
    result = compare_samples(a, b)
    assert {(c.suite, c.metric, c.protocol) for c in result.comparison.cells} == {
        ("mc", "acc", "mc_text"),
        ("gen", "exact_match", "generate_until"),
        ("ll", "exact_match", "continuation"),
    }
    assert [c.suite for c in result.comparison.failures] == ["gen"]
    assert any("filters ['strict', 'flexible']; compared: 'strict'" in n for n in result.comparison.notes)
    norm = compare_samples(a, b, tasks=["mc"], metrics=["acc_norm", "f1"])
    # A per-document score that is not 0/1 (f1) is compared by ranks (Wilcoxon; effect = median change).
    assert [(c.metric, c.test) for c in norm.comparison.cells] == [("acc_norm", "McNemar"), ("f1", "signed-rank")]
    assert not norm.passed
    f1 = norm.comparison.cell("mc", "intact", "f1")
    assert f1.delta == pytest.approx(-0.1) and f1.status == "regressed"
    # A 0/1 metric logged with other values has no paired test: skipped with a warning.
    write_samples(tmp_path / "c", "half", [1.0] * 20, extra={"acc_norm": [0.5] * 20})
    write_samples(tmp_path / "d", "half", [1.0] * 20, extra={"acc_norm": [1.0] * 20})
    half = compare_samples(read_samples(tmp_path / "c"), read_samples(tmp_path / "d"), metrics=["acc", "acc_norm"])
    assert [c.metric for c in half.comparison.cells] == ["acc"] and half.passed
    assert any("'acc_norm' is not 0/1 per item" in w for w in half.comparison.warnings)
    flexible = compare_samples(
        read_samples(tmp_path / "a", "flexible"), read_samples(tmp_path / "b", "flexible"), tasks=["gen"]
    )
    assert not flexible.passed


def test_runs_that_did_not_score_the_same_documents_are_refused(tmp_path: Path) -> None:
    a = read_samples(write_samples(tmp_path / "a", "facts", [1.0] * 10))
    with pytest.raises(BaselineError, match="10 documents in A, 8 in B .* was --limit different"):
        compare_samples(a, read_samples(write_samples(tmp_path / "b", "facts", [1.0] * 8)))
    other = write_samples(tmp_path / "c", "facts", [1.0] * 10)
    other.write_text(other.read_text().replace(h("doc3"), h("changed")))
    with pytest.raises(BaselineError, match="documents \\[3\\] differ between the runs"):
        compare_samples(a, read_samples(other))
    with pytest.raises(ConfigError, match="share no task"):
        compare_samples(a, read_samples(write_samples(tmp_path / "d", "other", [1.0] * 10)))
    with pytest.raises(ConfigError, match="not in both runs"):
        compare_samples(a, a, tasks=["nope"])
    reworded = write_samples(tmp_path / "e", "facts", [1.0] * 10, prompt="<chat>Q{i}")
    result = compare_samples(a, read_samples(reworded))
    assert any("the prompts of 10 of 10 documents differ" in w for w in result.comparison.warnings)


def test_folders_use_the_newest_run_and_bad_files_are_named(tmp_path: Path) -> None:
    write_samples(tmp_path / "runs", "facts", [0.0] * 10, date="2026-01-01T00-00-00.000000")
    write_samples(tmp_path / "runs", "facts", [1.0] * 10, date="2026-02-01T00-00-00.000000")
    run = read_samples(tmp_path / "runs")
    assert run.tasks["facts"].path.name.startswith("samples_facts_2026-02") and "2 runs of task 'facts'" in run.notes[0]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / f"samples_x_{DATE}.jsonl").write_text('{"doc_id": 0}\n')
    with pytest.raises(ConfigError, match="samples_x_.*:1: not an lm-eval sample record"):
        read_samples(tmp_path / "broken")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no samples_\\*.jsonl files"):
        read_samples(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not found"):
        read_samples(tmp_path / "missing")


@pytest.mark.slow
def test_the_command_as_a_user_runs_it(tmp_path: Path) -> None:
    write_samples(tmp_path / "base", "facts", [1.0] * 40, model="org/base")
    write_samples(tmp_path / "bad", "facts", [1.0] * 20 + [0.0] * 20, model="org/bad")
    write_samples(tmp_path / "fine", "facts", [1.0] * 40, model="org/fine")
    failed = sh(
        "layercheck",
        "compare-samples",
        "base",
        "bad",
        "--json",
        "out.json",
        "--markdown",
        "out.md",
        cwd=tmp_path,
        env=quiet_env(),
    )
    assert failed.returncode == 1, failed.stderr
    assert "layercheck compare: org/bad" in failed.stdout and "FAILED" in failed.stdout
    assert "facts/intact acc dropped 1.000 -> 0.500" in failed.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["passed"] is False and report["comparison"]["cells"][0]["status"] == "regressed"
    assert (tmp_path / "out.md").read_text().startswith("## ❌ layercheck compare: org/bad")
    passed = sh("layercheck", "compare-samples", "base", "fine", "--max-drop", "10%", cwd=tmp_path, env=quiet_env())
    assert passed.returncode == 0 and "passed" in passed.stdout
    refused = sh("layercheck", "compare-samples", "base", "nowhere", cwd=tmp_path, env=quiet_env())
    assert refused.returncode == 2 and "nowhere: not found" in refused.stderr and "Traceback" not in refused.stderr
    usage = sh("layercheck", "compare-samples", "base", cwd=tmp_path, env=quiet_env())
    assert usage.returncode == 2 and "required: candidate" in usage.stderr


# ------------------------------------------------------------------------------- the same verdict as compare
FACTS_TASK = """\
task: tiny_facts
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def lm_eval_run(model: Path, task: Path, out: Path) -> None:
    """``lm_eval --model hf --model_args pretrained=MODEL --tasks TASK --log_samples --output_path OUT``, in-process
    (what lm-eval's CLI does: simple_evaluate, then the tracker writes results_*.json and samples_*.jsonl)."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    tracker = EvaluationTracker(output_path=str(out))
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model},dtype=float32",
        tasks=[str(task)],
        device="cpu",
        batch_size=8,
        log_samples=True,
        evaluation_tracker=tracker,
        task_manager=TaskManager(include_defaults=False),
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for name in results["configs"]:
        tracker.save_results_samples(task_name=name, samples=samples[name])


def intact(report: dict[str, Any]) -> dict[str, Any]:
    cells = report["comparison"]["cells"]
    cell = next(c for c in cells if c["band"] == "intact")
    return {
        k: cell[k]
        for k in ("metric", "baseline", "current", "items", "p_value", "status", "worse_items", "better_items")
    }


def acc_report(report: dict[str, Any]) -> dict[str, Any]:
    """``layercheck compare``'s report judged by ``acc``, the metric lm-eval logs: its cells are judged by
    p_correct, so its own two profiles are compared again, as it compares them, on ``acc``."""
    base, candidate = (DepthProfile.from_json(report["profiles"][side]) for side in ("base", "candidate"))
    return {"comparison": comparison_to_json(compare_profiles(base, candidate, metrics=["acc"]))}


@pytest.mark.slow
def test_compare_samples_gives_the_verdict_of_compare_on_the_same_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lm-eval's own runs of an imported task, on a base, a damaged and a harmlessly changed tiny model: the
    intact cell and the exit status of compare-samples equal those of `layercheck compare` on the suite."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from trained_tiny import fact_suite_items, perturbed, save, train_fact_model

    facts = fact_suite_items(24)
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    (tmp_path / "facts_task.yaml").write_text(FACTS_TASK.format(data=tmp_path / "facts.jsonl"))
    model = train_fact_model(n=24, steps=150)
    models = {
        "base": model,
        "harmful": perturbed(model, [0], scale=3.0),
        "benign": perturbed(model, list(range(6)), scale=0.005),
    }
    for name, weights in models.items():
        save(weights, tmp_path / name)
        lm_eval_run(tmp_path / name, tmp_path / "facts_task.yaml", tmp_path / f"samples-{name}")
    done = sh("layercheck", "suite", "import", "facts_task.yaml", "-o", "facts.yaml", cwd=tmp_path, env=quiet_env())
    assert done.returncode == 0, done.stderr
    for candidate, expected in (("harmful", 1), ("benign", 0)):
        by_compare = main(
            [
                "compare",
                str(tmp_path / "base"),
                str(tmp_path / candidate),
                "--suites",
                str(tmp_path / "facts.yaml"),
                "--mode",
                "bands",
                "--localise",
                "none",
                "--no-weights",
                "--device",
                "cpu",
                "--no-cache",
                "--json",
                str(tmp_path / f"compare-{candidate}.json"),
            ]
        )
        by_samples = sh(
            "layercheck",
            "compare-samples",
            f"samples-{'base'}",
            f"samples-{candidate}",
            "--json",
            f"samples-{candidate}.json",
            cwd=tmp_path,
            env=quiet_env(),
        )
        assert (by_compare, by_samples.returncode) == (expected, expected), by_samples.stdout + by_samples.stderr
        ours = intact(acc_report(json.loads((tmp_path / f"compare-{candidate}.json").read_text())))
        theirs = intact(json.loads((tmp_path / f"samples-{candidate}.json").read_text()))
        ours["worse_items"] = [i["id"].rsplit("-", 1)[-1] for i in ours["worse_items"]]
        theirs["worse_items"] = [i["id"] for i in theirs["worse_items"]]
        ours["better_items"] = [i["id"].rsplit("-", 1)[-1] for i in ours["better_items"]]
        theirs["better_items"] = [i["id"] for i in theirs["better_items"]]
        assert ours == theirs
