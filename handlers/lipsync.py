"""lipsync: ``chunk.converted`` -> ``chunk.rendered``.

Re-syncs the mouth in the chunk's window of the source video to the dubbed
speech with the job's lip-sync model, and writes the chunk's frames as a
video-only MP4 (high quality: it is re-encoded once more at merge). Frames are
decoded, rendered and encoded in slices of ``POLYDUB_LIPSYNC_FRAMES_PER_CALL``
(in threads, through a bounded queue), so memory stays bounded by the slice,
not by the chunk or the video. What a slice sends its model depends on what the
engine feeds on (``schemas.registry``):

* ``frames`` (mouth warp): the slice's frames and the audio of the same span;
* ``face_crops`` (Wav2Lip): the face is tracked on downscaled frames
  (``face_tracker``), cut out with the published padding at 96x96, and sent
  with its frame's mel window as concurrent requests of
  ``POLYDUB_LIPSYNC_CROPS_PER_REQUEST`` crops, which the server batches across
  chunks and jobs; the re-drawn mouths are pasted back feathered and
  colour-matched (:mod:`handlers.runtime.facecrop`). Frames without a face
  pass through untouched.

With ``lipsync = none`` the stage passes the audio on and merging keeps the
source frames untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any, Protocol

import cv2
import numpy as np

from engines.dsp import resample
from engines.dsp.mel import WAV2LIP_MEL, log_mel, mel_windows
from handlers.runtime import keys
from handlers.runtime.facecrop import CropBox, crop_box, crop_face, paste_mouth
from handlers.runtime.frames import audio_for_frames, window_frame_range
from handlers.runtime.jobstate import ChunkRow
from handlers.runtime.media import encode_mp4, iter_frames
from handlers.runtime.stagekit import ChunkOutput, ChunkStage
from schemas.events import ChunkConverted, ChunkRendered
from schemas.registry import FACE_TRACKER, EngineInfo
from serving.interfaces import FACE_LIPSYNC, FACE_TRACK, LIPSYNC
from serving.specs import scalar

#: Frames of the previous slice sent again before a slice, so the tracker's smoothing
#: carries over the slice boundary instead of restarting.
TRACK_WARMUP_FRAMES = 5
#: Side of the crops a crop-based engine takes (Wav2Lip's), and its mel window length.
CROP_SIZE = FACE_LIPSYNC.inputs[0].dims[0]
MEL_STEPS = FACE_LIPSYNC.inputs[1].dims[1]


class _Renderer(Protocol):
    async def render(self, frames: list[np.ndarray], start_s: float) -> tuple[list[np.ndarray], int]:
        """The slice's frames re-synced, and how many had a face; ``start_s`` is its time in the chunk."""
        ...


class LipsyncStage(ChunkStage[ChunkConverted]):
    """Re-sync the mouth in the chunk's frames to the dubbed speech."""

    name = "lipsync"
    consumes = ChunkConverted

    def passthrough(self, event: ChunkConverted) -> None:
        return None  # no chunk video: merging keeps the source frames untouched

    def next_event(self, event: ChunkConverted, manifest: dict[str, Any], row: ChunkRow) -> ChunkRendered:
        return ChunkRendered(
            job_id=event.job_id,
            chunk_index=event.chunk_index,
            n_chunks=event.n_chunks,
            audio_uri=event.audio_uri,
            video_uri=self.output_uri(row),
            engine=row.details[self.name]["engine"],
        )

    async def work(self, event: ChunkConverted, manifest: dict[str, Any], choice: EngineInfo | None) -> ChunkOutput:
        assert choice is not None and choice.model is not None
        chunk = (await self.plan(event.job_id))["chunks"][event.chunk_index]
        fps = float(manifest["media"]["fps"])
        audio, rate = await self.run_blocking(self.get_audio, self.key_of(event.audio_uri))
        source = await self.run_blocking(self.local_copy, manifest["source_key"])
        first, last = window_frame_range(chunk["start_s"], chunk["end_s"], fps)
        renderer: _Renderer
        if choice.feeds == "face_crops":
            mel = await self.run_blocking(_chunk_mel, audio, rate)
            renderer = _FaceCropRenderer(self, choice.model, mel, fps)
        else:
            renderer = _FrameRenderer(self, choice.model, audio, rate, fps)

        key = keys.chunk_output_key(event.job_id, event.chunk_index, self.name, "video.mp4")
        faces = 0
        count = 0
        with tempfile.TemporaryDirectory(prefix="polydub-lipsync-") as tmp:
            path = Path(tmp) / "chunk.mp4"
            # The encoder runs in a thread fed through a bounded queue, so at most
            # a few slices of frames are in memory whatever the chunk's size.
            queue: Queue[list[np.ndarray] | None] = Queue(maxsize=2)
            encoding = asyncio.ensure_future(asyncio.to_thread(
                encode_mp4, path, _drain(queue), fps, None, None, crf=self.settings.intermediate_crf
            ))
            try:
                # Decoding runs in a thread too: the event loop only hands slices on.
                slices = _slices(iter_frames(source, first / fps, last / fps), self.settings.lipsync_frames_per_call)
                while (piece := await asyncio.to_thread(next, slices, None)) is not None:
                    offset, batch = piece
                    rendered, with_face = await renderer.render(batch, (first + offset) / fps - chunk["start_s"])
                    faces += with_face
                    count += len(rendered)
                    await asyncio.to_thread(queue.put, rendered)
            except BaseException:
                # The encoder is told to stop and then fails (no frames, a cut stream):
                # its error must not mask the one that stopped us (an inference failure).
                if not encoding.done():
                    await asyncio.to_thread(queue.put, None)
                with contextlib.suppress(Exception):
                    await encoding
                raise
            await asyncio.to_thread(queue.put, None)
            await encoding
            await self.run_blocking(self.store.put_file, key, path)
        return ChunkOutput(key, {"frames": count, "face_frames": faces, "first_frame": first})


