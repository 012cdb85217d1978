"""The repository the tests check, by path (one place, whatever folder a test module sits in), and the
README's quick start lines, which CI runs and a test runs as a new user would."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXAMPLES = REPO / "examples"
#: Files the tests read: lm-eval task folders and their recorded runs.
DATA = REPO / "tests" / "data"


def quick_start_commands(readme: str) -> list[str]:
    """The command lines of the README's quick start block, comments dropped."""
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's quick start has no ```bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
