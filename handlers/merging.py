"""merging: every ``chunk.rendered`` of a job -> ``job.merged``.

Each rendered chunk is checked in the store (its ``_done`` marker), never in
memory, so any worker of the group can see the job complete and a restart
loses nothing. When the last chunk is in, the merge:

1. joins the chunks' dub audio (recorded in their rows: the speech after
   conversion, and before it when conversion changed it, for QC) by
   overlap-add with a crossfade over each shared second
   (:mod:`handlers.runtime.mix`);
2. mixes it over the original soundtrack, ducked while the dub speaks,
   normalises the loudness (``POLYDUB_LOUDNESS_TARGET_LUFS``) under a peak
   ceiling. The soundtrack keeps the source's channel layout and, from
   44.1 kHz up, its rate (lower rates go out at ``POLYDUB_OUTPUT_AUDIO_RATE``):
   the background stays in its channels, the dub goes in the centre channel
   (or both fronts of a stereo or centre-less layout). The background is
   decoded at the output rate, not taken from the pipeline's 22.05 kHz speech
   track, so it keeps its full band (everything above 11 kHz would otherwise
   be lost); only the dub is upsampled;
3. joins the lip-synced frames the same way (or copies the source video
   stream untouched when lip-sync is off) and muxes an MP4 with the source's
   exact duration, the target subtitles in it as a soft ``mov_text`` track,
   the soundtrack and subtitles tagged with the target language (ISO 639-2);
4. writes the dub track, the mix, the target subtitles and the video under
   ``jobs/{id}/output/``, records them (``state/merged``), then emits
   ``job.merged`` carrying every URI QC reads.

Chunk events are keyed per chunk, so two workers may see a job complete at
once: both write the same deterministic bytes and publish the same outputs,
and QC delivers the job once. The ``merged`` marker, written after the
publish, makes the job's later chunk events and redeliveries no-ops; a crash
between the publish and the marker republishes from the record without
merging again.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engines.dsp import fit_length, resample
from handlers.runtime import keys
from handlers.runtime.frames import window_frame_range
from handlers.runtime.jobstate import JobState
from handlers.runtime.media import (
    channel_names,
    decode_audio,
    encode_mp4,
    iter_frames,
    mux_audio,
    soundtrack_layout,
    soundtrack_rate,
)
from handlers.runtime.mix import (
    blend_frames,
    dub_weights,
    duck_gain,
    frame_weight,
    mix_dub,
    normalize_loudness,
    overlap_add,
    speech_mask,
)
from handlers.runtime.stagekit import JobStage
from handlers.runtime.subtitles import Segment, language_tag, to_srt
from schemas.events import ChunkRendered, DubStatus, JobMerged
from schemas.registry import CHUNK_STAGES
from schemas.status import StatusCode

OUTPUT_VIDEO = "dubbed.mp4"
OUTPUT_DUB_TRACK = "dub.wav"
OUTPUT_UNCONVERTED_DUB = "dub.unconverted.wav"
OUTPUT_MIX = "mix.wav"


def subtitles_name(lang: str) -> str:
    return f"subtitles.{lang}.srt"


class MergingStage(JobStage[ChunkRendered]):
    """Join the chunks into the dubbed video once all are rendered."""

    name = "merging"
    consumes = ChunkRendered
    # Recorded before job.merged is published, marked after: the job's other chunk events
    # (and redeliveries) then do nothing, and a crash in between publishes from the record.
    skip_if_marked = ("failed", "merged")
    record = "state/merge.json"

    async def work(self, event: ChunkRendered, state: JobState) -> dict[str, Any] | None:
        last_chunk_stage = CHUNK_STAGES[-1]
        if not await self.run_blocking(state.all_done, last_chunk_stage, event.n_chunks, event.chunk_index):
            return None  # another chunk is still on its way; its event will merge
        manifest = await self.manifest(event.job_id)
        plan = await self.plan(event.job_id)
        await self.publisher.publish(self.status(
            event.job_id, StatusCode.LIP_SYNCED, 0.0, chunks_done=event.n_chunks, chunks_total=event.n_chunks,
            message="merging chunks"))
        return await self.run_blocking(self._merge, state, manifest, plan)

    def next_events(self, event: ChunkRendered, outputs: dict[str, Any]) -> list[JobMerged]:
        unconverted = outputs.get("dub_unconverted")
        return [JobMerged(
            job_id=event.job_id,
            output_video_uri=self.store.uri(outputs["video"]),
            dub_audio_uri=self.store.uri(outputs["dub"]),
            unconverted_dub_uri=None if unconverted is None else self.store.uri(unconverted),
            mix_uri=self.store.uri(outputs["mix"]),
            subtitles_uri=self.store.uri(outputs["subtitles"]),
            duration_s=outputs["duration_s"],
        )]

    async def after_publish(self, state: JobState, outputs: dict[str, Any]) -> None:
        await self.run_blocking(state.mark, "merged")

    def done_status(self, event: ChunkRendered, outputs: dict[str, Any]) -> DubStatus:
        return self.status(event.job_id, self.info.done, 1.0, chunks_done=event.n_chunks,
                           chunks_total=event.n_chunks)

    def _merge(self, state: JobState, manifest: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        job_id = state.job_id
        chunks = plan["chunks"]
        rows = state.rows(len(chunks))
        rate = self.settings.sample_rate
        duration = manifest["media"]["duration_s"]
        total = int(round(duration * rate))

        starts = [int(round(chunk["start_s"] * rate)) for chunk in chunks]
        spans: dict[int, tuple[float, float]] = {}
        for row in rows:
            for fit in row.details["synthesis"]["segment_fits"]:
                spans[fit["segment_index"]] = (fit["slot_start_s"], fit["slot_start_s"] + fit["speech_s"])
        # The chunk's speech after conversion (its input when conversion passed it through).
        converted = [row.outputs["conversion"] for row in rows]
        dub = self._joined_audio(starts, converted, total)
        synthesized = [row.outputs["synthesis"] for row in rows]
        # QC compares the voice before and after conversion: the track before it is joined
        # here, where the chunks are joined anyway, and only when conversion changed it.
        unconverted = None if synthesized == converted else self._joined_audio(starts, synthesized, total)

        media = manifest["media"]
        layout = soundtrack_layout(media.get("audio_layout"), media["audio_channels"])
        channels = channel_names(layout)
        out_rate = soundtrack_rate(media["audio_rate"], self.settings.output_audio_rate)
        source = self.local_copy(manifest["source_key"])
        # Exactly the job's duration, in the output layout: (samples, channels).
        original = decode_audio(source, out_rate, end_s=duration, layout=layout)
        n_out = original.shape[0]
        dub_out = fit_length(resample(dub, rate, out_rate), n_out)
        gain = duck_gain(speech_mask(list(spans.values()), n_out, out_rate), out_rate,
                         self.settings.duck_db, self.settings.duck_attack_s, self.settings.duck_release_s)
        mix, gain_db = normalize_loudness(mix_dub(original, gain, dub_out, dub_weights(channels)), out_rate,
                                          self.settings.loudness_target_lufs, self.settings.true_peak_dbfs,
                                          channels)

        outputs = {
            "video": keys.output_key(job_id, OUTPUT_VIDEO),
            "dub": keys.output_key(job_id, OUTPUT_DUB_TRACK),
            "dub_unconverted": None if unconverted is None else keys.output_key(job_id, OUTPUT_UNCONVERTED_DUB),
            "mix": keys.output_key(job_id, OUTPUT_MIX),
            "subtitles": keys.output_key(job_id, subtitles_name(manifest["target_lang"])),
            "duration_s": duration,
        }
        self.put_audio(outputs["dub"], dub, rate)
        if unconverted is not None:
            self.put_audio(outputs["dub_unconverted"], unconverted, rate)
        self.put_audio(outputs["mix"], mix, out_rate)
        segments = [
            Segment(index=s["index"] + 1, start_s=s["start_s"], end_s=s["end_s"], text=s["text"],
                    speaker=None if s["speaker"] == "default" else s["speaker"], line=s["index"] + 1)
            for s in manifest["segments"]
        ]
        self.store.put_bytes(outputs["subtitles"], to_srt(segments).encode("utf-8"))

        language = language_tag(manifest["target_lang"])
        with tempfile.TemporaryDirectory(prefix="polydub-merge-") as tmp:
            path = Path(tmp) / OUTPUT_VIDEO
            videos = [row.outputs.get("lipsync") for row in rows]
            if all(videos):
                fps = float(manifest["media"]["fps"])
                frames = _joined_frames([self.local_copy(v) for v in videos if v], chunks, fps)
                encode_mp4(path, frames, fps, mix, out_rate, duration_s=duration, audio_layout=layout,
                           language=language, subtitles=segments)
            else:
                mux_audio(source, mix, out_rate, path, audio_layout=layout, language=language, subtitles=segments)
            self.store.put_file(outputs["video"], path)

        outputs["loudness_gain_db"] = gain_db
        outputs["merge_seconds"] = time.perf_counter() - started
        return outputs

    def _joined_audio(self, starts: list[int], keys_: list[str], total: int) -> np.ndarray:
        """The chunks' audio overlap-added on the job's timeline."""
        return overlap_add([(start, self.get_audio(key)[0]) for start, key in zip(starts, keys_)], total)


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
