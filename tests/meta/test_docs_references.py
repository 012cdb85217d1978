"""The documentation names only what exists, and the README stays an index.

Read: README.md, ARCHITECTURE.md and every docs/*.md. Checked:

- every repository path named in backticks or as a link target exists: folders and files under the
  repository's own top-level folders (``pytest_layercheck/``, ``tests/``, ``examples/``, ...), the
  package-relative paths ARCHITECTURE.md uses (``model/ablation.py``), dotted ``pytest_layercheck.…``
  modules; relative links and their ``#anchors`` resolve to a file and a heading;
- every ``layercheck <command>`` shown in backticks, a heading or a ```bash block is a subcommand that
  ``pytest_layercheck.cli.build_parser`` registers (each module of ``cli.COMMANDS`` adds its own), and
  every ``--option`` given to it is one of that (sub)command's options;
- every ``--layercheck-*`` option and every ``layercheck_*`` ini name is one the plugin registers, as
  ``pytest --help`` lists them (a ``layercheck_*`` name may also be one of the plugin's fixtures); an
  option written on its own in backticks exists in some spelling (ours, or one of the few other tools'
  options the pages name);
- README.md has at most 250 lines, its quick start at most 20, it links every page of docs/, and docs/
  holds at least 3 real pages.

Paths in other code blocks are examples of a user's files (``suites/my-evals.yaml``), so only backticks
and links are read for paths.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from repo_files import README, REPO

from pytest_layercheck.cli import build_parser

PACKAGE = REPO / "pytest_layercheck"
DOCS = REPO / "docs"
PAGES = [README, REPO / "ARCHITECTURE.md", *sorted(DOCS.glob("*.md"))]

#: Top-level entries of the repository a path may start with; other first segments (``ft/``, ``runs/``,
#: ``path/to/``) are a user's files in an example.
REPO_DIRS = ("pytest_layercheck", "tests", "examples", "benchmarks", "docs", "baselines", "suites", ".ci", ".github")
TOP_FILES = ("README.md", "ARCHITECTURE.md", "LICENSE", "constraints.txt", "pyproject.toml")
#: The package's own folders: ARCHITECTURE.md names modules relative to the package (``model/ablation.py``).
PACKAGE_DIRS = tuple(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
#: Paths in the user's repository that the guard workflow reads (``.github/workflows/guard-finetune.yml``).
USER_PATHS = {"tests/layercheck", "tests/layercheck/"}
#: ``layercheck help [COMMAND]`` is handled by ``cli.main`` before the parser, as git's and pip's users type it.
HELP_WORD = "help"
#: Options of other tools that the pages name on their own in backticks (pip, pytest, pytest-html, pytest-xdist).
OTHER_OPTIONS = {
    "--index-url",
    "--require-hashes",
    "--no-deps",
    "--junitxml",
    "--strict-markers",
    "--self-contained-html",
    "--dist",
    "--tx",
}

MAX_README_LINES = 250
MAX_QUICK_START_LINES = 20
MIN_DOC_PAGES = 3
MIN_PAGE_LINES = 20

PATH_WORD = re.compile(r"^[\w.-]+(?:/[\w.-]*)+$")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.M | re.S)
SPAN = re.compile(r"`([^`]+?)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"(?<![\w./-])layercheck((?:\s+[^\s`]+)*)")
PYTEST_OPTION = re.compile(r"(?<![\w-])--layercheck-[a-z][a-z0-9-]*")
INI_NAME = re.compile(r"(?<![\w./-])layercheck_[a-z][a-z0-9_]*(?![\w-]|\.(?:ya?ml|py|json)\b)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Page:
    path: Path
    text: str
    prose: str  # the text with fenced code blocks blanked out
    fences: tuple[tuple[str, str], ...]  # (language, body)

    @property
    def name(self) -> str:
        return str(self.path.relative_to(REPO))

    def spans(self) -> Iterator[str]:
        for match in SPAN.finditer(self.prose):
            if "\n\n" not in match.group(1):
                yield " ".join(match.group(1).split())

    def headings(self) -> list[str]:
        return [line.lstrip("#").strip() for line in self.prose.splitlines() if re.match(r"^#{1,6} ", line)]


def read(path: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    fences = tuple((m.group(1), m.group(2)) for m in FENCE.finditer(text))
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return Page(path, text, prose, fences)


@pytest.fixture(scope="module")
def pages() -> list[Page]:
    return [read(path) for path in PAGES]


@pytest.fixture(scope="module")
def commands() -> dict[str, argparse.ArgumentParser]:
    """``layercheck``'s parsers by command: the top level (""), each subcommand, each nested one ("cache show")."""

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(actions[0].choices) if actions else {}

    top = build_parser()
    found = {"": top}
    for name, parser in subparsers(top).items():
        found[name] = parser
        for inner, inner_parser in subparsers(parser).items():
            found[f"{name} {inner}"] = inner_parser
    return found


