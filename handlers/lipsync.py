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
import tempfile
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np

from handlers.runtime import keys
from handlers.runtime.frames import audio_for_frames, window_frame_range
from handlers.runtime.jobstate import ChunkRow
from handlers.runtime.media import encode_mp4, iter_frames
from handlers.runtime.stagekit import ChunkOutput, ChunkStage
from schemas.events import ChunkConverted, ChunkRendered
from schemas.registry import EngineInfo
from serving.interfaces import LIPSYNC
from serving.specs import scalar


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
                # Decoding runs in a thread too: the event loop only hands slices on.
                slices = _slices(iter_frames(source, first / fps, last / fps), per_call)
                while (piece := await asyncio.to_thread(next, slices, None)) is not None:
                    offset, batch = piece
                    clip = audio_for_frames(audio, rate, (first + offset) / fps - chunk["start_s"], len(batch), fps)
                    (out,) = await self.inference.infer_items(choice.model, LIPSYNC, [{
                        "FRAMES": np.stack(batch), "AUDIO": clip, "SAMPLE_RATE": np.int32(rate),
                        "FPS": np.float32(fps)}])
                    faces += int(scalar(out, "FACE_FRAMES"))
                    count += len(out["FRAMES"])
                    await asyncio.to_thread(queue.put, list(out["FRAMES"]))
            finally:
                await asyncio.to_thread(queue.put, None)
                await encoding
            await self.run_blocking(self.store.put_file, key, path)
        return ChunkOutput(key, {"frames": count, "face_frames": faces, "first_frame": first})


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