class _FrameRenderer:
    """Whole frames and the audio of their span to a frame-based model (the mouth warp)."""

    def __init__(self, stage: LipsyncStage, model: str, audio: np.ndarray, rate: int, fps: float) -> None:
        self.stage, self.model, self.audio, self.rate, self.fps = stage, model, audio, rate, fps

    async def render(self, frames: list[np.ndarray], start_s: float) -> tuple[list[np.ndarray], int]:
        clip = audio_for_frames(self.audio, self.rate, start_s, len(frames), self.fps)
        (out,) = await self.stage.inference.infer_items(self.model, LIPSYNC, [{
            "FRAMES": np.stack(frames), "AUDIO": clip, "SAMPLE_RATE": np.int32(self.rate),
            "FPS": np.float32(self.fps)}])
        return list(out["FRAMES"]), int(scalar(out, "FACE_FRAMES"))


class _FaceCropRenderer:
    """Tracked, padded 96x96 face crops and their mel windows to a crop-based model (Wav2Lip)."""

    def __init__(self, stage: LipsyncStage, model: str, mel: np.ndarray, fps: float) -> None:
        self.stage, self.model, self.mel, self.fps = stage, model, mel, fps
        self.settings = stage.settings
        self._warmup: list[np.ndarray] = []  # the previous slice's last downscaled frames

    async def render(self, frames: list[np.ndarray], start_s: float) -> tuple[list[np.ndarray], int]:
        boxes = await self._boxes(frames)
        regions, crops = await asyncio.to_thread(_crops, frames, boxes)
        faced = [i for i, region in enumerate(regions) if region is not None]
        if not faced:
            return frames, 0
        offsets = np.maximum(0.0, start_s + np.asarray(faced, dtype=np.float64) / self.fps)
        windows = mel_windows(self.mel, offsets, WAV2LIP_MEL, MEL_STEPS)
        step = self.settings.lipsync_crops_per_request
        requests = [
            self.stage.inference.infer_items(self.model, FACE_LIPSYNC, [
                {"FACES": crops[k], "MEL": windows[k]} for k in range(begin, min(begin + step, len(faced)))])
            for begin in range(0, len(faced), step)
        ]
        answers = [item["FACES"] for answer in await asyncio.gather(*requests) for item in answer]
        drawn = dict(zip(faced, answers, strict=True))
        rendered = await asyncio.to_thread(_pasted, frames, regions, drawn)
        return rendered, len(faced)

    async def _boxes(self, frames: list[np.ndarray]) -> np.ndarray:
        """Face boxes in full-frame pixels, tracked on downscaled frames after the warm-up ones."""
        small, scale = await asyncio.to_thread(_downscaled, frames, self.settings.face_track_max_side)
        sent = self._warmup + small
        (out,) = await self.stage.inference.infer_items(FACE_TRACKER, FACE_TRACK, [{"FRAMES": np.stack(sent)}])
        self._warmup = small[-TRACK_WARMUP_FRAMES:]
        return np.asarray(out["BOXES"], dtype=np.float64)[len(sent) - len(small):] / scale


def _chunk_mel(audio: np.ndarray, rate: int) -> np.ndarray:
    """The chunk's dub as the Wav2Lip log-mel (computed once per chunk, windowed per frame)."""
    return log_mel(resample(audio, rate, WAV2LIP_MEL.sample_rate, np.float64), WAV2LIP_MEL)


def _downscaled(frames: list[np.ndarray], max_side: int) -> tuple[list[np.ndarray], float]:
    scale = min(1.0, max_side / max(frames[0].shape[:2]))
    if scale >= 1.0:
        return frames, 1.0
    size = (max(1, round(frames[0].shape[1] * scale)), max(1, round(frames[0].shape[0] * scale)))
    small = [cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames]
    return small, size[0] / frames[0].shape[1]


def _crops(frames: list[np.ndarray], boxes: np.ndarray) -> tuple[list[CropBox | None], list[np.ndarray]]:
    regions = [crop_box(box, frame.shape) for frame, box in zip(frames, boxes, strict=True)]
    crops = [crop_face(frame, region, CROP_SIZE) for frame, region in zip(frames, regions, strict=True)
             if region is not None]
    return regions, crops


def _pasted(frames: list[np.ndarray], regions: list[CropBox | None],
            drawn: dict[int, np.ndarray]) -> list[np.ndarray]:
    return [paste_mouth(frame, drawn[i], region) if region is not None else frame
            for i, (frame, region) in enumerate(zip(frames, regions, strict=True))]


def _drain(queue: Queue[list[np.ndarray] | None]) -> Iterator[np.ndarray]:
    """Frames from the queue until the ``None`` that ends the chunk."""
    while (batch := queue.get()) is not None:
        yield from batch


def _slices(frames: Iterator[np.ndarray], size: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Consecutive slices of at most ``size`` frames, with each slice's offset."""
    batch: list[np.ndarray] = []
    offset = 0
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield offset, batch
            offset += len(batch)
            batch = []
    if batch:
        yield offset, batch
