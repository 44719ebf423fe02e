"""Media I/O: probing, decoding, frame streaming and MP4 writing (PyAV).

Every stage that touches a video or an audio file goes through here, so the
time conventions below hold across the pipeline.

Time conventions
----------------
* **Timeline.** Times are seconds from the file's first presentation time
  (FFmpeg's container ``start_time``), not raw stream timestamps: a transport
  stream that starts at 1.4 s still has its first frame at ``0.0``. Subtitle
  times, chunk windows and the arrays returned here all share that origin, so
  audio and video of one file stay aligned.
* **pts and time_base.** A decoded frame's presentation time is
  ``frame.pts * stream.time_base`` (an exact :class:`~fractions.Fraction`),
  minus the origin. Timestamps are never re-derived from frame counts when the
  container gives them, because variable-rate and edited streams would drift.
* **Video frames.** Frame ``i`` of a constant-rate video is shown over
  ``[t_i, t_i + 1/fps)``. A range ``[start_s, end_s)`` selects the frames whose
  presentation time ``t`` satisfies ``start_s <= t < end_s`` (compared with a
  tolerance of :data:`TIMESTAMP_TOLERANCE_S` for containers with millisecond
  ticks), so back-to-back ranges never share or drop a frame and a range of a
  CFR video starting at 0 holds ``ceil(end_s*fps) - ceil(start_s*fps)`` frames.
* **Audio samples.** At rate ``r``, sample ``k`` sits at time ``k / r``. A
  range ``[start_s, end_s)`` holds samples ``round(start_s*r)`` up to (not
  including) ``round(end_s*r)``, so consecutive ranges tile the signal exactly.
* **Writing.** Encoded video frame ``i`` gets ``pts = i`` in the codec time
  base ``1/fps`` (the muxer rescales to its own); audio sample ``k`` gets
  ``pts = k`` in ``1/rate``. Audio is padded or trimmed to the target duration,
  so a written file's streams end within one frame of each other.

Soundtrack
----------
The dubbed file keeps the source's channels: :func:`soundtrack_layout` names
the AAC layout that carries the source's (side surrounds become back ones,
which AAC does not tell apart) and refuses layouts the MP4 cannot carry, and
:func:`soundtrack_rate` keeps the source's rate from 44.1 kHz up (full audio
bandwidth), writing lower rates at a full-band fallback. Multichannel audio is
``(samples, channels)`` in the layout's channel order, as in WAV files.

Subtitles: :func:`encode_mp4` and :func:`mux_audio` can add the cues as a soft
``mov_text`` track (3GPP timed text, what MP4 players list as a subtitle
track) tagged with an ISO 639-2 language.

Streaming: :func:`iter_frames`, :func:`encode_mp4` and :func:`mux_audio` hold
one frame (plus the codec's own look-ahead) at a time, whatever the length of
the video. Writes are atomic: a file is written under a temporary name beside
the target and renamed into place only when complete.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.stream import Disposition
from av.subtitles.subtitle import SubtitleSet
from av.video.reformatter import ColorRange, Colorspace
from av.video.stream import VideoStream

from engines.dsp import fit_length, resample
from handlers.runtime.subtitles import Segment, cue_lines
from schemas.errors import InputError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Containers such as Matroska/WebM store times in 1 ms ticks, so a frame's
# stored time may sit up to 0.5 ms off its nominal grid; 1 ms covers that and
# stays far below any real frame period (8.3 ms at 120 fps).
TIMESTAMP_TOLERANCE_S = 1e-3
# Seek this far before an audio range: decoders such as AAC need the previous
# frame to reconstruct the first samples (overlapped MDCT windows), and some
# demuxers land a little after the requested time.
AUDIO_SEEK_PREROLL_S = 0.25
# Samples per chunk when feeding audio to the encoder. The AAC frame size; any
# size works (PyAV re-frames), this one avoids needless re-buffering.
AUDIO_ENCODE_CHUNK = 1024
# Sample rates AAC can signal. Audio at any other rate is resampled to
# FALLBACK_AAC_RATE before encoding.
AAC_SAMPLE_RATES = frozenset(
    {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000}
)
FALLBACK_AAC_RATE = 48000
# AAC bit rate per channel: 192 kb/s for stereo, 576 kb/s for 5.1, well clear of
# audible coding artefacts with FFmpeg's native encoder.
AAC_BIT_RATE_PER_CHANNEL = 96_000
# The output soundtrack's lowest rate: 44.1 kHz carries the whole audible band; a
# source below it is written at the fallback rate the caller gives.
MIN_SOUNDTRACK_RATE = 44_100
# Source layout -> the layout the output's AAC track carries it in. AAC's channel
# configurations (ISO 14496-3) know "surround" channels, not side vs back ones, and
# FFmpeg reads an AAC track written as 5.1(side) back as six unordered channels; so
# side layouts go out as their back twins, which players route to the same speakers.
# Wider layouts (6.1, 7.1) are refused: PyAV 18's planar frames break at eight
# channels (AudioFrame.from_ndarray raises, filling the planes by hand crashed), and
# the AAC track would need its own channel-element plan for them.
_SOUNDTRACK_LAYOUTS = {
    "mono": "mono",
    "stereo": "stereo",
    "2.1": "2.1",
    "3.0": "3.0",
    "4.0": "4.0",
    "quad": "quad",
    "quad(side)": "quad",
    "5.0": "5.0",
    "5.0(side)": "5.0",
    "5.1": "5.1",
    "5.1(side)": "5.1",
}
# The channel name FFmpeg gives a channel whose position a file does not state.
_UNKNOWN_CHANNEL = "NONE"
# Soft subtitles: cue times in milliseconds, and the ASS header FFmpeg's mov_text
# encoder needs to open (it takes the default text style from it): white text,
# bottom centre, the script resolution FFmpeg itself defaults to.
SUBTITLE_TIME_BASE = Fraction(1, 1000)
SUBTITLE_CODEC = "mov_text"
UNDETERMINED_LANGUAGE = "und"
_ASS_HEADER = (
    "[Script Info]\r\nScriptType: v4.00+\r\nPlayResX: 384\r\nPlayResY: 288\r\n\r\n"
    "[V4+ Styles]\r\n"
    "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
    "Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, "
    "MarginL, MarginR, MarginV, Encoding\r\n"
    "Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\r\n\r\n"
    "[Events]\r\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\r\n"
).encode("ascii")
# An ASS dialogue line up to its text (ReadOrder, Layer, Style, Name, margins, Effect),
# the form FFmpeg's text subtitle encoders take; "\\N" is ASS's line break.
_ASS_DIALOGUE_PREFIX = "0,0,Default,,0,0,0,,"
_ASS_LINE_BREAK = "\\N"
# x264 quality: CRF 18 is visually transparent for most material, which is what
# a re-encode of someone's video must be; "medium" is x264's own default speed.
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"
# Frame rates a float fps is snapped to when within FRAME_RATE_SNAP of one:
# film, PAL, NTSC and their doubles. NTSC rates are N*1000/1001.
_NTSC_DENOMINATOR = 1001
_STANDARD_FRAME_RATES = tuple(
    Fraction(n * 1000, _NTSC_DENOMINATOR) for n in (24, 30, 60)
) + tuple(Fraction(n) for n in (24, 25, 30, 48, 50, 60))
FRAME_RATE_SNAP = 0.01
# Output containers by suffix; anything else is written as MP4.
_FORMATS_BY_SUFFIX = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# MP4/MOV get their index at the front, so players can start before the download ends.
_FASTSTART = {"movflags": "+faststart"}
# read_frames refuses ranges whose frames would take more memory than this.
READ_FRAMES_MAX_BYTES = 2 * 1024**3
_RGB_CHANNELS = 3
_STEREO = 2
_MPEG_RANGE = 1  # AVCOL_RANGE_MPEG: limited-range YUV, what players assume for H.264
_BT709 = 1  # AVCOL_PRI/TRC/SPC_BT709: the colour tags matching the ITU-R BT.709 conversion


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, as far as the pipeline cares.

    Video fields are ``None`` when the file has no video stream, audio fields
    when it has no audio stream. ``n_frames`` comes from the container's index
    when it has one, else it is estimated as ``round(video duration * fps)``.
    """

    duration_s: float
    has_video: bool
    has_audio: bool
    fps: float | None
    frame_rate: Fraction | None
    width: int | None
    height: int | None
    n_frames: int | None
    audio_rate: int | None
    audio_channels: int | None
    video_codec: str | None
    audio_codec: str | None
    #: FFmpeg's name of the audio channel layout ("stereo", "5.1(side)", ...); ``None``
    #: when the file gives a channel count but not the channels' positions.
    audio_layout: str | None = None
    #: The first subtitle stream's codec and language tag, if the file has one.
    subtitle_codec: str | None = None
    subtitle_language: str | None = None


