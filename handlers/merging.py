"""merging: every ``chunk.rendered`` of a job -> ``job.merged``.

Each rendered chunk is counted from the store (``_done`` markers), never from
memory, so any worker of the group can see the job complete and a restart
loses nothing. When the last chunk is in, the merge:

1. joins the chunks' dub audio by overlap-add with a crossfade over each
   shared second (:mod:`handlers.runtime.mix`);
2. mixes it over the original soundtrack, ducked while the dub speaks,
   normalises the loudness (``POLYDUB_LOUDNESS_TARGET_LUFS``) under a peak
   ceiling;
3. joins the lip-synced frames the same way (or copies the source video
   stream untouched when lip-sync is off) and muxes an MP4 with the source's
   exact duration;
4. writes the dub track, the target subtitles and the video under
   ``jobs/{id}/output/``, then emits ``job.merged``.

All of a job's ``chunk.rendered`` events share a partition (keyed by job), so
one consumer sees them in order; the ``merged`` marker makes a redelivery a
no-op.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from handlers.lipsync import window_frame_range
from handlers.runtime import keys
from handlers.runtime.jobstate import JobState
from handlers.runtime.media import decode_audio, encode_mp4, iter_frames, mux_audio
from handlers.runtime.mix import (
    blend_frames,
    duck_gain,
    fit_length,
    frame_weight,
    normalize_loudness,
    overlap_add,
    speech_mask,
)
from handlers.runtime.stagekit import StageBase
from handlers.runtime.subtitles import Segment, to_srt
from schemas.events import ChunkRendered, JobMerged
from schemas.status import StatusCode

OUTPUT_VIDEO = "dubbed.mp4"
OUTPUT_DUB_TRACK = "dub.wav"
OUTPUT_MIX = "mix.wav"


def subtitles_name(lang: str) -> str:
    return f"subtitles.{lang}.srt"


class MergingStage(StageBase):
    """Join the chunks into the dubbed video once all are rendered."""

    name = "merging"
    consumes = ChunkRendered

    async def handle(self, event: ChunkRendered, attempt: int) -> None:
        state = self.job(event.job_id)
        if state.is_marked("failed") or state.is_marked("merged"):
            return
        done = await self.run_blocking(state.count_done, "lipsync")
        if done < event.n_chunks:
            return
        manifest = await self.manifest(event.job_id)
        plan = await self.plan(event.job_id)
        await self.emit_status(event.job_id, StatusCode.LIP_SYNCED, 0.0, done, event.n_chunks,
                               message="merging chunks")
        outputs = await self.run_blocking(self._merge, state, manifest, plan)
        await self.publisher.publish(
            JobMerged(
                job_id=event.job_id,
                output_video_uri=self.store.uri(outputs["video"]),
                dub_audio_uri=self.store.uri(outputs["dub"]),
                subtitles_uri=self.store.uri(outputs["subtitles"]),
                duration_s=manifest["media"]["duration_s"],
            )
        )
        await self.run_blocking(state.mark, "merged", outputs)
        await self.emit_status(event.job_id, StatusCode.MERGED, 1.0, done, event.n_chunks)

    def _merge(self, state: JobState, manifest: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        job_id = state.job_id
        chunks = plan["chunks"]
        rows = state.rows(len(chunks))
        rate = self.settings.sample_rate
        duration = manifest["media"]["duration_s"]
        total = int(round(duration * rate))

        pieces = []
        spans: dict[int, tuple[float, float]] = {}
        for chunk, row in zip(chunks, rows):
            audio_key = row.outputs.get("conversion") or row.outputs["synthesis"]
            audio, _ = self.get_audio(audio_key)
            pieces.append((int(round(chunk["start_s"] * rate)), audio))
            for fit in row.details.get("segment_fits", []):
                spans[fit["segment_index"]] = (fit["slot_start_s"], fit["slot_start_s"] + fit["speech_s"])
        dub = overlap_add(pieces, total)

        out_rate = self.settings.output_audio_rate
        source = self.local_copy(manifest["source_key"])
        original = decode_audio(source, out_rate)
        original = fit_length(original, int(round(duration * out_rate)))
        dub_out = fit_length(resample_poly(dub, out_rate, rate).astype(np.float32), original.size)
        gain = duck_gain(speech_mask(list(spans.values()), original.size, out_rate), out_rate,
                         self.settings.duck_db, self.settings.duck_attack_s, self.settings.duck_release_s)
        mix, gain_db = normalize_loudness(original * gain + dub_out, out_rate,
                                          self.settings.loudness_target_lufs, self.settings.true_peak_dbfs)

        outputs = {
            "video": keys.output_key(job_id, OUTPUT_VIDEO),
            "dub": keys.output_key(job_id, OUTPUT_DUB_TRACK),
            "mix": keys.output_key(job_id, OUTPUT_MIX),
            "subtitles": keys.output_key(job_id, subtitles_name(manifest["target_lang"])),
        }
        self.put_audio(outputs["dub"], dub, rate)
        self.put_audio(outputs["mix"], mix, out_rate)
        segments = [
            Segment(index=s["index"] + 1, start_s=s["start_s"], end_s=s["end_s"], text=s["text"],
                    speaker=None if s["speaker"] == "default" else s["speaker"], line=s["index"] + 1)
            for s in manifest["segments"]
        ]
        self.store.put_bytes(outputs["subtitles"], to_srt(segments).encode("utf-8"))

        with tempfile.TemporaryDirectory(prefix="polydub-merge-") as tmp:
            path = Path(tmp) / OUTPUT_VIDEO
            videos = [row.outputs.get("lipsync") for row in rows]
            if all(videos):
                fps = float(manifest["media"]["fps"])
                frames = _joined_frames([self.local_copy(v) for v in videos if v], chunks, fps)
                encode_mp4(path, frames, fps, mix, out_rate, duration_s=duration)
            else:
                mux_audio(source, mix, out_rate, path)
            self.store.put_file(outputs["video"], path)

        outputs["loudness_gain_db"] = gain_db
        outputs["merge_seconds"] = time.perf_counter() - started
        return outputs


def _joined_frames(videos: list[Path], chunks: list[dict[str, Any]], fps: float) -> Iterator[np.ndarray]:
    """The output's frames in order, crossfading where two chunk windows overlap."""
    ranges = [window_frame_range(c["start_s"], c["end_s"], fps) for c in chunks]
    total = ranges[-1][1]
    streams: dict[int, Iterator[np.ndarray]] = {}
    for k in range(total):
        covering = []
        for i, (first, last) in enumerate(ranges):
            if first <= k < last:
                if i not in streams:
                    streams[i] = iter_frames(videos[i])
                frame = next(streams[i], None)
                if frame is None:
                    continue
                prev_last = ranges[i - 1][1] if i > 0 else None
                next_first = ranges[i + 1][0] if i + 1 < len(ranges) else None
                covering.append((frame, frame_weight(k, first, last, prev_last, next_first)))
            elif k >= last and i in streams:
                streams.pop(i)
        if covering:
            yield blend_frames(covering)
