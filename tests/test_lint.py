"""Pyflakes and import order over the whole tree (ruff, configured in pyproject.toml).

Unused imports and names, undefined names and a shadowed import are bugs or
dead code waiting; import order keeps the arrows between our packages easy
to read (and to check, in tests/test_layering.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format=concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
