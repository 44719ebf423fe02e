"""The lipsync stage with a crop-based engine (Wav2Lip): track, crop, re-draw, paste; every frame kept.

The renderer is first driven with in-memory stand-ins for the two served
models (what it sends is checked, and what it does with the answers); then the
real pipeline runs a tiny Wav2Lip checkpoint in the official layout over
videos at NTSC frame rates and keeps the frame count exactly.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engines.dsp.mel import WAV2LIP_MEL, mel_windows
from engines.wav2lip.checkpoint import random_wav2lip
from engines.wav2lip.config import Wav2LipConfig
from handlers.lipsync import LipsyncStage, _FaceCropRenderer
from handlers.runtime.bus import MemoryPublisher
from handlers.runtime.facecrop import crop_box, mouth_bounds
from handlers.runtime.inference import ItemsClient, LocalInferenceClient
from handlers.runtime.jobstate import JobState
from handlers.runtime.media import probe
from handlers.runtime.objectstore import LocalObjectStore
from handlers.runtime.settings import Settings
from handlers.runtime.stagekit import StageDeps
from handlers.sample import make_sample
from schemas.events import DubCompleted, DubFailed, EngineChoice, MediaSubmitted, SubtitlesRef
from schemas.registry import FACE_TRACKER
from serving.specs import Batch
from tests.test_stages import Pipeline

FPS = 25.0
FACE = np.array([40.0, 30.0, 120.0, 120.0])  # a face box in the stand-in tracker's frames


class StandIns(ItemsClient):
    """A tracker that finds FACE in every frame but the second, and a "Wav2Lip" that paints crops grey."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Batch]] = []

    async def infer(self, model: str, inputs: Batch) -> Batch:
        self.calls.append((model, inputs))
        if model == FACE_TRACKER:
            n = int(inputs["FRAMES_LENGTH"][0, 0])
            boxes = np.repeat(FACE[None].astype(np.float32), n, axis=0)
            boxes[1] = np.nan
            return {"BOXES": boxes[None], "BOXES_LENGTH": np.array([[n]], dtype=np.int64)}
        return {"FACES": np.full_like(inputs["FACES"], 128)}

    async def close(self) -> None:
        return None


