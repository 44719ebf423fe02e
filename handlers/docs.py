"""Regenerate the parts of the README that are derived from code.

Each generated part sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``:
the settings table (from :class:`handlers.runtime.settings.Settings`) and the
engine table (from ``schemas.registry``). ``make generate`` rewrites them and
``tests/test_docs.py`` fails when one is stale. It lives in ``handlers``
because it reads the settings.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from handlers.runtime.settings import settings_markdown
from schemas.registry import DEFAULT_ENGINES, ENGINES

README = Path(__file__).resolve().parents[1] / "README.md"


def engines_markdown() -> str:
    """A Markdown table of every engine choice: its served model, what it needs, whether it runs yet."""
    rows = ["| choice | served model | needs | what it is |", "| --- | --- | --- | --- |"]
    for info in ENGINES:
        default = " (default)" if DEFAULT_ENGINES[info.kind] == info.name else ""
        model = f"`{info.model}`" if info.model else "none: the stage passes its input through"
        if not info.served:
            needs = "not served by this release (refused before any work)"
        elif info.needs:
            needs = " or ".join(" + ".join(f"`POLYDUB_{f.upper()}`" for f in option) for option in info.needs)
        else:
            needs = "nothing"
        rows.append(f"| `--{info.kind} {info.name}`{default} | {model} | {needs} | {info.description} |")
    return "\n".join(rows)


#: Generated README parts by marker name.
SECTIONS: dict[str, Callable[[], str]] = {"settings": settings_markdown, "engines": engines_markdown}


def render_readme(text: str) -> str:
    """``text`` with every generated part replaced by what the code renders now."""
    for name, render in SECTIONS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{render()}\n{end}{tail}"
    return text


if __name__ == "__main__":
    README.write_text(render_readme(README.read_text()))
    sys.stdout.write(f"wrote {README}\n")