# --- opening files -------------------------------------------------------------


def _require_file(path: Path) -> None:
    """Fail early, in the user's words, on paths FFmpeg would misreport."""
    if not path.exists():
        raise InputError(
            f"media file {path} does not exist", "check the path and that the upload finished"
        )
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a media file", "give the path of the video file itself")


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn FFmpeg's errors while reading ``path`` into an :class:`InputError` naming it."""
    try:
        yield
    except av.error.InvalidDataError as exc:
        raise InputError(
            f"{path} is not a media file FFmpeg can read ({exc.strerror})",
            "give a video or audio file such as MP4, MKV, MOV or WAV",
        ) from exc
    except av.error.FFmpegError as exc:
        raise InputError(
            f"could not read media file {path}: {exc.strerror or exc}",
            "check that the file is complete and not corrupted",
        ) from exc


def _open_input(path: PathLike) -> InputContainer:
    """Open ``path`` for reading, with user-facing errors for missing or non-media files."""
    file = Path(path)
    _require_file(file)
    with _reading(file):
        container = av.open(str(file), mode="r")
    assert isinstance(container, InputContainer)
    return container


def _video_stream(container: InputContainer) -> VideoStream | None:
    """The first real video stream; cover art (an attached picture) does not count."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    return None


def _audio_stream(container: InputContainer) -> AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _layout_name(stream: AudioStream) -> str | None:
    """The stream's channel layout name, ``None`` when its channels' positions are unstated."""
    layout = stream.layout
    if not layout.channels or any(ch.name == _UNKNOWN_CHANNEL for ch in layout.channels):
        return None
    return str(layout.name)


def _origin_s(container: InputContainer) -> float:
    """The file's first presentation time, in seconds: time 0 of our timeline."""
    start = container.start_time
    return float(start) / av.time_base if start is not None and start > 0 else 0.0


