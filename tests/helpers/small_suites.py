"""Small hand-made suites: a valid two-item suite file, a YAML alias bomb built on it, and nine items of
mixed lengths for the scoring engine's layouts."""

from __future__ import annotations

import textwrap

from pytest_layercheck.suites.schema import ProtocolSettings, Suite, SuiteItem

VALID = textwrap.dedent(
    """\
    name: tiny
    capability: knowledge
    description: a tiny suite
    default_protocol: mc_text
    protocols:
      mc_text: {template: "{context}"}
      generate_until: {template: "{context}", until: ["\\n"]}
    items:
      - id: a
        context: The capital of France is
        domain: geography
        kind: capital
        choices: [Paris, Lyon, Nice, Lille]
        gold: 0
        target: Paris
      - id: b
        context: The capital of Italy is
        domain: geography
        kind: capital
        choices: [Milan, Rome, Turin, Naples]
        gold: 1
        target: Rome
    """
)


def billion_laughs(levels: int = 9) -> str:
    """A valid suite whose metadata nests aliases ``levels`` deep, ten per level: 10**levels nodes expanded."""
    text = 'metadata:\n  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in range(1, levels):
        previous, current = chr(ord("a") + level - 1), chr(ord("a") + level)
        text += f"  {current}: &{current} [" + ",".join([f"*{previous}"] * 10) + "]\n"
    return VALID + text


CONTEXTS = [
    "What is 2+2?",
    "x",
    "Name the capital of France, and say why it became the capital at all?",
    "Pick one.",
    "Which of these numbers is prime?",
    "The the the",
    "Sum?",
]
CHOICES = [("four", "five", "twenty-two", "x"), ("Paris", "Lyon"), ("A", "B", "the other one")]
SHOTS = tuple(
    SuiteItem(id=f"s{i}", context=c, domain="t", kind="t", choices=("yes", "no"), gold=0, target="yes")
    for i, c in enumerate(["Is water wet?", "Is fire hot?", "Is ice cold?"])
)


def mixed_suite(shots: int) -> Suite:
    """Nine multiple-choice items of mixed prompt and answer lengths, with ``shots`` few-shot examples
    (0-3): padding, shared prefixes and candidates of several tokens all occur."""
    items = tuple(
        SuiteItem(
            id=f"q{i}",
            context=CONTEXTS[i % len(CONTEXTS)],
            domain="t",
            kind="t",
            choices=CHOICES[i % 3],
            gold=i % len(CHOICES[i % 3]),
            target=CHOICES[i % 3][0],
        )
        for i in range(9)
    )
    template = ProtocolSettings(template="Q: {context}\nA:")
    return Suite(
        name="sweep",
        capability="knowledge",
        description="",
        items=items,
        default_protocol="mc_text",
        protocols={
            "mc_text": template,
            "continuation": template,
            "mc_letters": ProtocolSettings(template="Q: {context}\n{choices_block}\nA:"),
        },
        fewshot=SHOTS[:shots],
        content_hash="h",
    )
