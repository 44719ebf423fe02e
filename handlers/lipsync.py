"""lipsync: ``chunk.converted`` -> ``chunk.rendered``.

Re-syncs the mouth in the chunk's window of the source video to the dubbed
speech with the job's lip-sync model, and writes the chunk's frames as a
video-only MP4 (high quality: it is re-encoded once more at merge). Frames go
to the model in slices of ``POLYDUB_LIPSYNC_FRAMES_PER_CALL`` with the audio
of the same span, so a request's size stays bounded whatever the resolution.
With ``lipsync = none`` the stage passes the audio on and merging keeps the
source frames untouched.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np

from handlers.runtime import keys
from handlers.runtime.jobstate import JobState
from handlers.runtime.media import encode_mp4, iter_frames
from handlers.runtime.stagekit import StageBase
from schemas.events import ChunkConverted, ChunkRendered
from schemas.status import StatusCode
from serving.interfaces import LIPSYNC
from serving.specs import scalar


def lipsync_model_name(engine: str) -> str:
    return f"lipsync_{engine}"


def window_frame_range(start_s: float, end_s: float, fps: float) -> tuple[int, int]:
    """Frame indices ``[first, last)`` shown in ``[start_s, end_s)`` (frame k at k/fps)."""
    tolerance = 1e-3
    return math.ceil(start_s * fps - tolerance), math.ceil(end_s * fps - tolerance)


class LipsyncStage(StageBase):
    """Re-sync the mouth in the chunk's frames to the dubbed speech."""

    name = "lipsync"
    consumes = ChunkConverted

    async def handle(self, event: ChunkConverted, attempt: int) -> None:
        state = self.job(event.job_id)
        if state.is_marked("failed"):
            return
        manifest = await self.manifest(event.job_id)
        engine = manifest["engines"]["lipsync"]
        video_uri: str | None = None
        if engine == "none":
            await self.record_chunk(state, event.chunk_index, None, 0.0, lipsync={"engine": engine})
        elif (done_key := (await self.finished_output(state, event.chunk_index))[0]) is not None:
            video_uri = self.store.uri(done_key)
        else:
            video_uri = await self._render(event, manifest, state, engine)
        await self.publisher.publish(
            ChunkRendered(
                job_id=event.job_id,
                chunk_index=event.chunk_index,
                n_chunks=event.n_chunks,
                audio_uri=event.audio_uri,
                video_uri=video_uri,
                engine=engine,
            )
        )
        await self.emit_chunk_status(event.job_id, StatusCode.LIP_SYNCED, event.n_chunks)

    async def _render(self, event: ChunkConverted, manifest: dict[str, Any], state: JobState,
                      engine: str) -> str:
        started = time.perf_counter()
        chunk = (await self.plan(event.job_id))["chunks"][event.chunk_index]
        fps = float(manifest["media"]["fps"])
        audio, rate = await self.run_blocking(self.get_audio, self.key_of(event.audio_uri))
        source = await self.run_blocking(self.local_copy, manifest["source_key"])
        first, last = window_frame_range(chunk["start_s"], chunk["end_s"], fps)
        per_call = self.settings.lipsync_frames_per_call

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
                frames = iter_frames(source, first / fps, last / fps)
                for offset, batch in _slices(frames, per_call):
                    t0 = (first + offset) / fps - chunk["start_s"]
                    a = max(0, int(round(t0 * rate)))
                    b = max(a + 1, int(round((t0 + len(batch) / fps) * rate)))
                    clip = np.zeros(b - a, dtype=np.float32)
                    piece = audio[a:b]
                    clip[: piece.size] = piece
                    (out,) = await self.inference.infer_items(lipsync_model_name(engine), LIPSYNC, [{
                        "FRAMES": np.stack(batch), "AUDIO": clip, "SAMPLE_RATE": np.int32(rate),
                        "FPS": np.float32(fps)}])
                    faces += int(scalar(out, "FACE_FRAMES"))
                    count += len(out["FRAMES"])
                    await asyncio.to_thread(queue.put, list(out["FRAMES"]))
            finally:
                await asyncio.to_thread(queue.put, None)
                await encoding
            await self.run_blocking(self.store.put_file, key, path)
        await self.record_chunk(state, event.chunk_index, key, time.perf_counter() - started,
                                lipsync={"engine": engine, "frames": count, "face_frames": faces,
                                         "first_frame": first})
        return self.store.uri(key)


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