def _stream_end_s(stream: av.stream.Stream) -> float | None:
    """Where a stream ends on the file's own clock, from its header, if known."""
    if stream.duration is None or stream.time_base is None:
        return None
    begin = stream.start_time or 0
    return float((begin + stream.duration) * stream.time_base)


def _frame_rate(stream: VideoStream) -> Fraction | None:
    """The stream's nominal frame rate: average, else FFmpeg's guess, else the base rate."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def _demuxed_end_s(container: InputContainer, stream: av.stream.Stream) -> float | None:
    """A stream's end found by reading its packets (no decoding), for headerless formats."""
    end: float | None = None
    for packet in container.demux(stream):
        if packet.pts is None or packet.time_base is None:
            continue
        stop = float((packet.pts + (packet.duration or 0)) * packet.time_base)
        end = stop if end is None else max(end, stop)
    return end


# --- probing -------------------------------------------------------------------


def probe(path: PathLike) -> MediaInfo:
    """Describe a media file without decoding it.

    Raises :class:`InputError` when the file is missing, is not media, or holds
    neither a video nor an audio stream.
    """
    file = Path(path)
    with _open_input(file) as container, _reading(file):
        video = _video_stream(container)
        audio = _audio_stream(container)
        if video is None and audio is None:
            raise InputError(
                f"{file} holds no video or audio stream",
                "give a video file with a soundtrack",
            )
        origin = _origin_s(container)
        duration: float | None = None
        if container.duration is not None and container.duration > 0:
            duration = float(container.duration) / av.time_base
        else:
            ends = [_stream_end_s(s) for s in (video, audio) if s is not None]
            known = [e for e in ends if e is not None]
            if not known:
                known = [
                    e
                    for e in (_demuxed_end_s(container, s) for s in (video, audio) if s is not None)
                    if e is not None
                ]
            duration = max(known) - origin if known else None
        if duration is None:
            raise InputError(
                f"{file} does not say how long it is and its packets carry no timestamps",
                "remux it into MP4 or MKV first (e.g. `ffmpeg -i IN -c copy OUT.mp4`)",
            )

        fps = width = height = n_frames = None
        video_codec = None
        if video is not None:
            fps = _frame_rate(video)
            width, height = video.codec_context.width, video.codec_context.height
            video_codec = video.codec_context.name
            if video.frames:
                n_frames = int(video.frames)
            elif fps is not None:
                video_end = _stream_end_s(video)
                video_span = video_end - origin if video_end is not None else duration
                n_frames = round(video_span * fps)

        subtitles = container.streams.subtitles[0] if container.streams.subtitles else None
        return MediaInfo(
            duration_s=duration,
            has_video=video is not None,
            has_audio=audio is not None,
            fps=float(fps) if fps is not None else None,
            frame_rate=fps,
            width=width,
            height=height,
            n_frames=n_frames,
            audio_rate=audio.codec_context.sample_rate if audio is not None else None,
            audio_channels=audio.codec_context.channels if audio is not None else None,
            video_codec=video_codec,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_layout=_layout_name(audio) if audio is not None else None,
            subtitle_codec=subtitles.codec_context.name if subtitles is not None else None,
            subtitle_language=subtitles.metadata.get("language") if subtitles is not None else None,
        )


# --- the output soundtrack -------------------------------------------------------


def soundtrack_layout(layout: str | None, channels: int) -> str:
    """The layout the dubbed file's soundtrack has for a source in ``layout`` with ``channels``.

    A source that gives only a channel count (``layout`` ``None``) is read the way
    FFmpeg reads it, in the default layout for that count. Raises
    :class:`InputError` for layouts the output's AAC track cannot carry, before any
    work is done on the job.
    """
    named = layout if layout is not None else default_layout(channels)
    out = _SOUNDTRACK_LAYOUTS.get(named)
    if out is None:
        shown = named if layout is not None else f"{channels} unlabelled channels"
        raise InputError(
            f"the soundtrack's channel layout ({shown}) cannot be carried by the dubbed MP4's AAC track "
            f"(it carries {', '.join(sorted(set(_SOUNDTRACK_LAYOUTS.values())))})",
            "remix the soundtrack to 5.1 or stereo first (e.g. `ffmpeg -i IN -c:v copy -ac 6 OUT.mp4`)",
        )
    return out


