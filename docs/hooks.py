"""MkDocs hook: every page under ``docs/guide/`` joins the navigation's "Guides" section (sorted
by file name), so a guide page added on any branch is built and reachable without editing
``mkdocs.yml``; any other page left out of ``nav`` is still an error under ``--strict``."""

from __future__ import annotations

from pathlib import Path


def on_config(config, **kwargs):
    guide = Path(config["docs_dir"]) / "guide"
    pages = sorted(p.relative_to(config["docs_dir"]).as_posix() for p in guide.glob("*.md")) if guide.is_dir() else []
    if pages and config["nav"] is not None:
        nav = [item for item in config["nav"] if not (isinstance(item, dict) and "Guides" in item)]
        at = next((i for i, item in enumerate(nav) if isinstance(item, dict) and "Reference" in item), len(nav))
        nav.insert(at, {"Guides": pages})
        config["nav"] = nav
    return config
