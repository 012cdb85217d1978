"""``layercheck suite import``: records, datasets on disk and lm-eval tasks become suite YAML, and lm-eval tasks
score the same as under lm-eval itself.

The lm-eval tests use the two tasks in ``tests/data/lmeval`` (a multiple-choice and a generate-until task over
local JSON Lines files, two few-shot examples each). They skip cleanly without lm-eval (the ``lmeval`` extra).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from lm_eval_parity import (
    LMEVAL_TASKS,
    TASKS,
    assert_same_requests,
    assert_scored_like_lm_eval,
    intact_profile,
    lm_eval_requests,
    lm_eval_samples,
    lm_eval_task,
    our_requests,
)
from user_shell import quiet_env, sh

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.suites.importers import (
    ImportOptions,
    import_records,
    import_source,
    load_records_suite,
    write_suite,
)
from pytest_layercheck.suites.loader import load_suite


def write_jsonl(path: Path, records: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ------------------------------------------------------------------------------------------ records
def test_prompt_answer_pairs_become_a_continuation_suite(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "evals.jsonl",
        [
            {"prompt": "Q: 2 + 2 =", "answer": 4, "topic": "math"},
            {"prompt": "Q: capital of France?", "answer": "Paris", "topic": "geo"},
        ],
    )
    imported = import_records(
        source, "context=prompt,target=answer,domain=topic", ImportOptions(capability="my-label", name="my-evals")
    )
    suite = imported.suite
    assert (suite.name, suite.capability, suite.default_protocol) == ("my-evals", "my-label", "continuation")
    assert sorted(suite.protocols) == ["continuation", "generate_until"]
    assert [(i.id, i.domain, i.context, i.target) for i in suite.items] == [
        ("my-evals-00001", "math", "Q: 2 + 2 =", "4"),
        ("my-evals-00002", "geo", "Q: capital of France?", "Paris"),
    ]
    text = imported.text
    assert "target: '4'" in text  # numbers are written as quoted text
    assert f"# Content hash: {suite.content_hash}" in text and "evals.jsonl (jsonl)" in text
    assert "source_line: 2" in text
    written = write_suite(imported, tmp_path / "my-evals.yaml")
    assert written == "written" and load_suite(tmp_path / "my-evals.yaml").content_hash == suite.content_hash


def test_multiple_choice_records_with_every_gold_form_dotted_paths_and_joined_fields(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "mcq.jsonl",
        [
            {"q": {"text": "Sky colour?"}, "opts": ["red", "blue"], "label": 1, "uid": "q/1"},
            {"q": {"text": "Grass colour?"}, "opts": ["green", "pink"], "label": "A", "uid": "q 2"},
            {"q": {"text": "Snow colour?"}, "opts": ["white", "black"], "label": "white", "uid": 3},
        ],
    )
    suite = import_records(source, "context=q.text,choices=opts,gold=label,id=uid").suite
    assert [(i.id, i.gold) for i in suite.items] == [("q/1", 1), ("q-2", 0), ("3", 0)]
    assert suite.default_protocol == "mc_text" and {"mc_text", "mc_letters", "continuation"} <= set(suite.protocols)
    assert "{choices_block}" in suite.protocols["mc_letters"].template
    joined = write_jsonl(tmp_path / "cols.jsonl", [{"question": "Pick b", "a": "a", "b": "b", "c": "c", "ans": 1}])
    item = import_records(joined, "context=question,choices=a|b|c,gold=ans").suite.items[0]
    assert item.choices == ("a", "b", "c") and item.gold == 1


def test_csv_json_lists_and_json_objects_of_splits(tmp_path: Path) -> None:
    with (tmp_path / "data.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["prompt", "answer"])
        writer.writeheader()
        writer.writerow({"prompt": "One plus one is", "answer": "two"})
    assert import_records(tmp_path / "data.csv", "context=prompt,target=answer").suite.items[0].target == "two"
    (tmp_path / "list.json").write_text(json.dumps([{"context": "Hello", "target": "world"}]))
    assert import_source(str(tmp_path / "list.json")).suite.items[0].target == "world"
    (tmp_path / "splits.json").write_text(
        json.dumps({"train": [{"context": "a", "target": "b"}], "test": [{"context": "c", "target": "d"}]})
    )
    with pytest.raises(SuiteFormatError, match="pick the list with --split \\(train, test\\)"):
        import_source(str(tmp_path / "splits.json"))
    assert (
        import_source(str(tmp_path / "splits.json"), options=ImportOptions(split="test")).suite.items[0].context == "c"
    )


def test_few_shot_records_templates_and_a_jsonl_file_used_directly(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "facts.jsonl", [{"context": f"Fact {i} is", "target": f"value {i}", "id": f"f{i}"} for i in range(4)]
    )
    imported = import_records(source, None, ImportOptions(num_fewshot=1, template="Complete: {context}", limit=2))
    suite = imported.suite
    assert [s.context for s in suite.fewshot] == ["Fact 0 is"] and [i.id for i in suite.items] == ["f1", "f2"]
    assert suite.protocols["continuation"].template == "Complete: {context}"
    direct = load_records_suite(source)
    assert (direct.name, direct.capability, len(direct.items)) == ("facts", "facts", 4)


def test_answers_with_a_stop_string_leave_generate_until_out(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "poems.jsonl", [{"context": "Write two lines", "target": "Roses\nViolets"}])
    imported = import_records(source)
    assert "generate_until" not in imported.suite.protocols
    assert any("generate_until not declared" in w for w in imported.warnings)
    with pytest.raises(SuiteFormatError, match="protocol 'generate_until' cannot score these items"):
        import_records(source, None, ImportOptions(protocol="generate_until"))
    assert "generate_until" in import_records(source, None, ImportOptions(until=("###",))).suite.protocols


@pytest.mark.parametrize(
    ("records", "fmap", "message"),
    [
        (
            [{"question": "x", "answer": "y"}],
            "",
            "evals.jsonl:1: no field 'context' for the context \\(the record has: answer, question\\)",
        ),
        ([{"context": "x", "target": "y"}, {"context": "z"}], "", "evals.jsonl:2: no answer"),
        ([{"context": "x", "choices": ["a", "b"], "gold": 5}], "", "evals.jsonl:1: gold 5 is outside the 2 choices"),
        ([{"context": "x", "choices": ["a", "b"], "gold": "zz"}], "", "gold 'zz' is not an index, a letter"),
        ([{"context": "x", "choices": ["a", "b"]}], "", "has choices but no field 'gold'"),
        (
            [{"context": "x", "target": "y", "id": "a"}, {"context": "z", "target": "w", "id": "a"}],
            "",
            "evals.jsonl:2: id 'a' repeats the id of .*evals.jsonl:1",
        ),
        (
            [{"context": "x", "target": "y"}, {"context": "z", "choices": ["a", "b"], "gold": 0}],
            "",
            "mix multiple-choice items .* and free-answer items",
        ),
        ([{"context": {"nested": 1}, "target": "y"}], "", "context \\('context'\\) is an object, expected text"),
        ([{"context": "  ", "target": "y"}], "", "is empty"),
        ([["not", "an", "object"]], "", "a record is a list, expected an object"),
        ([{"context": "x", "target": "y"}], "context=", "cannot read field map entry 'context='"),
        ([{"context": "x", "target": "y"}], "answer=y", "unknown suite field 'answer'"),
    ],
)
def test_bad_records_name_the_line_and_the_fix(tmp_path: Path, records: list, fmap: str, message: str) -> None:
    source = write_jsonl(tmp_path / "evals.jsonl", records)
    with pytest.raises(SuiteFormatError, match=message) as info:
        import_records(source, fmap)
    assert info.value.fix


def test_malformed_files_are_reported_with_their_line(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"context": "a", "target": "b"}\n{oops\n')
    with pytest.raises(SuiteFormatError, match="bad.jsonl:2: not a JSON object"):
        import_records(tmp_path / "bad.jsonl")
    with pytest.raises(SuiteFormatError, match="missing.jsonl: file not found"):
        import_records(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SuiteFormatError, match="no records"):
        import_records(tmp_path / "empty.jsonl")
    with pytest.raises(SuiteFormatError, match="cannot tell the format"):
        import_source(str(tmp_path / "data.txt"))


def test_an_existing_file_is_only_replaced_when_forced(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "evals.jsonl", [{"context": "a", "target": "b"}])
    out = tmp_path / "evals.yaml"
    assert write_suite(import_records(source), out) == "written"
    assert write_suite(import_records(source), out) == "unchanged"
    write_jsonl(source, [{"context": "a", "target": "c"}])
    changed = import_records(source)
    with pytest.raises(SuiteFormatError, match="exists and differs from this import \\(content hash sha256:"):
        write_suite(changed, out)
    assert write_suite(changed, out, force=True) == "replaced"
    assert load_suite(out).items[0].target == "c"


def test_any_capability_label_is_allowed_but_near_misses_of_the_built_ins_are_typos(tmp_path: Path) -> None:
    from pytest_layercheck.suites.loader import load_suite_text

    document = (
        "name: s\ncapability: {label}\ndescription: d\ndefault_protocol: continuation\n"
        "protocols: {{continuation: null}}\nitems:\n- {{id: a, domain: d, kind: k, context: c, target: t}}\n"
    )
    for label in ("safety", "my-label", "reasoning2", "retrieval-long", "knowledge"):
        assert load_suite_text(document.format(label=label)).capability == label
    with pytest.raises(SuiteFormatError, match="did you mean 'knowledge'"):
        load_suite_text(document.format(label="knowlege"))
    with pytest.raises(SuiteFormatError, match="use letters, digits"):
        load_suite_text(document.format(label="'two words'"))


# ------------------------------------------------------------------------------------------ datasets
def test_datasets_on_disk_saved_folders_and_parquet_files(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {
        "question": ["Sky?", "Grass?", "Snow?"],
        "options": [["red", "blue"], ["green", "pink"], ["white", "tar"]],
        "label": [1, 0, 0],
    }
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "saved"))
    imported = import_source(str(tmp_path / "saved"), fmap="context=question,choices=options,gold=label")
    assert [i.gold for i in imported.suite.items] == [1, 0, 0] and imported.suite.name == "saved"
    assert imported.document["metadata"]["imported_from"]["split"] == "test"
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "rows.parquet"))
    imported = import_source(
        str(tmp_path / "rows.parquet"),
        fmap="context=question,choices=options,gold=label",
        options=ImportOptions(limit=2),
    )
    assert [i.context for i in imported.suite.items] == ["Sky?", "Grass?"]
    assert imported.document["metadata"]["imported_from"]["format"] == "datasets"


# ------------------------------------------------------------------------------------------ lm-eval
def test_lm_eval_tasks_import_with_their_settings_and_provenance(lm_eval_dir: Path) -> None:
    mc = import_source(TASKS["mc"], options=ImportOptions(capability="geography"))
    suite = mc.suite
    assert (suite.name, suite.capability, suite.default_protocol, list(suite.protocols)) == (
        "layercheck_capitals_mc",
        "geography",
        "mc_text",
        ["mc_text"],
    )
    assert [s.context for s in suite.fewshot] == [
        "Question: What is the capital of Peru?\nAnswer:",
        "Question: What is the capital of Kenya?\nAnswer:",
    ]
    assert len(suite.items) == 16 and suite.items[1].choices[suite.items[1].gold] == "Tokyo"
    origin = mc.document["metadata"]["imported_from"]
    assert origin["task"] == "layercheck_capitals_mc" and origin["num_fewshot"] == 2 and origin["lm_eval"]
    assert mc.document["items"][0]["metadata"]["doc_hash"] and mc.warnings == []
    gen = import_source(TASKS["gen"]).suite
    settings = gen.protocols["generate_until"]
    assert (settings.until, settings.max_gen_toks, settings.answer_regex) == (("\n", "Question:"), 8, r"(-?\d+)")
    assert [i.target for i in gen.items][:3] == ["5", "6", "9"]


def test_lm_eval_prompts_and_continuations_are_lm_evals_own(lm_eval_dir: Path) -> None:
    for name in TASKS.values():
        assert_same_requests(our_requests(import_source(name).suite), lm_eval_requests(lm_eval_task(name)))


def variant(tmp_path: Path, base: str, **changes: Any) -> Path:
    """A copy of a test task with some keys changed (data files given as absolute paths)."""
    config = yaml.safe_load((LMEVAL_TASKS / base).read_text())
    config["dataset_kwargs"]["data_files"] = {
        k: str(LMEVAL_TASKS / v) for k, v in config["dataset_kwargs"]["data_files"].items()
    }
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / f"{config['task']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("shots", [0, 2])
def test_a_task_description_is_folded_into_the_prompt_as_lm_eval_places_it(
    lm_eval_dir: Path, tmp_path: Path, shots: int
) -> None:
    path = variant(
        tmp_path,
        TASKS["mc"],
        task=f"described_{shots}",
        num_fewshot=shots,
        description="Answer with the capital city.\n\n",
    )
    imported = import_source(str(path))
    assert_same_requests(our_requests(imported.suite), lm_eval_requests(lm_eval_task(path)))
    assert any("description is folded" in w for w in imported.warnings)


def test_a_loglikelihood_task_becomes_continuation_with_lm_evals_pairs(lm_eval_dir: Path, tmp_path: Path) -> None:
    path = variant(
        tmp_path,
        TASKS["gen"],
        task="greedy_ll",
        output_type="loglikelihood",
        doc_to_target=" {{answer}}",
        num_fewshot=0,
        generation_kwargs=None,
        filter_list=None,
        metric_list=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    )
    suite = import_source(str(path)).suite
    assert suite.default_protocol == "continuation" and suite.protocols["continuation"].target_delimiter == ""
    ours = [
        [(r.prompt, r.candidates[0])]
        for r in __import__("pytest_layercheck.scoring.rendering", fromlist=["render"]).render(suite, "continuation")
    ]
    assert_same_requests(ours, lm_eval_requests(lm_eval_task(path)))


def test_random_few_shot_sampling_and_lossy_filters_are_reported(lm_eval_dir: Path, tmp_path: Path) -> None:
    path = variant(
        tmp_path,
        TASKS["gen"],
        task="sampled",
        fewshot_config={"sampler": "default"},
        filter_list=[
            {
                "name": "flexible",
                "filter": [
                    {"function": "regex", "regex_pattern": "(\\d+)", "group_select": -1},
                    {"function": "take_first"},
                ],
            }
        ],
        metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    )
    warnings = import_source(str(path)).warnings
    assert any("few-shot examples per document at random" in w for w in warnings)
    assert any("selects match -1; layercheck takes the first match" in w for w in warnings)
    assert any("exact_match options differ" in w for w in warnings)


def test_unusable_lm_eval_tasks_are_refused_with_the_reason(
    lm_eval_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rolling = variant(
        tmp_path,
        TASKS["gen"],
        task="rolling",
        output_type="loglikelihood_rolling",
        num_fewshot=0,
        generation_kwargs=None,
        filter_list=None,
        metric_list=[{"metric": "word_perplexity"}],
    )
    with pytest.raises(SuiteFormatError, match="output_type 'loglikelihood_rolling'"):
        import_source(str(rolling))
    with pytest.raises(SuiteFormatError, match="--map does not apply to lm-eval tasks"):
        import_source(TASKS["mc"], fmap="context=x")
    monkeypatch.chdir(tmp_path)  # relative data_files now point nowhere
    shutil.copy(LMEVAL_TASKS / TASKS["mc"], tmp_path / TASKS["mc"])
    with pytest.raises(SuiteFormatError, match="lm-eval cannot build task") as info:
        import_source(TASKS["mc"])
    assert f"current directory ({tmp_path})" in str(info.value)
    with pytest.raises(SuiteFormatError, match="task YAML not found"):
        import_source("nowhere.yaml")


# ------------------------------------------------------------------------------------------ parity with a model
@pytest.mark.real_model
def test_imported_lm_eval_tasks_score_the_same_as_lm_eval(lm_eval_dir: Path, tmp_path: Path, smollm: Any) -> None:
    """Imported, profiled with build_profile, scored like lm-eval's own run of the same documents."""
    imported = {key: import_source(name) for key, name in TASKS.items()}
    paths = []
    for key, result in imported.items():
        write_suite(result, tmp_path / f"{key}.yaml")
        paths.append(tmp_path / f"{key}.yaml")
    profile = intact_profile(smollm, [i.suite for i in imported.values()], paths)
    samples = lm_eval_samples(smollm, list(TASKS.values()))
    measured = {
        key: assert_scored_like_lm_eval(result.suite, samples[result.suite.name], smollm, profile)
        for key, result in imported.items()
    }
    assert measured["mc"]["acc"] > 0.5  # the real model knows capitals: parity is not agreement on noise