def soundtrack_rate(rate: int, fallback_rate: int) -> int:
    """The dubbed soundtrack's sample rate: the source's from 44.1 kHz up, else ``fallback_rate``.

    Why not always the source's: below :data:`MIN_SOUNDTRACK_RATE` (a 22.05 or
    32 kHz track) the band is cut short, and the dub and any restored background
    deserve the full band. Rates AAC cannot signal also take the fallback.
    """
    if rate >= MIN_SOUNDTRACK_RATE and rate in AAC_SAMPLE_RATES:
        return rate
    return fallback_rate


def channel_names(layout: str) -> tuple[str, ...]:
    """FFmpeg's names of ``layout``'s channels in order: ``("FL", "FR", "FC", "LFE", "BL", "BR")`` for 5.1."""
    return tuple(str(ch.name) for ch in av.AudioLayout(layout).channels)


def default_layout(channels: int) -> str:
    """FFmpeg's layout for a bare channel count (1 mono, 2 stereo, 6 5.1, ...)."""
    return str(av.AudioLayout(f"{channels}c").name)


# --- audio ---------------------------------------------------------------------


def _check_range(start_s: float, end_s: float | None) -> None:
    if start_s < 0:
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    if end_s is not None and end_s < start_s:
        raise ValueError(f"end_s ({end_s}) is before start_s ({start_s})")


def _seek(container: InputContainer, stream: av.stream.Stream, time_s: float) -> None:
    """Seek ``stream`` to the last keyframe at or before ``time_s`` on the file's clock."""
    assert stream.time_base is not None
    container.seek(math.floor(time_s / stream.time_base), stream=stream, backward=True)


def decode_audio(
    path: PathLike,
    rate: int,
    start_s: float = 0.0,
    end_s: float | None = None,
    *,
    layout: str | None = None,
) -> np.ndarray:
    """Decode ``[start_s, end_s)`` of the first audio stream as float32 at ``rate``.

    Without ``layout`` the result is mono ``(samples,)``, what speech analysis
    wants: channels are averaged (wider layouts through FFmpeg's downmix to
    stereo first). With ``layout`` (an FFmpeg layout name, e.g. from
    :func:`soundtrack_layout`) it is ``(samples, channels)`` in that layout's
    channel order, FFmpeg's resampler routing each source channel to its place
    (side surrounds onto back ones, unlabelled channels in the default order).
    The rate is converted by FFmpeg's resampler. For a
    range the file is seeked, not decoded from the start, so reading one chunk
    of a long video costs the chunk, not the video.

    Length: with ``end_s`` given the result has exactly
    ``round(end_s*rate) - round(start_s*rate)`` samples, silence standing in
    for any part past the stream's end (audio tracks often end a few
    milliseconds before the picture, and chunk windows are cut on the video's
    timeline). With ``end_s=None`` it runs to the audio stream's end.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    _check_range(start_s, end_s)
    file = Path(path)
    with _open_input(file) as container, _reading(file):
        stream = _audio_stream(container)
        if stream is None:
            raise InputError(
                f"{file} has no audio stream",
                "give a video with its original soundtrack",
            )
        origin = _origin_s(container)
        stream_end = _stream_end_s(stream)
        first = round(start_s * rate)
        # Decoders emit whole codec frames, so the last one runs past the
        # stream's declared end (AAC pads to 1024 samples); cut it there.
        data_end = round((stream_end - origin) * rate) if stream_end is not None else None
        last: int | None = round(end_s * rate) if end_s is not None else data_end
        keep_until = min((n for n in (last, data_end) if n is not None), default=None)

        if start_s > AUDIO_SEEK_PREROLL_S:
            _seek(container, stream, origin + start_s - AUDIO_SEEK_PREROLL_S)
        # For mono, keep mono and stereo as they are and average the channels below:
        # FFmpeg's own stereo->mono matrix scales by 1/sqrt(2) per channel, so
        # a loud centred voice would come out 3 dB hot and clip. Wider layouts
        # go through FFmpeg's standard downmix to stereo first (centre, LFE and
        # surround weights that a plain mean would get wrong). A requested
        # layout goes to the resampler as it is.
        to_mono = layout is None
        target = layout
        if to_mono and stream.codec_context.channels > _STEREO:
            target = "stereo"
        resampler = av.AudioResampler(format="fltp", layout=target, rate=rate)
        pieces: list[tuple[int, np.ndarray]] = []  # (first sample index, (channels, samples))
        cursor: int | None = None  # next sample index, for frames without pts

        def place(frames: list[av.AudioFrame]) -> bool:
            """Keep the part of each frame inside the range; False once past its end."""
            nonlocal cursor
            for frame in frames:
                if frame.pts is not None and frame.time_base is not None:
                    at = round((frame.pts * frame.time_base - origin) * rate)
                else:
                    at = cursor if cursor is not None else 0
                samples = frame.to_ndarray().astype(np.float32, copy=False)
                if to_mono:
                    samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)
                n = samples.shape[1]
                cursor = at + n
                if keep_until is not None and at >= keep_until:
                    return False
                lo = max(first - at, 0)
                hi = n if keep_until is None else min(n, keep_until - at)
                if hi > lo:
                    pieces.append((at + lo, samples[:, lo:hi]))
            return True

        for decoded in container.decode(stream):
            if not place(resampler.resample(decoded)):
                break
        else:
            place(resampler.resample(None))

    if last is None:
        last = max((at + piece.shape[1] for at, piece in pieces), default=first)
    width = 1 if layout is None else av.AudioLayout(layout).nb_channels
    out = np.zeros((width, max(last - first, 0)), dtype=np.float32)
    for at, piece in pieces:
        out[:, at - first : at - first + piece.shape[1]] = piece
    return out[0] if to_mono else np.ascontiguousarray(out.T)


# --- video frames --------------------------------------------------------------


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB uint8 (H, W, 3), honouring the frame's own colour range tag."""
    return frame.to_ndarray(format="rgb24", src_color_range=frame.color_range or None)