@dataclass(frozen=True)
class Registered:
    options: frozenset[str]
    ini_names: frozenset[str]
    fixtures: frozenset[str]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """What the plugin registers, as ``pytest --help`` shows it (run in an empty folder, with only this plugin)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COLUMNS"))}
    env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", COLUMNS="200")
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--help",
            "-p",
            "pytest_layercheck.pytest_plugin.plugin",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path_factory.mktemp("help"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    options = frozenset(PYTEST_OPTION.findall(shown.stdout))
    ini_names = frozenset(re.findall(r"^\s+(layercheck_[a-z0-9_]+) \(", shown.stdout, re.M))
    source = (PACKAGE / "pytest_plugin" / "plugin.py").read_text(encoding="utf-8")
    fixtures = frozenset(re.findall(r"^@pytest\.fixture[^\n]*\n(?:@[^\n]*\n)*def (layercheck_\w+)", source, re.M))
    assert "--layercheck-model" in options and "layercheck_model" in ini_names and "layercheck_ablate" in fixtures
    return Registered(options, ini_names, fixtures)


def repo_path_exists(word: str) -> bool | None:
    """Whether a path named in the docs exists; None when ``word`` is not a path of this repository."""
    word = word.strip("()[]{},;:'\"")
    if word in TOP_FILES:
        return (REPO / word).exists()
    if not PATH_WORD.match(word) or word in USER_PATHS:
        return None
    first = word.split("/", 1)[0]
    if first in REPO_DIRS:
        return (REPO / word).exists() or (first == "suites" and (PACKAGE / word).exists())
    if first in PACKAGE_DIRS:
        return (PACKAGE / word).exists()
    return None


def module_exists(dotted: str) -> bool:
    """``pytest_layercheck.a.b`` is a module or package, or a name defined in one (``module.Name``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:cut])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            rest = parts[cut:]
            if not rest:
                return True
            text = source.read_text(encoding="utf-8")
            return len(rest) == 1 and bool(
                re.search(rf"^(?:class|def) {rest[0]}\b|^{rest[0]}\s*[:=]|\"{rest[0]}\":", text, re.M)
            )
    return False


def anchors(page: Page) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in page.headings()}


def test_every_path_the_docs_name_exists(pages: list[Page]) -> None:
    missing = []
    for page in pages:
        for span in page.spans():
            for word in span.split():
                if repo_path_exists(word) is False:
                    missing.append(f"{page.name}: `{word}`")
            for dotted in re.findall(r"(?<![\w./-])pytest_layercheck(?:\.\w+)+", span):
                if not module_exists(dotted):
                    missing.append(f"{page.name}: `{dotted}`")
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_every_link_and_anchor_resolves(pages: list[Page]) -> None:
    by_path = {page.path.resolve(): page for page in pages}
    broken = []
    for page in pages:
        for target in LINK.findall(page.prose):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            path_part, _, anchor = target.partition("#")
            path = (page.path.parent / path_part).resolve() if path_part else page.path.resolve()
            if not path.exists():
                broken.append(f"{page.name}: ({target}): no such file")
            elif anchor:
                linked = by_path.get(path) or read(path)
                if anchor not in anchors(linked):
                    broken.append(f"{page.name}: ({target}): no heading with that anchor")
    assert not broken, "\n".join(broken)


