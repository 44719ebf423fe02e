"""Regenerate the parts of the README that are derived from code.

The settings table sits between ``<!-- settings:start -->`` and
``<!-- settings:end -->``; ``make generate`` rewrites it from
:class:`handlers.runtime.settings.Settings` and ``tests/test_docs.py`` fails
when it is stale. It lives in ``handlers`` because it reads the settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

from handlers.runtime.settings import settings_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def render_readme(text: str) -> str:
    """``text`` with its settings table replaced by the one the settings render now."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{settings_markdown()}\n{END}{tail}"


if __name__ == "__main__":
    README.write_text(render_readme(README.read_text()))
    sys.stdout.write(f"wrote {README}\n")