def iter_frames(
    path: PathLike, start_s: float = 0.0, end_s: float | None = None
) -> Iterator[np.ndarray]:
    """Stream the RGB uint8 ``(H, W, 3)`` frames shown in ``[start_s, end_s)``.

    Seeks to the keyframe before ``start_s`` and decodes forward, so memory is
    one frame whatever the length. Which frames fall in the range follows the
    module's frame-time convention. The file is opened (and checked) at call
    time; decoding happens as the iterator is consumed.
    """
    _check_range(start_s, end_s)
    file = Path(path)
    container = _open_input(file)
    try:
        with _reading(file):
            stream = _video_stream(container)
        if stream is None:
            raise InputError(f"{file} has no video stream", "give a video file, not an audio file")
    except BaseException:
        container.close()
        raise
    return _decode_frames(file, container, stream, start_s, end_s)


def _decode_frames(
    file: Path,
    container: InputContainer,
    stream: VideoStream,
    start_s: float,
    end_s: float | None,
) -> Iterator[np.ndarray]:
    with container, _reading(file):
        stream.thread_type = "AUTO"
        origin = _origin_s(container)
        rate = _frame_rate(stream)
        # A video stream may start after the file does (audio first); no frame
        # can be earlier than that, so a seek landing there has not overshot.
        stream_start = (
            float(stream.start_time * stream.time_base) - origin
            if stream.start_time is not None and stream.time_base is not None
            else 0.0
        )
        seeked = start_s > 0
        if seeked:
            _seek(container, stream, origin + start_s - TIMESTAMP_TOLERANCE_S)
        index = 0  # frames decoded so far, for the rare stream without pts
        first = True
        for frame in container.decode(stream):
            if frame.pts is not None and frame.time_base is not None:
                t = float(frame.pts * frame.time_base) - origin
            elif not seeked and rate is not None:
                t = float(index / rate)
            else:
                raise InputError(
                    f"{file}: video frames carry no timestamps, so a time range cannot be cut",
                    "remux it into MP4 or MKV first (e.g. `ffmpeg -i IN -c copy OUT.mp4`)",
                )
            index += 1
            if first and seeked and t > max(start_s, stream_start) + TIMESTAMP_TOLERANCE_S:
                # The demuxer landed past the range's start (inexact index):
                # start over from the beginning rather than silently lose frames.
                log.warning("seek in %s overshot %.3fs to %.3fs; decoding from the start", file, start_s, t)
                container.seek(0)
                seeked = False
                first = False
                continue
            first = False
            if t + TIMESTAMP_TOLERANCE_S < start_s:
                continue
            if end_s is not None and t + TIMESTAMP_TOLERANCE_S >= end_s:
                break
            yield _to_rgb(frame)


