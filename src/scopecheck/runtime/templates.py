"""The Jinja environment of every HTML page scopecheck renders (the run report of
:mod:`scopecheck.report.html`, the claim-audit table of :mod:`scopecheck.audit.table_render`):
templates are package data of the module that renders them, autoescaped (a contract's text,
a claim's citation and every model output are data, never markup), and a name the template
uses that the renderer does not pass is an error (``StrictUndefined``), not an empty string.

Jinja2 is imported when a page is first rendered, not when a renderer is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["html_templates"]


def html_templates(package: str) -> Any:
    """The ``jinja2.Environment`` over the ``templates/`` folder of ``package`` (e.g.
    ``"scopecheck.report"``): autoescaped, strict about undefined names, block tags trimmed,
    the trailing newline kept."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