def command_uses(page: Page) -> Iterator[str]:
    """Each ``layercheck …`` the page shows: in backticks, in a heading, or on a ```bash line."""
    yield from (span for span in page.spans() if span.startswith("layercheck"))
    yield from (heading for heading in page.headings() if heading.startswith("layercheck "))
    for language, body in page.fences:
        if language not in ("bash", "sh", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*$", "", line.strip())
            for part in re.split(r"&&|\|\||;", line):
                words = part.split()
                if words and words[0] == "$":
                    words = words[1:]
                if words and words[0] == "layercheck":
                    yield " ".join(words)


def test_every_layercheck_command_and_its_options_exist(
    pages: list[Page], commands: dict[str, argparse.ArgumentParser]
) -> None:
    wrong = []
    for page in pages:
        for use in command_uses(page):
            match = COMMAND.match(use)
            assert match, use
            words = match.group(1).split()
            if words[:1] == [HELP_WORD]:
                words = words[1:]
            command = ""
            if words and not words[0].startswith(("-", "<", "[")):
                command = words.pop(0)
                if command not in commands:
                    wrong.append(f"{page.name}: `{use}`: no subcommand {command!r}")
                    continue
                nested = [f"{command} {w}" for w in words[0].split("|")] if words else []
                if nested and all(n in commands for n in nested):
                    words.pop(0)
                elif (
                    any(" " in name and name.startswith(f"{command} ") for name in commands)
                    and words
                    and re.fullmatch(r"[a-z|]+", words[0])
                ):
                    wrong.append(f"{page.name}: `{use}`: no subcommand {command} {words[0]!r}")
                    continue
                targets = nested if nested and all(n in commands for n in nested) else [command]
            else:
                targets = [""]
            for option in OPTION.findall(" ".join(words)):
                for target in targets:
                    if option not in commands[target]._option_string_actions:
                        wrong.append(f"{page.name}: `{use}`: `layercheck {target}` has no option {option}")
    assert not wrong, "\n".join(wrong)


def test_every_pytest_option_and_ini_name_is_registered(pages: list[Page], registered: Registered) -> None:
    unknown = []
    for page in pages:
        for option in sorted(set(PYTEST_OPTION.findall(page.text)) - registered.options):
            unknown.append(f"{page.name}: option {option}")
        for name in sorted(set(INI_NAME.findall(page.text)) - registered.ini_names - registered.fixtures):
            unknown.append(f"{page.name}: ini name or fixture {name}")
    assert not unknown, "not registered by the plugin:\n" + "\n".join(unknown)


def test_an_option_named_on_its_own_exists(
    pages: list[Page], registered: Registered, commands: dict[str, argparse.ArgumentParser]
) -> None:
    """``--max-drop`` in prose: some command (or the plugin) has it. Options with underscores are lm-eval's."""
    known = {option for parser in commands.values() for option in parser._option_string_actions}
    known |= registered.options | OTHER_OPTIONS
    unknown = [
        f"{page.name}: `{span}`"
        for page in pages
        for span in page.spans()
        if re.match(r"^--[a-z][a-z0-9-]*[a-z0-9](?:[ =]|$)", span)
        and "_" not in span.split()[0].split("=")[0]
        and span.split()[0].split("=")[0] not in known
    ]
    assert not unknown, "options no command has:\n" + "\n".join(unknown)


def quick_start(readme: str) -> list[str]:
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    return ["## Quick start", *section.rstrip("\n").splitlines()[1:]]


def test_the_readme_is_an_index(pages: list[Page]) -> None:
    readme = README.read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= MAX_README_LINES, len(readme.splitlines())
    assert len(quick_start(readme)) <= MAX_QUICK_START_LINES, quick_start(readme)
    docs = sorted(DOCS.glob("*.md"))
    assert len(docs) >= MIN_DOC_PAGES, docs
    for page in docs:
        text = page.read_text(encoding="utf-8")
        assert text.startswith("# ") and len(text.splitlines()) >= MIN_PAGE_LINES, f"{page.name} is a stub"
        assert f"(docs/{page.name})" in readme, f"the README does not link docs/{page.name}"


def test_the_cli_reference_is_what_the_parsers_say() -> None:
    """docs/cli.md is generated from the parsers (.ci/cli_reference.py): a changed option or help text
    without a regenerated page fails here."""
    run = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "cli_reference.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