def read_frames(path: PathLike, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """All frames of ``[start_s, end_s)`` as one ``(N, H, W, 3)`` uint8 array.

    For short ranges (a chunk's mouth region, a test); long ranges belong to
    :func:`iter_frames`, and a range needing more than
    :data:`READ_FRAMES_MAX_BYTES` is refused before decoding.
    """
    info = probe(path)
    if not info.has_video or info.width is None or info.height is None:
        raise InputError(f"{path} has no video stream", "give a video file, not an audio file")
    span = (end_s if end_s is not None else info.duration_s) - start_s
    expected = math.ceil(max(span, 0.0) * (info.fps or 0.0)) + 1
    frame_bytes = info.width * info.height * _RGB_CHANNELS
    if expected * frame_bytes > READ_FRAMES_MAX_BYTES:
        raise ValueError(
            f"reading {span:.1f}s of {info.width}x{info.height} video would hold about "
            f"{expected * frame_bytes / 1024**3:.1f} GiB; use iter_frames to stream it"
        )
    frames = list(iter_frames(path, start_s, end_s))
    if not frames:
        return np.empty((0, info.height, info.width, _RGB_CHANNELS), dtype=np.uint8)
    return np.stack(frames)


# --- writing -------------------------------------------------------------------


@contextmanager
def _atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success only.

    The temporary name keeps the suffix so format detection by extension
    still works, and starts with a dot so listings skip it. On any error the
    partial file is removed, so ``final`` is either the old file or complete.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}.partial{final.suffix}")
    try:
        yield temp
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _as_channels_first(audio: np.ndarray) -> np.ndarray:
    """``(samples,)`` or ``(samples, channels)`` float audio -> ``(channels, samples)`` float32."""
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim == 1:
        array = array[np.newaxis, :]
    elif array.ndim == 2:
        array = array.T
    else:
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("audio holds NaN or infinite samples")
    return np.ascontiguousarray(array)


class _AudioTrack:
    """AAC encoding of an in-memory signal, fed piecewise to interleave with video.

    The muxer interleaves by timestamp; feeding audio up to each video
    packet's time keeps its queue short and the file's audio and video close
    together on disk, which players streaming the file need. ``layout`` names
    the channels' positions (FFmpeg's default for the count when not given).
    """

    def __init__(
        self,
        output: OutputContainer,
        audio: np.ndarray,
        rate: int,
        duration_s: float,
        layout: str | None = None,
        language: str | None = None,
    ) -> None:
        samples = _as_channels_first(audio)
        if rate not in AAC_SAMPLE_RATES:
            samples = resample(samples, rate, FALLBACK_AAC_RATE)
            rate = FALLBACK_AAC_RATE
        self.samples = fit_length(samples, round(duration_s * rate))
        self.rate = rate
        channels = self.samples.shape[0]
        self.layout = layout if layout is not None else default_layout(channels)
        if av.AudioLayout(self.layout).nb_channels != channels:
            raise ValueError(f"audio has {channels} channels, but layout {self.layout} has "
                             f"{av.AudioLayout(self.layout).nb_channels}")
        self.output = output
        self.stream = output.add_stream("aac", rate=rate, layout=self.layout)
        self.stream.bit_rate = AAC_BIT_RATE_PER_CHANNEL * channels
        if language is not None:
            self.stream.metadata["language"] = language
        self.written = 0

    def write_until(self, time_s: float) -> None:
        """Encode and mux the samples before ``time_s``."""
        total = self.samples.shape[1]
        stop = total if time_s * self.rate >= total else round(time_s * self.rate)
        while self.written < stop:
            end = min(self.written + AUDIO_ENCODE_CHUNK, stop)
            chunk = np.ascontiguousarray(self.samples[:, self.written : end])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self.layout)
            frame.sample_rate = self.rate
            frame.pts = self.written
            frame.time_base = Fraction(1, self.rate)
            self.output.mux(self.stream.encode(frame))
            self.written = end

    def finish(self) -> None:
        self.write_until(math.inf)
        self.output.mux(self.stream.encode(None))


def _ass_dialogue(segment: Segment) -> bytes:
    """A cue as the ASS dialogue line FFmpeg's text subtitle encoders take (its lines as the .srt shows them)."""
    return (_ASS_DIALOGUE_PREFIX + _ASS_LINE_BREAK.join(cue_lines(segment))).encode("utf-8")


class _SubtitleTrack:
    """A soft ``mov_text`` subtitle stream, its cues muxed in time order beside the video.

    Cues go in as the picture reaches them, like the audio, so the muxer's queue
    holds one cue at a time. ``mov_text`` samples cannot overlap; the cues come
    from validated subtitles, which never do.
    """

    def __init__(self, output: OutputContainer, segments: Sequence[Segment], language: str | None,
                 duration_s: float) -> None:
        self.output = output
        self.stream = output.add_stream(SUBTITLE_CODEC)
        self.stream.metadata["language"] = language or UNDETERMINED_LANGUAGE
        context = self.stream.codec_context
        context.subtitle_header = _ASS_HEADER
        context.time_base = SUBTITLE_TIME_BASE
        self.cues = sorted((s for s in segments if s.start_s < duration_s), key=lambda s: s.start_s)
        self.duration_s = duration_s
        self.written = 0

    def write_until(self, time_s: float) -> None:
        """Encode and mux the cues that start before ``time_s``."""
        while self.written < len(self.cues) and self.cues[self.written].start_s < time_s:
            cue = self.cues[self.written]
            start = round(cue.start_s / SUBTITLE_TIME_BASE)
            end = round(min(cue.end_s, self.duration_s) / SUBTITLE_TIME_BASE)
            subtitle = SubtitleSet.create(text=_ass_dialogue(cue), start=0, end=end - start, pts=start)
            packet = self.stream.codec_context.encode_subtitle(subtitle)
            packet.stream = self.stream
            packet.time_base = SUBTITLE_TIME_BASE
            self.output.mux(packet)
            self.written += 1

    def finish(self) -> None:
        self.write_until(math.inf)


