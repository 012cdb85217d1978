"""Renderers of a profile and its comparison: terminal, markdown/GitHub, JSON, heatmap and an HTML page.

Each lives in its own module; matplotlib is imported only when a heatmap is drawn.
"""

from pytest_layercheck.report.heatmap import plot_layer_heatmap
from pytest_layercheck.report.html_page import render_html, write_html_report
from pytest_layercheck.report.json_report import build_json_report, write_json_report
from pytest_layercheck.report.markdown import (
    append_step_summary,
    github_annotations,
    markdown_table,
    render_markdown,
)
from pytest_layercheck.report.terminal import (
    profile_table,
    render_terminal,
    terminal_renderable,
)

__all__ = [
    "append_step_summary",
    "build_json_report",
    "github_annotations",
    "markdown_table",
    "plot_layer_heatmap",
    "profile_table",
    "render_html",
    "render_markdown",
    "render_terminal",
    "terminal_renderable",
    "write_html_report",
    "write_json_report",
]
