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


# --- RVC voices ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rvc_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from tests.fixtures.rvc import write_content_encoder, write_voice

    root = tmp_path_factory.mktemp("rvc")
    write_voice(root / "voices", "alice", seed=1)
    write_voice(root / "voices", "bob", seed=2, f0=False)
    return {"POLYDUB_RVC_VOICES_DIR": str(root / "voices"),
            "POLYDUB_RVC_CONTENT_ENCODER": str(write_content_encoder(root / "hubert_base.pt"))}


@pytest.mark.parametrize("args, message", [
    (("--vc", "rvc", "--voice", "carol"), "unknown RVC voice(s) ['carol']"),
    (("--vc", "rvc"), "converts to a named voice, and none is given"),
    (("--voice", "alice"), "its vc engine is 'world', which has no named voices"),
    (("--vc", "rvc", "--pitch-shift", "3"), "--pitch-shift shifts a named voice"),
    (("--vc", "rvc", "--voice", "alice", "--pitch-shift", "40"), "less than or equal to 24"),
])
def test_a_voice_the_run_cannot_use_is_refused_before_any_work(tmp_path: Path, rvc_env: dict[str, str],
                                                                args: tuple[str, ...], message: str) -> None:
    env = {**os.environ, **rvc_env, "POLYDUB_LOCAL_STORE_DIR": str(tmp_path / "store")}
    done = subprocess.run([sys.executable, "-m", "handlers.cli", "run", "v.mp4", "--subs", "s.srt", "--to", "ko",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    if "carol" in args:
        assert "voices available: alice, bob" in done.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_polydub_run_with_an_rvc_voice(tmp_path: Path, rvc_env: dict[str, str]) -> None:
    """``--vc rvc --voice alice`` end to end over the embedded broker; QC holds it to the neural target."""
    import json

    from handlers.sample import make_sample

    sample = make_sample(tmp_path / "sample.mp4", target_lang="ko", seconds=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYDUB_")}
    env.update(rvc_env, POLYDUB_DEVICE="cpu", POLYDUB_LOCAL_STORE_DIR=str(tmp_path / "store"),
               POLYDUB_TRACE_FILE=str(tmp_path / "spans.jsonl"))
    out = tmp_path / "out" / "dub.mp4"
    done = subprocess.run([sys.executable, "-m", "handlers.cli", "run", str(sample.video), "--subs",
                           str(sample.subtitles), "--to", "ko", "--vc", "rvc", "--voice", "alice", "--pitch-shift",
                           "2", "--lipsync", "none", "-o", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    # Random-weight voices do not reach the neural similarity target: QC fails the dub (exit 3),
    # and the video it judged is kept beside the requested output, named as failed, with its report.
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "speaker_similarity" in done.stderr, done.stderr
    candidate = out.with_name("dub.qc-failed.mp4")
    assert not out.exists() and candidate.stat().st_size > 0
    assert f"kept as {candidate}" in done.stderr, done.stderr
    assert candidate.with_suffix(".ko.srt").read_text().strip()
    assert candidate.with_suffix(".qc.html").exists()
    report = json.loads(candidate.with_suffix(".qc.json").read_text())
    assert not report["passed"] and "speaker_similarity" in report["failed_checks"]
    assert report["engines"]["vc"] == "rvc"
    assert report["thresholds"]["engine_set"] == "neural", report["thresholds"]
    assert abs(report["media"]["output_duration_s"] - report["media"]["source_duration_s"]) <= 1 / 25 + 1e-6


#: Real Japanese subtitle lines, kanji and kana as any Japanese subtitle file has them (eSpeak alone
#: read each kanji as "Chinese letter": the lines were sped up 3.42x, 2.44x and 2.23x and failed QC).
KANJI_LINES = ("今日は良い天気ですね。", "東京駅で会いましょう。", "3時に改札の前で待っています。")


@pytest.mark.slow
@pytest.mark.e2e
def test_a_japanese_kanji_dub_passes_qc_with_no_segment_past_the_speed_up_bound(tmp_path: Path) -> None:
    import dataclasses
    import json

    from handlers.runtime.subtitles import parse_subtitles, to_srt
    from handlers.sample import make_sample

    sample = make_sample(tmp_path / "sample.mp4", target_lang="ja", seconds=8)
    cues = parse_subtitles(sample.subtitles)[: len(KANJI_LINES)]
    kanji = tmp_path / "kanji.srt"
    kanji.write_text(to_srt([dataclasses.replace(c, text=t) for c, t in zip(cues, KANJI_LINES, strict=True)]),
                     encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYDUB_")}
    env.update(POLYDUB_LOCAL_STORE_DIR=str(tmp_path / "store"), POLYDUB_TRACE_FILE=str(tmp_path / "spans.jsonl"))
    out = tmp_path / "out" / "dub.mp4"
    done = subprocess.run([sys.executable, "-m", "handlers.cli", "run", str(sample.video), "--subs", str(kanji),
                           "--to", "ja", "-o", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.with_suffix(".qc.json").read_text())
    assert report["passed"], report["failed_checks"]
    speedups = [s["speedup"] for s in report["segments"]]
    assert len(speedups) == len(KANJI_LINES) and max(speedups) <= 1.35 * 1.001, speedups
    assert all(s["on_time"] for s in report["segments"]), report["segments"]


def test_a_clip_too_short_to_dub_is_an_input_error_exit_2(tmp_path: Path) -> None:
    """A 0.5 s clip is refused before any work, naming the file, not retried into exit 3."""
    from tests.test_media import make_video

    video = make_video(tmp_path / "short.mp4", duration_s=0.5)
    subs = tmp_path / "s.srt"
    subs.write_text("1\n00:00:00,100 --> 00:00:00,400\nhello\n")
    done = polydub("run", str(video), "--subs", str(subs), "--to", "en", "-o", str(tmp_path / "out.mp4"),
                   tmp=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "short.mp4" in done.stderr and "shorter than the 1.00 s" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("which", ["video", "subtitles"])
def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path: Path, which: str) -> None:
    """``-o`` the video itself, or an output whose subtitles (OUT.LANG.srt) are the given subtitles."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not touched")
    output = video if which == "video" else tmp_path / "out.mp4"
    subs = tmp_path / ("clip.srt" if which == "video" else "out.en.srt")
    subs.write_text("1\n00:00:00,100 --> 00:00:00,400\nhello\n")
    done = polydub("run", str(video), "--subs", str(subs), "--to", "en", "-o", str(output), tmp=tmp_path)
    assert done.returncode == 2, done.stderr
    named = video if which == "video" else subs
    assert f"would overwrite the input {named}" in done.stderr, done.stderr
    assert video.read_bytes() == b"not touched"