def _output_format(path: Path) -> str:
    return _FORMATS_BY_SUFFIX.get(path.suffix.lower(), "mp4")


def _open_output(path: Path) -> OutputContainer:
    fmt = _output_format(path)
    options = _FASTSTART if fmt in {"mp4", "mov"} else {}
    container = av.open(str(path), mode="w", format=fmt, options=options)
    assert isinstance(container, OutputContainer)
    return container


def _even_rgb(image: np.ndarray) -> np.ndarray:
    """Pad an odd width or height by repeating the last column or row.

    yuv420p stores chroma per 2x2 block, so H.264 needs even sizes; padding
    (rather than cropping) keeps every source pixel.
    """
    height, width = image.shape[:2]
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return image


def _check_rgb(image: np.ndarray, index: int) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != _RGB_CHANNELS:
        raise ValueError(
            f"frame {index} must be RGB uint8 of shape (H, W, 3), got {image.dtype} {image.shape}"
        )


def _frames_to_length(
    frames: Iterable[np.ndarray], n_frames: int | None
) -> Iterator[tuple[int, np.ndarray]]:
    """Number the frames; with ``n_frames`` set, stop there or hold the last frame.

    A source one frame short or long of the duration is normal (rounding);
    more than that means a stage produced the wrong number of frames, so it is
    logged. At most two frames past ``n_frames`` are pulled from the source.
    """
    source = iter(frames)
    index = -1
    image: np.ndarray | None = None
    for index, image in enumerate(source):
        if n_frames is not None and index >= n_frames:
            if next(source, None) is not None:  # two or more extra: not rounding
                log.warning("frame source runs past the requested %d frames; the rest is ignored", n_frames)
            return
        yield index, image
    if image is None:
        raise ValueError("encode_mp4 got no frames; a video needs at least one")
    if n_frames is not None and index + 1 < n_frames:
        missing = n_frames - index - 1
        if missing > 1:
            log.warning("holding the last frame for %d frames to reach the requested duration", missing)
        for held in range(index + 1, n_frames):
            yield held, image


def encode_mp4(
    out_path: PathLike,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    audio: np.ndarray | None,
    audio_rate: int | None,
    duration_s: float | None = None,
    *,
    crf: int = DEFAULT_CRF,
    preset: str = DEFAULT_PRESET,
    audio_layout: str | None = None,
    language: str | None = None,
    subtitles: Sequence[Segment] | None = None,
) -> Path:
    """Write RGB frames (and optional audio and soft subtitles) as H.264 + AAC, streaming the frames.

    ``frames`` may be any iterator of ``(H, W, 3)`` uint8 arrays; it is consumed
    one frame at a time and never held, so memory does not grow with length.
    Odd sizes are padded to even ones (yuv420p). ``fps`` may be a float such as
    ``29.97``; it is snapped to the exact broadcast rate (``30000/1001``).

    Duration: with ``duration_s`` the video holds ``round(duration_s * fps)``
    frames (extra frames are dropped, a short source holds its last frame) and
    the audio is trimmed or zero-padded to ``duration_s``; without it the
    frames' own count sets the duration and the audio is fitted to
    ``n_frames / fps``, which requires consuming the frames first only in the
    sense that the audio tail is written after the last frame. Either way the
    file's duration is within one frame of the target. Returns ``out_path``.

    ``audio`` is ``(samples,)`` or ``(samples, channels)`` in ``audio_layout``
    (FFmpeg's default for the channel count when not given). ``subtitles`` become
    a ``mov_text`` track; ``language`` (ISO 639-2) tags it and the audio.
    """
    if (audio is None) != (audio_rate is None):
        raise ValueError("give audio and audio_rate together, or neither")
    rate = _as_frame_rate(fps)
    n_frames = round(duration_s * rate) if duration_s is not None else None
    if n_frames is not None and n_frames < 1:
        raise ValueError(f"duration_s {duration_s} is shorter than one frame at {float(rate):.3f} fps")
    final = Path(out_path)
    with _atomic_output(final) as temp:
        output = _open_output(temp)
        with output:
            video: VideoStream | None = None
            track: _AudioTrack | None = None
            cues: _SubtitleTrack | None = None
            frame_count = 0
            for index, image in _frames_to_length(frames, n_frames):
                _check_rgb(image, index)
                image = _even_rgb(image)
                if video is None:
                    video = _add_h264_stream(output, rate, image.shape[1], image.shape[0], crf, preset)
                    if audio is not None and audio_rate is not None:
                        # Without duration_s the audio length is only known at the
                        # end; fit it to "everything" now and trim at finish.
                        target = duration_s if duration_s is not None else _audio_seconds(audio, audio_rate)
                        track = _AudioTrack(output, audio, audio_rate, target, audio_layout, language)
                    if subtitles is not None:
                        cues = _SubtitleTrack(output, subtitles, language,
                                              duration_s if duration_s is not None else math.inf)
                elif image.shape[:2] != (video.codec_context.height, video.codec_context.width):
                    raise ValueError(
                        f"frame {index} is {image.shape[1]}x{image.shape[0]}, but the video is "
                        f"{video.codec_context.width}x{video.codec_context.height}"
                    )
                output.mux(video.encode(_yuv_frame(image, index, rate)))
                frame_count = index + 1
                if track is not None:
                    track.write_until(float((index + 1) / rate))
                if cues is not None:
                    cues.write_until(float((index + 1) / rate))
            assert video is not None  # _frames_to_length raises on no frames
            output.mux(video.encode(None))
            if track is not None:
                if duration_s is None:
                    track.samples = fit_length(track.samples, round(frame_count / rate * track.rate))
                track.finish()
            if cues is not None:
                cues.finish()
    return final


