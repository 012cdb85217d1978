"""Retrieval problems: key-value lookups and needles hidden at several depths of haystacks of several lengths.

The answer appears only in the context, and the wrong choices are other values from it, so a model
can only score by reading the context. The haystack vocabulary is public: the retrieval-heads analysis
builds its probes from the same sentences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import strategies as st

from pytest_layercheck.suites.drawing import numbers, pick
from pytest_layercheck.suites.problems import NAMES, Problem

ATTRIBUTES: tuple[str, ...] = ("room number", "locker number", "phone extension", "badge number")

#: Haystack sentences: no digits, so the only numbers in a haystack are the ones we plant.
FILLER: tuple[str, ...] = (
    "The morning air was cool and the streets were still quiet.",
    "A small dog slept in the shade of an old oak tree.",
    "The baker opened his shop early and the smell of bread filled the lane.",
    "Clouds drifted slowly over the hills to the west of the town.",
    "A group of children walked to school along the river path.",
    "The old clock in the square had stopped years ago.",
    "Fresh vegetables were piled high on the market stalls.",
    "A gentle wind moved the leaves of the tall poplar trees.",
    "The library was quiet except for the sound of turning pages.",
    "Two fishermen sat on the pier and waited patiently.",
    "The painter mixed blue and yellow to find the right shade of green.",
    "A cat watched the birds from a sunny windowsill.",
    "The train rolled slowly through fields of golden wheat.",
    "Someone had left a red umbrella leaning against the bench.",
    "The garden behind the house was full of roses and lavender.",
    "An old man fed the pigeons with crumbs from his pocket.",
    "The café on the corner served tea in tall glasses.",
    "Snow still covered the tops of the distant mountains.",
    "A bicycle bell rang as a courier hurried past.",
    "The teacher wrote a long poem on the blackboard.",
    "Boats with white sails crossed the calm blue bay.",
    "The village held a small festival at the end of every summer.",
    "A farmer led his cows slowly across the narrow road.",
    "The museum guard walked from room to room without a sound.",
    "Lanterns were hung along the street for the evening market.",
    "The bridge over the river was painted a deep shade of green.",
    "A young girl practised the violin by an open window.",
    "The smell of rain hung in the air before the storm.",
    "Workers repaired the roof of the old church on the hill.",
    "A row of pine trees sheltered the cottage from the wind.",
    "The postman greeted everyone he met on his morning round.",
    "Children built a sandcastle near the edge of the water.",
    "The bakery sold out of croissants before noon.",
    "An owl called softly from the edge of the dark forest.",
    "The shopkeeper swept the steps in front of her store.",
    "Thin mist rose from the lake as the sun came up.",
    "A tourist studied a paper map at the corner of the street.",
    "The choir rehearsed their songs in the chapel every evening.",
    "Apples ripened slowly in the orchard behind the barn.",
    "A kite with a long tail danced above the open meadow.",
    "The ferry sounded its horn as it left the harbour.",
    "Grandmother told stories about the winters of her childhood.",
    "The market square was crowded with people and music.",
    "A tired hiker rested on a flat rock beside the trail.",
    "The neighbours shared a long table for dinner in the courtyard.",
    "Ivy climbed the stone walls of the old school building.",
    "A carpenter measured the wood twice before cutting it.",
    "The town band played marches in the park on Sundays.",
    "Bees moved busily from flower to flower in the warm sun.",
    "The lighthouse keeper polished the great lamp every night.",
    "A quiet path led through the woods to a hidden pond.",
    "The students laughed at a joke their professor told.",
    "Rain tapped gently on the glass roof of the greenhouse.",
    "A street musician played the guitar near the fountain.",
    "The mayor planted a young tree in front of the town hall.",
    "Horses grazed peacefully in the field beside the stream.",
    "A delivery van stopped outside the flower shop.",
    "The old bookshop smelled of leather and dust.",
    "Swallows flew low over the water in the late afternoon.",
    "The chef tasted the soup and added a pinch of salt.",
)

#: Sentences that plant a wrong answer of the same shape as the needle's value.
DECOYS: tuple[str, ...] = (
    "The old library holds {} books.",
    "The bridge over the river is {} metres long.",
    "The museum counted {} visitors on its opening day.",
    "The mountain hut stands {} metres above the sea.",
    "The bakery sold {} loaves of bread last spring.",
    "The stadium in the next town has {} seats.",
)

NEEDLE_THINGS: tuple[str, ...] = (
    "the vault",
    "the blue door",
    "the garden gate",
    "the old safe",
    "the storage room",
)

#: Haystack sizes in words (about 1.3 tokens per word for SmolLM2's tokenizer: ~150/~300/~600).
HAYSTACK_WORDS: Mapping[str, int] = {"short": 80, "medium": 230, "long": 450}
DEPTHS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


#: Planted numbers are four-digit codes at least this far apart, so no two are easily confused.
MIN_GAP = 50


def codes(count: int) -> st.SearchStrategy[list[int]]:
    """``count`` distinct four-digit codes, pairwise at least :data:`MIN_GAP` apart.

    Each code is a distinct hundred (1000, 1100, ... 9900) plus an offset below 50, both drawn
    with :func:`numbers` so hypothesis's favourite runs (0, 1, 2) do not become 1000, 1100, 1200.
    """
    hundreds = st.lists(numbers(10, 99), min_size=count, max_size=count, unique=True)
    offsets = st.lists(numbers(0, MIN_GAP - 1), min_size=count, max_size=count)
    return st.tuples(hundreds, offsets).map(lambda drawn: [h * 100 + o for h, o in zip(*drawn, strict=True)])


def key_value(names: Sequence[str], values: Sequence[int], attribute: str, query: int) -> Problem:
    """A list of ``name: value`` lines, a question about one name and the cue ``name:``.

    Without the cue SmolLM2-135M answered 0 of 16 by generation (it copied the last value); with it
    the lookup works like the associative recall small models are good at. The wrong choices are
    the values on the lines nearest the asked one, the easiest to confuse with it.
    """
    lines = "\n".join(f"{n}: {v}" for n, v in zip(names, values, strict=True))
    key = names[query]
    question = f"What is the {attribute} of {key}?\n{key}:"
    context = f"The {attribute}s of the guests are listed below.\n{lines}\n{question}"
    nearest = sorted((i for i in range(len(values)) if i != query), key=lambda i: abs(i - query))
    wrong = tuple(str(values[i]) for i in nearest)
    return Problem(
        "kv_lookup", f"pairs-{len(names)}", context, str(values[query]), wrong,
        {"key": key, "pairs": len(names), "position": query},
    )  # fmt: skip


def needle(
    size: str,
    depth: float,
    filler: Sequence[str],
    thing: str,
    code: int,
    decoys: Sequence[tuple[int, int, int]],
) -> Problem:
    """A haystack of about ``size`` words with the needle at ``depth`` and three decoy numbers.

    ``decoys`` holds (index into :data:`DECOYS`, number, insertion slot among the filler sentences).
    The question is followed by the needle's own opening words as a cue, as in Wu et al.'s needle
    tests; with a bare "Answer:" SmolLM2-135M generated no code at all.
    """
    sentences: list[str] = []
    words = 0
    for sentence in filler:
        if words >= HAYSTACK_WORDS[size]:
            break
        sentences.append(sentence)
        words += len(sentence.split())
    for template, number, position in decoys:
        sentences.insert(position % (len(sentences) + 1), DECOYS[template].format(number))
    needle_sentence = f"The secret code for {thing} is {code}."
    at = round(depth * len(sentences))
    sentences.insert(at, needle_sentence)
    question = f"What is the secret code for {thing}?\nThe secret code for {thing} is"
    context = " ".join(sentences) + "\n" + question
    wrong = tuple(str(number) for _, number, _ in decoys)
    return Problem(
        "needle", size, context, str(code), wrong,
        {"depth": depth, "sentence_index": at, "sentences": len(sentences),
         "needle": needle_sentence},
    )  # fmt: skip


@st.composite
def key_value_problems(draw: st.DrawFn, pairs: int) -> Problem:
    names = draw(st.permutations(NAMES))[:pairs]
    values = draw(codes(pairs))
    return key_value(names, values, draw(pick(ATTRIBUTES)), draw(numbers(0, pairs - 1)))


@st.composite
def needle_problems(draw: st.DrawFn, size: str, depth: float) -> Problem:
    filler = draw(st.permutations(FILLER))
    code, *others = draw(codes(4))
    templates = draw(st.lists(numbers(0, len(DECOYS) - 1), min_size=3, max_size=3, unique=True))
    slots = draw(st.lists(numbers(0, 60), min_size=3, max_size=3))
    decoys = list(zip(templates, others, slots, strict=True))
    return needle(size, depth, filler, draw(pick(NEEDLE_THINGS)), code, decoys)


#: No few-shot examples: with one key-value example in front, SmolLM2-135M often copied that
#: example's answer, and lookups by generation fell from 6 to 2 of 16.
RETRIEVAL_FEWSHOT: tuple[Problem, ...] = ()