# ------------------------------------------------------------------------------------------ the command
@pytest.mark.slow
def test_suite_import_and_check_as_a_user_runs_them(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "evals.jsonl", [{"prompt": "2 + 2 =", "answer": "4"}, {"prompt": "3 + 3 =", "answer": "6"}])
    done = sh(
        "layercheck",
        "suite",
        "import",
        "evals.jsonl",
        "--map",
        "context=prompt,target=answer",
        "--capability",
        "my-label",
        "-o",
        "suites/evals.yaml",
        cwd=tmp_path,
        env=quiet_env(),
    )
    assert done.returncode == 0, done.stderr
    suite = load_suite(tmp_path / "suites" / "evals.yaml")
    assert "suite written: suites/evals.yaml" in done.stdout and suite.content_hash in done.stdout
    assert "@pytest.mark.layercheck('my-label', 'intact')" in done.stdout
    text = (tmp_path / "suites" / "evals.yaml").read_text()
    assert "# Made with: layercheck suite import evals.jsonl --output suites/evals.yaml --map " in text
    again = sh(
        "layercheck",
        "suite",
        "import",
        "evals.jsonl",
        "--map",
        "context=prompt,target=answer",
        "--capability",
        "my-label",
        "-o",
        "suites/evals.yaml",
        cwd=tmp_path,
        env=quiet_env(),
    )
    assert again.returncode == 0 and "suite unchanged" in again.stdout
    other = sh(
        "layercheck",
        "suite",
        "import",
        "evals.jsonl",
        "--map",
        "context=prompt,target=answer",
        "-o",
        "suites/evals.yaml",
        cwd=tmp_path,
        env=quiet_env(),
    )
    assert other.returncode == 2 and "exists and differs from this import" in other.stderr and "--force" in other.stderr
    bad = sh("layercheck", "suite", "import", "evals.jsonl", cwd=tmp_path, env=quiet_env())
    assert bad.returncode == 2 and "evals.jsonl:1: no field 'context'" in bad.stderr
    assert "How to fix: map the prompt field" in bad.stderr and "Traceback" not in bad.stderr
    checked = sh("layercheck", "suite", "check", "suites/evals.yaml", "evals.jsonl", cwd=tmp_path, env=quiet_env())
    assert (
        checked.returncode == 2 and "suites/evals.yaml: ok: 'evals' (capability 'my-label'), 2 items" in checked.stdout
    )
    (tmp_path / "direct.jsonl").write_text('{"context": "a", "target": "b"}\n')
    assert sh("layercheck", "suite", "check", "direct.jsonl", cwd=tmp_path, env=quiet_env()).returncode == 0
    usage = sh("layercheck", "suite", "import", cwd=tmp_path, env=quiet_env())
    assert usage.returncode == 2 and "the following arguments are required: source" in usage.stderr