def _audio_seconds(audio: np.ndarray, rate: int) -> float:
    return int(np.asarray(audio).shape[0]) / rate


def _as_frame_rate(fps: float | Fraction) -> Fraction:
    """An exact frame rate: 29.97 -> 30000/1001, 25.0 -> 25, Fractions as given.

    Floats near a broadcast rate snap to it (a float cannot hold 30000/1001,
    and 2997/100 would drift from NTSC sources by 0.1 frame an hour); others
    become the nearest fraction with a denominator up to 1001.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if isinstance(fps, Fraction):
        return fps
    for standard in _STANDARD_FRAME_RATES:
        if abs(fps - standard) < FRAME_RATE_SNAP:
            return standard
    return Fraction(fps).limit_denominator(_NTSC_DENOMINATOR)


def _add_h264_stream(
    output: OutputContainer, rate: Fraction, width: int, height: int, crf: int, preset: str
) -> VideoStream:
    stream = output.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
    stream.width = width
    stream.height = height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = 1 / rate
    context = stream.codec_context
    context.color_range = _MPEG_RANGE
    context.colorspace = _BT709
    context.color_primaries = _BT709
    context.color_trc = _BT709
    return stream


def _yuv_frame(image: np.ndarray, index: int, rate: Fraction) -> av.VideoFrame:
    """An encoder-ready frame: BT.709 limited-range yuv420p, ``pts = index`` in ``1/fps``."""
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
        format="yuv420p",
        dst_colorspace=Colorspace.ITU709,
        dst_color_range=ColorRange.MPEG,
    )
    frame.pts = index
    frame.time_base = 1 / rate
    return frame


def mux_audio(
    video_in: PathLike,
    audio: np.ndarray,
    audio_rate: int,
    out_path: PathLike,
    *,
    audio_layout: str | None = None,
    language: str | None = None,
    subtitles: Sequence[Segment] | None = None,
) -> Path:
    """Copy ``video_in``'s video stream untouched and give it ``audio`` as its AAC track.

    The video packets are remuxed, not re-encoded: no quality loss, and fast.
    Any audio (and subtitle stream) of ``video_in`` is dropped. The new audio is
    trimmed or zero-padded to the video stream's duration, so the output is
    exactly as long as the picture. ``audio_layout``, ``language`` and
    ``subtitles`` as for :func:`encode_mp4`. Returns ``out_path``.
    """
    source = Path(video_in)
    final = Path(out_path)
    info = probe(source)
    with _open_input(source) as container, _reading(source):
        stream = _video_stream(container)
        if stream is None:
            raise InputError(f"{source} has no video stream", "give the video to put the dub on")
        origin = _origin_s(container)
        video_end = _stream_end_s(stream)
        duration = video_end - origin if video_end is not None else info.duration_s
        with _atomic_output(final) as temp:
            output = _open_output(temp)
            with output:
                out_video = output.add_stream_from_template(stream)
                track = _AudioTrack(output, audio, audio_rate, duration, audio_layout, language)
                cues = None if subtitles is None else _SubtitleTrack(output, subtitles, language, duration)
                for packet in container.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    assert packet.time_base is not None
                    at = float(packet.dts * packet.time_base) - origin
                    track.write_until(at)
                    if cues is not None:
                        cues.write_until(at)
                    packet.stream = out_video
                    output.mux(packet)
                track.finish()
                if cues is not None:
                    cues.finish()
    return final


__all__: list[str] = [
    "MediaInfo",
    "channel_names",
    "decode_audio",
    "default_layout",
    "encode_mp4",
    "iter_frames",
    "mux_audio",
    "probe",
    "read_frames",
    "soundtrack_layout",
    "soundtrack_rate",
]
