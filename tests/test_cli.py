"""The command line: user mistakes end in one readable line and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def polydub(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POLYDUB_STACK_DIR": str(tmp / "stack"), "POLYDUB_LOCAL_STORE_DIR": str(tmp / "store")}
    return subprocess.run(
        [sys.executable, "-m", "handlers.cli", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_missing_video_is_one_line_and_exit_2(tmp_path: Path) -> None:
    subs = tmp_path / "s.srt"
    subs.write_text("1\n00:00:00,500 --> 00:00:01,500\nhello\n")
    done = polydub("run", str(tmp_path / "nope.mp4"), "--subs", str(subs), "--to", "ko", tmp=tmp_path)
    assert done.returncode == 2
    assert "nope.mp4" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.startswith("polydub: error:")


def test_unsupported_language_names_the_choices(tmp_path: Path) -> None:
    done = polydub("run", "v.mp4", "--subs", "s.srt", "--to", "fr", tmp=tmp_path)
    assert done.returncode == 2
    assert "unsupported language 'fr'" in done.stderr and "ko, en, ja, zh" in done.stderr


def test_bad_configuration_is_named(tmp_path: Path) -> None:
    env_bad = {**os.environ, "POLYDUB_CHUNK_SECONDS": "banana"}
    done = subprocess.run([sys.executable, "-m", "handlers.cli", "config"], cwd=ROOT, env=env_bad,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "chunk_seconds" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("action", ["status", "down"])
def test_stack_commands_without_a_stack(tmp_path: Path, action: str) -> None:
    done = polydub("stack", action, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_dry_run_prints_the_plan(tmp_path: Path) -> None:
    from handlers.sample import make_sample

    files = make_sample(tmp_path / "clip.mp4", target_lang="ja", seconds=6)
    done = polydub("run", str(files.video), "--subs", str(files.subtitles), "--to", "ja", "--dry-run", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "plan: 1 chunk(s)" in done.stdout and "segments in ja" in done.stdout