def test_the_renderer_redraws_each_face_crop_with_its_mel_window_and_keeps_frames_without_one(
        tmp_path: Path) -> None:
    settings = Settings(lipsync_crops_per_request=2, face_track_max_side=4096)
    inference = StandIns()
    stage = LipsyncStage(StageDeps(settings, LocalObjectStore(tmp_path), inference, MemoryPublisher()))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8) for _ in range(5)]
    mel = rng.uniform(-4, 4, size=(80, 100)).astype(np.float32)
    renderer = _FaceCropRenderer(stage, "lipsync_wav2lip", mel, FPS)

    rendered, with_face = asyncio.run(renderer.render(frames, start_s=0.4))

    assert with_face == 4 and len(rendered) == 5
    assert rendered[1] is frames[1], "a frame without a face passes through untouched"
    region = crop_box(FACE, frames[0].shape)
    assert region is not None
    y0, y1, x0, x1 = mouth_bounds(region)
    for i in (0, 2, 3, 4):
        changed = np.any(rendered[i] != frames[i], axis=2)
        assert changed[y0:y1, x0:x1].any() and not changed.sum() - changed[y0:y1, x0:x1].sum()
    lipsync = [inputs for model, inputs in inference.calls if model != FACE_TRACKER]
    assert [len(r["FACES"]) for r in lipsync] == [2, 2], "four crops in requests of two"
    sent = np.concatenate([r["MEL"] for r in lipsync])
    expected = mel_windows(mel, 0.4 + np.array([0, 2, 3, 4]) / FPS, WAV2LIP_MEL, 16)
    np.testing.assert_array_equal(sent, expected)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generator in the official layout (DataParallel prefix, optimizer state)."""
    path = tmp_path_factory.mktemp("wav2lip") / "wav2lip.pth"
    model = random_wav2lip(Wav2LipConfig.tiny(), seed=7)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "optimizer": {}, "global_step": 1, "global_epoch": 1}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fps", [24000 / 1001, 30000 / 1001], ids=["23.976", "29.97"])
def test_every_frame_comes_out_at_ntsc_rates(fps: float, checkpoint: Path, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "in.mp4", target_lang="en", seconds=4, fps=fps, size=(320, 240))
    settings = Settings(object_store="local", local_store_dir=tmp_path / "store", chunk_seconds=3.0,
                        trace_file=tmp_path / "spans.jsonl", lipsync_frames_per_call=40,
                        wav2lip_checkpoint=checkpoint, device="cpu")
    inference = LocalInferenceClient.from_settings(settings)
    pipeline = Pipeline(settings, LocalObjectStore(settings.local_store_dir), inference)
    submitted = MediaSubmitted(
        job_id=f"w2l-{uuid.uuid4().hex[:8]}", source_uri=sample.video.resolve().as_uri(), target_lang="en",
        subtitles=SubtitlesRef(uri=sample.subtitles.resolve().as_uri(), format="srt"),
        engines=EngineChoice(tts="espeak", vc="none", lipsync="wav2lip"))

    asyncio.run(pipeline.drive([submitted]))

    outcome: Any = (pipeline.publisher.of_type(DubCompleted) + pipeline.publisher.of_type(DubFailed))[0]
    assert not isinstance(outcome, DubFailed) or outcome.stage == "qc", outcome  # noise may fail QC, nothing else
    state = JobState(pipeline.store, submitted.job_id)
    chunks = state.read_json("plan.json")["chunks"]
    assert len(chunks) == 2
    source = probe(sample.video)
    rows = state.rows(len(chunks))
    for chunk, row in zip(chunks, rows):
        details = row.details["lipsync"]
        first, last = int(np.ceil(chunk["start_s"] * fps - 1e-3)), int(np.ceil(chunk["end_s"] * fps - 1e-3))
        assert details["frames"] == last - first, "every frame of the chunk's window rendered"
        assert details["face_frames"] > 0.8 * details["frames"], "the face was tracked"
        chunk_video = pipeline.store.get_file(row.outputs["lipsync"], tmp_path / f"chunk-{row.chunk_index}.mp4")
        assert probe(chunk_video).n_frames == last - first
    merged = state.read_json("state/merge.json")
    assert probe(pipeline.store.get_file(merged["video"], tmp_path / "out.mp4")).n_frames == source.n_frames


@pytest.mark.slow
@pytest.mark.e2e
def test_polydub_run_with_wav2lip_on_a_1280x720_sample(tmp_path: Path) -> None:
    """``--lipsync wav2lip`` end to end on HD video, the published size with random weights.

    The random generator draws noise over the mouth, so QC may rightly fail the
    lip sync: what this shows is the whole path at 1280x720 (tracking, crops,
    batched generation, paste, merge, QC measuring the result).
    """
    import json
    import os
    import subprocess
    import sys

    sample = make_sample(tmp_path / "hd.mp4", target_lang="en", seconds=4, size=(1280, 720))
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYDUB_")}
    env.update(POLYDUB_WAV2LIP_RANDOM_INIT="true", POLYDUB_DEVICE="cpu", POLYDUB_LOCAL_STORE_DIR=str(tmp_path / "store"),
               POLYDUB_TRACE_FILE=str(tmp_path / "spans.jsonl"))
    out = tmp_path / "out" / "dub.mp4"
    done = subprocess.run([sys.executable, "-m", "handlers.cli", "run", str(sample.video), "--subs",
                           str(sample.subtitles), "--to", "en", "--vc", "none", "--lipsync", "wav2lip", "-o", str(out)],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode in (0, 3), done.stderr  # 3: QC failed the noise, with reasons
    judged = out if done.returncode == 0 else out.with_name("dub.qc-failed.mp4")  # kept beside the output
    assert judged.stat().st_size > 0
    report = json.loads(judged.with_suffix(".qc.json").read_text())
    assert report["engines"]["lipsync"] == "wav2lip"
    assert abs(report["media"]["output_duration_s"] - report["media"]["source_duration_s"]) <= 1 / 25 + 1e-6
    assert all(chunk["face_frames"] > 0.8 * chunk["frames"] for chunk in report["chunks"]), report["chunks"]