@pytest.mark.slow
def test_suite_import_of_an_lm_eval_task_from_its_folder(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    for path in LMEVAL_TASKS.iterdir():
        shutil.copy(path, tmp_path / path.name)
    done = sh(
        "layercheck",
        "suite",
        "import",
        "capitals_mc.yaml",
        "--limit",
        "4",
        "--capability",
        "geography",
        cwd=tmp_path,
        env=quiet_env(HF_DATASETS_CACHE=str(tmp_path / "hf-datasets")),
    )
    assert done.returncode == 0, done.stderr
    suite = load_suite(tmp_path / "layercheck_capitals_mc.yaml")
    assert len(suite.items) == 4 and suite.capability == "geography" and len(suite.fewshot) == 2
    elsewhere = sh(
        "layercheck",
        "suite",
        "import",
        str(tmp_path / "capitals_mc.yaml"),
        cwd=tmp_path.parent,
        env=quiet_env(HF_DATASETS_CACHE=str(tmp_path / "hf-datasets")),
    )
    assert (
        elsewhere.returncode == 2 and "resolves relative data_files against the current directory" in elsewhere.stderr
    )


def test_non_binary_outcomes_survive_a_baseline_file() -> None:
    """A continuation profile (per-item log-likelihoods beside exact_match) read back from its JSON."""
    from pytest_layercheck.data.profile_data import INTACT, DepthProfile, Evaluation, SuiteInfo

    outcomes = {"exact_match": (1.0, 0.0), "loglikelihood": (-0.0240538712, -1.25)}
    profile = DepthProfile(
        model={"name": "m", "fingerprint": "sha256:" + "1" * 64, "num_layers": 2},
        environment={},
        settings={"mode": "layers"},
        suites={"s": SuiteInfo("s", "c", "sha256:" + "0" * 64, "continuation", ("a", "b"))},
        bands={},
        evaluations={("s", "continuation", INTACT): Evaluation("s", "continuation", INTACT, (), outcomes)},
    )
    read = DepthProfile.from_json(json.loads(json.dumps(profile.to_json())))
    assert read.evaluations == profile.evaluations


@pytest.mark.slow
def test_a_users_jsonl_guarded_by_a_marker_on_its_own_label(tmp_path: Path) -> None:
    """Import prompt/answer pairs with one command, record the baseline, guard it with a marker; a damaged model fails."""
    from trained_tiny import fact_suite_items, perturbed, save, train_fact_model

    facts = fact_suite_items(16)
    write_jsonl(tmp_path / "my_facts.jsonl", [{"prompt": f["context"], "answer": f["target"]} for f in facts])
    model = train_fact_model(n=16, steps=200)
    save(model, tmp_path / "tiny-facts")
    save(perturbed(model, [0, 1], scale=3.0), tmp_path / "tiny-damaged")
    steps = [
        (
            "layercheck",
            "suite",
            "import",
            "my_facts.jsonl",
            "--map",
            "context=prompt,target=answer",
            "--capability",
            "my-label",
            "-o",
            "my_facts.yaml",
        ),
        ("layercheck", "baseline", "tiny-facts", "--suites", "my_facts.yaml", "--device", "cpu", "--mode", "bands"),
    ]
    for step in steps:
        done = sh(*step, cwd=tmp_path, env=quiet_env(LAYERCHECK_CACHE_DIR=str(tmp_path / "cache")))
        assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "baselines" / "tiny-facts.json").is_file()
    (tmp_path / "test_guard.py").write_text(
        "import pytest\n\n\n@pytest.mark.layercheck('my-label', 'intact')\ndef test_my_facts_survive():\n    pass\n"
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nlayercheck_suites = my_facts.yaml\nlayercheck_device = cpu\n"
        "layercheck_mode = bands\nlayercheck_baseline = tiny-facts\n"
    )
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_guard.py"]
    passed = sh(
        *run, "--layercheck-model=tiny-facts", cwd=tmp_path, env=quiet_env(LAYERCHECK_CACHE_DIR=str(tmp_path / "cache"))
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr
    failed = sh(
        *run,
        "--layercheck-model=tiny-damaged",
        cwd=tmp_path,
        env=quiet_env(LAYERCHECK_CACHE_DIR=str(tmp_path / "cache")),
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "my_facts/intact" in failed.stdout and "exact_match" in failed.stdout


def test_missing_extras_say_which_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # an import of it now fails, as when it is not installed
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(SuiteFormatError, match="needs the 'lm_eval' package") as info:
        import_source(str(LMEVAL_TASKS / TASKS["mc"]))
    assert "pip install 'pytest-layercheck[lmeval]'" in str(info.value)
    (tmp_path / "rows.parquet").write_bytes(b"")
    with pytest.raises(SuiteFormatError, match="pytest-layercheck\\[datasets\\]"):
        import_source(str(tmp_path / "rows.parquet"))
