"""Per-layer heat strips: where in depth each capability lives, and where it moved.

A *profile strip* has one cell per layer and one row per suite. A cell's height (``▁`` to ``█``) and
colour give how much the suite's metric drops when that layer alone is removed (or, with
``value="accuracy"``, the metric itself). ``│`` marks band edges, ``·`` a layer that was not
evaluated. A *delta strip* compares a run with its baseline, layer by layer: bars above the line
(``▁▄█``, green) where accuracy with the layer removed rose, below the line (``▔▀█``, red) where it
fell. Both read without colour, fit the console's width (several layers share a cell on narrow
consoles, showing the worst of them) and show whatever part of the profile exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from pytest_layercheck.data.profile_data import INTACT, DepthProfile, Evaluation
from pytest_layercheck.data.statistics import mean

#: Glyphs of a profile strip, lowest to highest (eight levels).
RAMP = "▁▂▃▄▅▆▇█"
#: Glyphs of a delta strip: rises grow up from the line, drops grow down from it (three levels).
RISE = "▁▄█"
FALL = "▔▀█"
MISSING = "·"
EDGE = "│"
#: Drop strip: removing the layer *raised* the metric by more than one level.
GAIN = "+"
DROP_STYLES = ("grey50", "green", "green", "yellow", "yellow", "dark_orange", "red", "bold red")
ACCURACY_STYLES = tuple(reversed(DROP_STYLES))
RISE_STYLES = ("green", "green", "bold green")
FALL_STYLES = ("yellow", "red", "bold red")
NICE_SCALES = (0.05, 0.1, 0.2, 0.25, 0.5, 1.0)
MAX_CELL_WIDTH = 3
MAX_LABEL = 14


def nice_scale(peak: float) -> float:
    """The smallest of 0.05, 0.1, 0.2, 0.25, 0.5, 1 that holds ``peak`` (a legend-friendly full scale)."""
    return next((s for s in NICE_SCALES if peak <= s + 1e-12), max(1.0, peak))


# ------------------------------------------------------------------------------------------ data
def suite_metric(profile: DepthProfile, suite: str, metrics: Sequence[str] | None = None) -> str:
    """The first of ``metrics`` the suite has, else its primary metric."""
    outcomes = profile.evaluation(suite).outcomes
    return next((m for m in metrics or () if m in outcomes), profile.suites[suite].cell_metric)


def _ablations(profile: DepthProfile, suite: str, metric: str) -> list[Evaluation]:
    protocol = profile.suites[suite].protocol
    return [
        ev
        for (name, proto, key), ev in sorted(profile.evaluations.items())
        if name == suite and proto == protocol and key != INTACT and ev.removed_layers and metric in ev.outcomes
    ]


def layer_centre(values: Mapping[int, tuple[float, float]], layers: Sequence[int], depth: int) -> float:
    """The centre of depth (:func:`depth_shift.centre_of_depth`) of the per-layer drops in ``values``
    (``layer_values``'s pairs), over ``layers``: where along depth the metric is lost."""
    from pytest_layercheck.data.depth_shift import centre_of_depth

    drops = [[values[layer][1] - values[layer][0] for layer in layers]]
    return centre_of_depth(drops, layers, depth) if depth >= 2 else math.nan


def layer_values(profile: DepthProfile, suite: str, metric: str) -> tuple[dict[int, tuple[float, float]], bool]:
    """Layer -> (metric with the layer removed, intact metric on the same items); and whether the values
    come from single-layer ablations (False: from the band or window ablations that remove the layer).

    The intact reference is the intact model's mean over the items the ablation scored (a layer sweep
    may score only the leading items), so a drop compares like with like.
    """
    evaluations = _ablations(profile, suite, metric)
    intact = profile.evaluation(suite).outcomes.get(metric, ())
    single = [ev for ev in evaluations if len(ev.removed_layers) == 1]
    chosen = single or evaluations
    pooled: dict[int, list[tuple[float, float]]] = {}
    for ev in chosen:
        values = ev.outcomes[metric]
        pair = (mean(values), mean(intact[: len(values)]))
        for layer in ev.removed_layers:
            pooled.setdefault(layer, []).append(pair)
    out = {layer: (mean([p[0] for p in pairs]), mean([p[1] for p in pairs])) for layer, pairs in pooled.items()}
    return out, bool(single) or not evaluations


def num_layers(profile: DepthProfile) -> int:
    declared = profile.model.get("num_layers")
    seen = [layer for layers in profile.bands.values() for layer in layers]
    seen += [layer for ev in profile.evaluations.values() for layer in ev.removed_layers]
    return max(int(declared) if isinstance(declared, int) else 0, max(seen, default=-1) + 1)


# ------------------------------------------------------------------------------------------ cells
@dataclass(frozen=True)
class Glyph:
    char: str
    style: str = ""


@dataclass(frozen=True)
class StripRow:
    """One line of a strip: a label, a short value before the cells, the cells, a note after them."""

    label: str
    lead: str
    values: Mapping[int, float]  # layer -> value; absent layers are drawn as not evaluated
    note: str
    #: Which of a group's values a shared cell shows (the worst); and how a value becomes a glyph.
    pick: Callable[[Sequence[float]], float]
    glyph: Callable[[float], Glyph]
    #: A line of text under the cells instead of cells (``note`` is the text; no label, lead or cells).
    text_only: bool = False


@dataclass(frozen=True)
class Segment:
    band: str | None
    layers: tuple[int, ...]


def segments(bands: Mapping[str, Sequence[int]], layers: int) -> list[Segment]:
    """Runs of consecutive layers in the same band (layers outside every band form their own runs)."""
    band_of = {layer: name for name, members in bands.items() for layer in members}
    out: list[Segment] = []
    for layer in range(layers):
        band = band_of.get(layer)
        if out and out[-1].band == band and out[-1].layers[-1] == layer - 1:
            out[-1] = Segment(band, (*out[-1].layers, layer))
        else:
            out.append(Segment(band, (layer,)))
    return out


def _chunks(layers: tuple[int, ...], per: int) -> list[tuple[int, ...]]:
    return [layers[i : i + per] for i in range(0, len(layers), per)]


@dataclass(frozen=True)
class Layout:
    per: int  # layers per cell
    width: int  # characters per cell
    notes: bool  # room for the notes after the cells

    def cells(self, segment: Segment) -> list[tuple[int, ...]]:
        return _chunks(segment.layers, self.per)


def fit(segs: Sequence[Segment], room: int, note_room: int) -> Layout:
    """Fewest layers per cell that fit ``room`` columns; then the notes, if there is room left; then
    cells up to 3 characters wide when there are few layers. Resolution comes before notes."""
    edges = max(0, len(segs) - 1)

    def count(per: int) -> int:
        return sum(math.ceil(len(s.layers) / per) for s in segs)

    per = 1
    while count(per) + edges > room and per < max((len(s.layers) for s in segs), default=1):
        per += 1
    notes = note_room > 0 and count(per) + edges <= room - note_room
    room -= note_room if notes else 0
    width = max(1, min(MAX_CELL_WIDTH, (room - edges) // max(1, count(per)))) if per == 1 else 1
    return Layout(per, width, notes)


# ------------------------------------------------------------------------------------------ strips
@dataclass
class DepthStrip:
    """A rich renderable: title, band names, one or more rows per suite, layer axis and legend.

    Rows come in groups (one group per suite: one row for a profile strip, two for a delta strip);
    the label and lead of a group's later rows are blank.
    """

    title: str
    groups: list[list[StripRow]]
    bands: Mapping[str, Sequence[int]]
    layers: int
    legend: list[Text]
    lead_header: str = ""
    notes: list[str] = field(default_factory=list)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(self.title, style="bold")
        rows = [row for group in self.groups for row in group]
        label_w = min(MAX_LABEL, max((len(r.label) for r in rows), default=0))
        lead_w = max([len(self.lead_header), *(len(r.lead) for r in rows)])
        note_w = max((len(r.note) for r in rows if not r.text_only), default=0)
        segs = segments(self.bands, self.layers)
        layout = fit(segs, max(8, options.max_width - label_w - lead_w - 2), note_w + 2 if note_w else 0)
        if layout.per > 1:  # a layer per cell matters more than the lead column, which the table also shows
            narrow = fit(segs, max(8, options.max_width - label_w - 1), note_w + 2 if note_w else 0)
            if narrow.per < layout.per:
                layout, lead_w = narrow, -1
        prefix = label_w + lead_w + 2
        yield self._band_line(segs, layout, prefix, lead_w >= 0)
        for row in rows:
            if row.text_only:  # under the cells, where the notes' width does not count
                yield Text(" " * prefix + row.note, style="dim")
                continue
            line = Text(no_wrap=True, overflow="crop")
            label = row.label if len(row.label) <= label_w else row.label[: label_w - 1] + "…"
            line.append(f"{label:<{label_w}} " + (f"{row.lead:>{lead_w}} " if lead_w >= 0 else ""))
            for index, segment in enumerate(segs):
                if index:
                    line.append(EDGE, style="dim")
                for chunk in layout.cells(segment):
                    present = [row.values[layer] for layer in chunk if layer in row.values]
                    glyph = row.glyph(row.pick(present)) if present else Glyph(MISSING, "dim")
                    line.append(glyph.char * layout.width, style=glyph.style)
            if layout.notes and row.note:
                line.append(f"  {row.note}", style="dim")
            yield line
        yield self._axis_line(segs, layout, prefix)
        shared = "" if layout.per == 1 else f"; one cell = {layout.per} layers, the worst shown"
        yield Text("; ", style="dim").join(self.legend) + Text(shared, style="dim")
        for note in self.notes:
            yield Text(note, style="dim")

    def _starts(self, segs: Sequence[Segment], layout: Layout) -> list[int]:
        """Column (after the prefix) where each segment's first cell starts."""
        starts, column = [], 0
        for index, segment in enumerate(segs):
            column += 1 if index else 0
            starts.append(column)
            column += len(layout.cells(segment)) * layout.width
        return starts + [column]

    def _band_line(self, segs: Sequence[Segment], layout: Layout, prefix: int, lead: bool) -> Text:
        starts = self._starts(segs, layout)
        chars = [" "] * starts[-1]
        for index, segment in enumerate(segs):
            room = starts[index + 1] - starts[index] - (1 if index + 1 < len(segs) else 0)
            name = segment.band or ""
            if len(name) > room:
                name = name[: room - 1] + "…" if room >= 3 else name[:room]
            chars[starts[index] : starts[index] + len(name)] = name
        header = self.lead_header if lead else ""
        return Text(f"{header:>{prefix - 1}} " + "".join(chars).rstrip(), style="dim", no_wrap=True, overflow="crop")

    def _axis_line(self, segs: Sequence[Segment], layout: Layout, prefix: int) -> Text:
        """Layer numbers under the first cell of each segment and under the last cell."""
        starts = self._starts(segs, layout)
        chars = [" "] * (starts[-1] + 4)
        free = 0
        marks = [(starts[i], str(s.layers[0])) for i, s in enumerate(segs)]
        if segs:
            last = str(segs[-1].layers[-1])
            marks.append((max(0, starts[-1] - len(last)), last))
        for column, text in marks:
            if column >= free:
                chars[column : column + len(text)] = text
                free = column + len(text) + 1
        return Text(f"{'layer':>{prefix - 1}} " + "".join(chars).rstrip(), style="dim", no_wrap=True, overflow="crop")


def _scale_text(scale: float) -> str:
    return f"{scale:g}" + ("+" if scale < 1 else "")


def _key(glyphs: str, styles: Sequence[str], meaning: str) -> Text:
    """A legend entry: the glyphs in their colours, then what they mean."""
    key = Text()
    for glyph, style in zip(glyphs, styles if len(styles) == len(glyphs) else [styles[0]] * len(glyphs), strict=True):
        key.append(glyph, style=style)
    return key + Text(f" {meaning}", style="dim")


def _level(magnitude: float, scale: float, levels: int) -> int:
    """0 .. levels-1: which glyph a magnitude in [0, scale] gets."""
    return max(0, min(levels - 1, int(magnitude / scale * levels))) if scale > 0 else 0


def _drop_glyph(scale: float) -> Callable[[float], Glyph]:
    def glyph(drop: float) -> Glyph:
        if not math.isfinite(drop):
            return Glyph(MISSING, "dim")
        if drop < -scale / len(RAMP):
            return Glyph(GAIN, "bold cyan")
        level = _level(max(0.0, drop), scale, len(RAMP))
        return Glyph(RAMP[level], DROP_STYLES[level])

    return glyph


def _accuracy_glyph(value: float) -> Glyph:
    if not math.isfinite(value):
        return Glyph(MISSING, "dim")
    level = _level(value, 1.0, len(RAMP))
    return Glyph(RAMP[level], ACCURACY_STYLES[level])


def _signed_glyph(scale: float, rising: bool) -> Callable[[float], Glyph]:
    """The upper row draws rises, the lower row drops; the other sign (and no change) is blank."""

    def glyph(delta: float) -> Glyph:
        if not math.isfinite(delta):
            return Glyph(MISSING, "dim")
        if (delta > 1e-9) != rising or abs(delta) <= 1e-9:
            return Glyph(" ")
        level = max(0, min(2, math.ceil(abs(delta) / scale * 3) - 1))
        return Glyph(RISE[level], RISE_STYLES[level]) if rising else Glyph(FALL[level], FALL_STYLES[level])

    return glyph


def _worst(layers: Mapping[int, float], key: Callable[[float], float]) -> tuple[int, float] | None:
    finite = [(layer, v) for layer, v in layers.items() if math.isfinite(v)]
    return max(finite, key=lambda item: (key(item[1]), -item[0])) if finite else None


def profile_strip(
    profile: DepthProfile, metrics: Sequence[str] | None = None, *, value: str = "drop"
) -> DepthStrip | None:
    """One row per suite: the drop (or, with ``value="accuracy"``, the metric) with each layer removed.

    None when no suite has any layer ablation (an intact-only profile): there is nothing to draw.
    """
    if value not in ("drop", "accuracy"):
        raise ValueError(f"value must be 'drop' or 'accuracy', not {value!r}")
    per_suite: dict[str, tuple[dict[int, float], float, bool]] = {}
    intact_only = []
    for suite in profile.suites:
        metric = suite_metric(profile, suite, metrics)
        values, single = layer_values(profile, suite, metric)
        if not values:
            intact_only.append(suite)
            continue
        shown = {layer: (ref - v if value == "drop" else v) for layer, (v, ref) in values.items()}
        per_suite[suite] = (shown, profile.evaluation(suite).mean(metric), single)
    if not per_suite:
        return None
    peak = max((v for shown, _, _ in per_suite.values() for v in shown.values() if math.isfinite(v)), default=0.0)
    scale = nice_scale(peak)
    groups = []
    band_of = {layer: name for name, members in profile.bands.items() for layer in members}
    for suite, (shown, intact, single) in per_suite.items():
        worst = _worst(shown, (lambda v: v) if value == "drop" else (lambda v: -v))
        where = "" if worst is None else f"L{worst[0]}" if single else band_of.get(worst[0], f"L{worst[0]}")
        if value == "drop":
            note = f"worst {where} -{worst[1]:.3f}" if worst and worst[1] > 0 else "no drop"
            row = StripRow(suite, f"{intact:.3f}", shown, note, max, _drop_glyph(scale))
        else:
            note = f"lowest {where} {worst[1]:.3f}" if worst else ""
            row = StripRow(suite, f"{intact:.3f}", shown, note, min, _accuracy_glyph)
        groups.append([row])
    what = "drop in the metric when one layer is removed" if value == "drop" else "metric with one layer removed"
    title = f"where each capability lives: {what}"
    common = [_key(MISSING, ("dim",), "not evaluated"), _key(EDGE, ("dim",), "band edge")]
    if value == "drop":
        legend = [
            _key(RAMP, DROP_STYLES, f"drop 0 to {_scale_text(scale)}"),
            _key(GAIN, ("bold cyan",), "removing the layer raised it"),
            *common,
        ]
    else:
        legend = [_key(RAMP, ACCURACY_STYLES, "metric 0 to 1"), *common]
    notes = [f"no layer ablations for {', '.join(intact_only)} (intact only)"] if intact_only else []
    grouped = [s for s, (_, _, single) in per_suite.items() if not single]
    if grouped:
        notes.append(
            f"{', '.join(grouped)}: no single-layer ablations (mode {profile.settings.get('mode', '?')}); "
            "each layer shows the mean of the ablations that removed it"
        )
    return DepthStrip(title, groups, profile.bands, num_layers(profile), legend, "intact", notes)


def _suite_deltas(
    baseline: DepthProfile, current: DepthProfile, metrics: Sequence[str] | None
) -> tuple[dict[str, tuple[dict[int, float], float]], dict[str, tuple[float, float] | None], float]:
    """Per shared suite: each layer's change and the intact change; the centres of depth before and after
    (None unless both runs ablated at least three shared layers singly); and the largest change, for the scale."""
    peak = 0.0
    deltas: dict[str, tuple[dict[int, float], float]] = {}
    centres: dict[str, tuple[float, float] | None] = {}
    for suite in (s for s in current.suites if s in baseline.suites):
        metric = suite_metric(current, suite, metrics)
        if metric not in baseline.evaluation(suite).outcomes:
            continue
        now, single_now = layer_values(current, suite, metric)
        before, single_before = layer_values(baseline, suite, metric)
        moved = {layer: now[layer][0] - before[layer][0] for layer in now.keys() & before.keys()}
        if not moved:
            continue
        intact_delta = current.evaluation(suite).mean(metric) - baseline.evaluation(suite).mean(metric)
        shared = sorted(moved)
        centres[suite] = (
            (layer_centre(before, shared, num_layers(baseline)), layer_centre(now, shared, num_layers(current)))
            if single_now and single_before and len(shared) >= 3
            else None
        )
        deltas[suite] = (moved, intact_delta)
        peak = max([peak, *(abs(v) for v in moved.values() if math.isfinite(v))])
    return deltas, centres, peak


def _delta_group(
    suite: str, moved: dict[int, float], intact_delta: float, centre: tuple[float, float] | None, scale: float
) -> list[StripRow]:
    """A suite's rows of a delta strip: rises, drops, and the shift in the centre of depth when it is known."""
    rise = _worst(moved, lambda v: v)
    fall = _worst(moved, lambda v: -v)
    up = f"most up L{rise[0]} {rise[1]:+.3f}" if rise and rise[1] > 1e-9 else ""
    down = f"most down L{fall[0]} {fall[1]:+.3f}" if fall and fall[1] < -1e-9 else ""
    group = [
        StripRow(
            suite,
            f"{intact_delta:+.3f} ▲",
            moved,
            up or ("" if down else "no layer moved"),
            max,
            _signed_glyph(scale, True),
        ),
        StripRow("", "▼", moved, down, min, _signed_glyph(scale, False)),
    ]
    if centre is not None and all(math.isfinite(c) for c in centre):
        group.append(
            StripRow(
                "",
                "",
                {},
                f"centre of depth {centre[0]:.2f} → {centre[1]:.2f} ({centre[1] - centre[0]:+.2f} of depth)",
                max,
                _signed_glyph(scale, True),
                text_only=True,
            )
        )
    return group


def delta_strip(
    baseline: DepthProfile, current: DepthProfile, metrics: Sequence[str] | None = None
) -> DepthStrip | None:
    """Two rows per suite both profiles share: where the metric with each layer removed rose and fell.

    Layers evaluated in only one of the two are drawn as not evaluated. The lead is the intact cell's
    change, so a shift that lowers every layer alike reads as the intact change, not as depth.
    None when the two profiles share no layer ablation.
    """
    deltas, centres, peak = _suite_deltas(baseline, current, metrics)
    if not deltas:
        return None
    scale = nice_scale(peak)
    groups = [
        _delta_group(suite, moved, intact_delta, centres.get(suite), scale)
        for suite, (moved, intact_delta) in deltas.items()
    ]
    title = "where it moved: metric with one layer removed, this run − baseline"
    legend = [
        _key(RISE, RISE_STYLES, "rose (▲)"),
        _key(FALL, FALL_STYLES, f"fell (▼), up to {_scale_text(scale)}"),
        _key(MISSING, ("dim",), "not in both runs"),
        _key(EDGE, ("dim",), "band edge"),
    ]
    return DepthStrip(title, groups, current.bands, num_layers(current), legend, "intact Δ")


__all__ = ["DepthStrip", "StripRow", "delta_strip", "layer_values", "nice_scale", "profile_strip", "segments"]
