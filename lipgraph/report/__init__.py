"""Reports: one document (the JSON view model of design §5, ``document.to_json``) and its
renderings. ``FORMATS`` is the registry ``--format`` offers: name → render(analysis, model
path, verbose) → text."""
from __future__ import annotations

from lipgraph.report import html, text
from lipgraph.report.document import dumps, to_json


def to_text(a, path: str, verbose: bool = False) -> str:
    return text.render(to_json(a, path), verbose)


def summary_line(a) -> str:
    return text.summary(to_json(a, ""))


def render_json(a, path: str, verbose: bool = False) -> str:
    return dumps(to_json(a, path)) + "\n"


def render_html(a, path: str, verbose: bool = False) -> str:
    return html.render(to_json(a, path))


FORMATS = {"text": to_text, "json": render_json, "html": render_html}

__all__ = ["FORMATS", "dumps", "summary_line", "to_json", "to_text"]
