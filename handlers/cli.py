"""The ``polydub`` command line.

Every user mistake ends as one readable line and a non-zero exit, never a
traceback: :class:`~schemas.errors.PolydubError` carries the reason
and the fix. Heavy imports (torch, PyAV, the bus) happen inside the commands
so ``polydub --help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from handlers.runtime.logs import configure_logging
from handlers.runtime.settings import Settings, get_settings, settings_markdown
from schemas.errors import InputError, PolydubError
from schemas.events import SUPPORTED_LANGUAGES

log = logging.getLogger("polydub")

EXIT_USER_ERROR = 2
EXIT_FAILED_JOB = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def _language(value: str) -> str:
    lang = value.lower()
    if lang not in SUPPORTED_LANGUAGES:
        raise argparse.ArgumentTypeError(
            f"unsupported language {value!r}; choose one of {', '.join(SUPPORTED_LANGUAGES)}"
        )
    return lang


def _positive_seconds(value: str) -> float:
    seconds = float(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be positive, got {value}")
    return seconds


def _frame_size(value: str) -> tuple[int, int]:
    width, sep, height = value.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 64 or int(height) < 64:
        raise argparse.ArgumentTypeError(f"frame size {value!r} is not WIDTHxHEIGHT with both at least 64, e.g. 1280x720")
    return int(width), int(height)


# --- commands ------------------------------------------------------------------


def cmd_sample(args: argparse.Namespace) -> int:
    from handlers.sample import make_sample

    shape = {name: value for name, value in (("fps", args.fps), ("size", args.size)) if value is not None}
    files = make_sample(
        Path(args.output), target_lang=args.lang, seconds=args.seconds, source_lang=args.source_lang, **shape
    )
    print(f"video:     {files.video}")
    print(f"subtitles: {files.subtitles}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # The embedded run serves every model in process, whatever POLYDUB_INFERENCE says;
    # an engine that cannot run here is refused before anything heavy is imported.
    settings = get_settings().model_copy(update={"inference": "local"})
    chosen = _engines(args, settings)

    import asyncio

    from handlers.dryrun import describe_plan, plan_job
    from handlers.embedded import run_job, summarize
    from schemas.events import EngineChoice

    video, subs = Path(args.video), Path(args.subs)
    if args.dry_run:
        print(describe_plan(plan_job(video, subs, settings), target_lang=args.to))
        return 0
    engines = EngineChoice(**chosen)
    voices = _voices(args, engines.vc, settings)
    if not args.verbose:
        # The progress bar tells the story; per-event access logs would bury it.
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    output = Path(args.output) if args.output else video.with_suffix(f".{args.to}.mp4")
    result = asyncio.run(run_job(video, subs, args.to, output, engines, settings, voices=voices))
    print(summarize(result))
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from handlers import localstack

    settings = get_settings()
    services = tuple(args.services.split(",")) if args.services else localstack.SERVICES
    if args.action == "up":
        localstack.stack_up(settings, services)
    elif args.action == "down":
        localstack.stack_down(settings)
    else:
        localstack.stack_status(settings)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from handlers.quality.report import write_job_report

    store = Path(args.store) if args.store else None
    print(f"QC report: {write_job_report(get_settings(), args.job, Path(args.output), store)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown())
        return 0
    for name, value in get_settings().model_dump().items():
        shown = "***" if "secret" in name and value else value
        print(f"POLYDUB_{name.upper()}={'' if shown is None else shown}")
    return 0


# --- cluster commands: worker, submit, status, watch, trace --------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from handlers.app import parse_stages
    from handlers.worker import run_worker

    settings = get_settings()
    if args.metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": args.metrics_port})
    return run_worker(settings, parse_stages(args.stages))


def cmd_submit(args: argparse.Namespace) -> int:
    import asyncio

    from handlers.client import submit_job
    from schemas.events import EngineChoice

    settings = get_settings()
    engines = EngineChoice(**_engines(args, settings))
    voices = _voices(args, engines.vc, settings)
    submission = asyncio.run(
        submit_job(Path(args.video), Path(args.subs), args.to, engines, settings, job_id=args.job_id, voices=voices)
    )
    print(submission.job_id, flush=True)
    return _follow_job(submission.job_id, args.timeout) if args.wait else 0


def _follow_job(job_id: str, timeout_s: float | None) -> int:
    """Print the job's events until it ends; a failed job exits like ``polydub run``'s."""
    import asyncio

    from handlers.client import follow, print_lines
    from schemas.events import DubFailed

    outcome = asyncio.run(follow(get_settings(), job_id, timeout_s=timeout_s, emit=print_lines))
    if isinstance(outcome, DubFailed):
        from handlers.embedded import JobFailed

        raise JobFailed(outcome)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from handlers.client import read_status, render_status, status_json
    from handlers.runtime.objectstore import open_store

    settings = get_settings()
    status = read_status(open_store(settings), args.job)
    print(status_json(status) if args.json else render_status(status, stalled_after_s=settings.status_stalled_after_s))
    return EXIT_FAILED_JOB if status.state == "failed" else 0


def cmd_watch(args: argparse.Namespace) -> int:
    import asyncio

    from handlers.client import follow, print_lines

    if args.job is not None:
        return _follow_job(args.job, args.timeout)
    asyncio.run(follow(get_settings(), None, from_beginning=args.from_beginning,
                       timeout_s=args.timeout, emit=print_lines))
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from handlers.runtime.keys import validate_job_id
    from handlers.tracing_view import load_job_spans, render_job

    settings = get_settings()
    job_id = validate_job_id(args.job)
    path = Path(args.file) if args.file else settings.trace_file
    if settings.otlp_endpoint and not args.file:
        raise InputError(
            f"spans go to the OTLP collector at {settings.otlp_endpoint}, not to a file",
            "look the trace up in your tracing backend by the job_id attribute, or pass --file",
        )
    if not path.is_file():
        raise InputError(
            f"no span file at {path}",
            "set POLYDUB_TRACE_FILE to the file the workers and `polydub submit` write",
        )
    spans, unreadable = load_job_spans(path, job_id)
    if not spans:
        raise InputError(
            f"no spans of job {job_id} in {path}",
            "check the job id; workers and `polydub submit` must share POLYDUB_TRACE_FILE",
        )
    print(render_job(job_id, spans, show_messaging=args.all, unreadable=unreadable))
    return 0


def _add_cluster_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``worker``, ``submit``, ``status``, ``watch``, ``trace``: the distributed path."""
    worker = sub.add_parser("worker", help="run pipeline stages against the configured Kafka, store, inference")
    worker.add_argument("--stages", required=True,
                        help="comma list of ingest,chunking,synthesis,conversion,lipsync,merging,qc,retry or 'all'")
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="serve /metrics and /healthz on this port (default POLYDUB_METRICS_PORT; 0 = off)")
    worker.set_defaults(func=cmd_worker)

    submit = sub.add_parser("submit", help="upload a video and its subtitles and publish media.submitted")
    submit.add_argument("video", help="the video to dub")
    submit.add_argument("--subs", required=True, help="target-language subtitles (SRT or WebVTT)")
    submit.add_argument("--to", type=_language, required=True, help="target language")
    _add_engine_options(submit)
    submit.add_argument("--job-id", default=None, help="job id (default: a new random one); also the idempotency key")
    submit.add_argument("--wait", action="store_true", help="follow the job's events until it completes or fails")
    submit.add_argument("--timeout", type=_positive_seconds, default=None, help="with --wait: give up after this many seconds")
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="a job's stage, progress, outputs or failure, from the object store")
    status.add_argument("job", help="the job id")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)

    watch = sub.add_parser("watch", help="follow dub.status/dub.completed/dub.failed events")
    watch.add_argument("job", nargs="?", default=None, help="one job (ends when it does); default: every job")
    watch.add_argument("--from-beginning", action="store_true",
                       help="every job: start at the oldest retained event instead of now")
    watch.add_argument("--timeout", type=_positive_seconds, default=None, help="stop after this many seconds")
    watch.set_defaults(func=cmd_watch)

    trace = sub.add_parser("trace", help="print a job's span tree with timings, from POLYDUB_TRACE_FILE")
    trace.add_argument("job", help="the job id")
    trace.add_argument("--file", default=None, help="span file (default: POLYDUB_TRACE_FILE)")
    trace.add_argument("--all", action="store_true", help="also show the Kafka create/publish/process spans")
    trace.set_defaults(func=cmd_trace)


# --- parser --------------------------------------------------------------------


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--tts``, ``--vc``, ``--lipsync``: the registry's choices and defaults."""
    from schemas.registry import DEFAULT_ENGINES, ENGINE_KINDS, engine, engine_names

    for kind in ENGINE_KINDS:
        names = engine_names(kind)
        described = "; ".join(f"{n}: {engine(kind, n).description}" for n in names)
        parser.add_argument(f"--{kind}", choices=names, default=DEFAULT_ENGINES[kind],
                            help=f"{kind} engine (default {DEFAULT_ENGINES[kind]}) - {described}")
    parser.add_argument("--voice", default=None, metavar="NAME",
                        help="RVC voice for every speaker (with --vc rvc): a .pth of POLYDUB_RVC_VOICES_DIR")
    parser.add_argument("--pitch-shift", type=float, default=None, metavar="SEMITONES",
                        help="shift the voice's pitch (with --voice; default: toward the speaker's register)")


def _engines(args: argparse.Namespace, settings: Settings) -> dict[str, str]:
    """The engine choice of a run or submit, refused before any work if it cannot run with ``settings``."""
    from handlers.runtime.served import check_engines

    engines = {"tts": args.tts, "vc": args.vc, "lipsync": args.lipsync}
    check_engines(engines, settings)
    return engines


def _voices(args: argparse.Namespace, vc_engine: str, settings: Settings) -> dict[str, Any]:
    """``--voice`` / ``--pitch-shift`` as the submission's voices map, checked against the voices directory."""
    from handlers.runtime.voices import check_voice_names
    from schemas.events import ANY_SPEAKER, SpeakerVoice

    if args.voice is None:
        if args.pitch_shift is not None:
            raise InputError("--pitch-shift shifts a named voice, and no --voice is given", "add --voice NAME")
        voices: dict[str, Any] = {}
    else:
        try:
            voices = {ANY_SPEAKER: SpeakerVoice(voice=args.voice, pitch_shift=args.pitch_shift)}
        except ValueError as exc:
            raise InputError(f"--voice {args.voice!r} / --pitch-shift {args.pitch_shift}: {exc}",
                             "name a voice file of the voices directory (without .pth); shift by -24..24 "
                             "semitones") from None
    check_voice_names(vc_engine, voices, settings)
    return voices


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polydub",
        description="Dub a video into ko, en, ja or zh in the original speaker's voice.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = sub.add_parser("sample", help="write a test video with speech and target subtitles")
    sample.add_argument("--lang", type=_language, default="ko", help="subtitle (target) language")
    sample.add_argument("--source-lang", type=_language, default=None,
                        help="spoken language of the sample (default: one unlike --lang)")
    sample.add_argument("--seconds", type=_positive_seconds, default=12.0, help="length of the video")
    sample.add_argument("--size", type=_frame_size, default=None, metavar="WxH",
                        help="frame size, e.g. 1280x720 (default 256x256)")
    sample.add_argument("--fps", type=_positive_seconds, default=None, help="frame rate (default 25)")
    sample.add_argument("-o", "--output", default="out/sample.mp4", help="video path; subtitles go beside it")
    sample.set_defaults(func=cmd_sample)

    run = sub.add_parser("run", help="dub one video on this machine (embedded broker, store, engines)")
    run.add_argument("video", help="the video to dub")
    run.add_argument("--subs", required=True, help="target-language subtitles (SRT or WebVTT)")
    run.add_argument("--to", type=_language, required=True, help="target language")
    run.add_argument("-o", "--output", default=None, help="output video (default: VIDEO.LANG.mp4)")
    _add_engine_options(run)
    run.add_argument("--dry-run", action="store_true", help="validate the inputs and print the plan only")
    run.add_argument("-v", "--verbose", action="store_true", help="show every stage's log lines")
    run.set_defaults(func=cmd_run)

    stack = sub.add_parser("stack", help="start/stop the local broker, SeaweedFS and Triton")
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument("--services", default=None, help="comma list of seaweed,broker,triton (default: all)")
    stack.set_defaults(func=cmd_stack)

    report = sub.add_parser("report", help="(re)render a job's QC report page from its stored files")
    report.add_argument("job", help="the job id")
    report.add_argument("--store", default=None, help="a local object-store folder (default: the configured store)")
    report.add_argument("-o", "--output", default=".", help="folder for JOB.qc.html and JOB.qc.json")
    report.set_defaults(func=cmd_report)

    config = sub.add_parser("config", help="print the effective POLYDUB_* settings")
    config.add_argument("--markdown", action="store_true", help="print the settings table for docs")
    config.set_defaults(func=cmd_config)

    _add_cluster_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except Exception as exc:  # pydantic's message names the variable and the problem
        print(f"polydub: error: bad configuration: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    configure_logging(settings.log_level, "text" if sys.stderr.isatty() else settings.log_format)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PolydubError as exc:
        print(f"polydub: error: {exc.reason}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return EXIT_USER_ERROR if exc.code.name == "INPUT_REJECTED" else EXIT_FAILED_JOB
    except KeyboardInterrupt:
        print("polydub: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into `head` and the like: the reader left, nothing went wrong.
        sys.stderr.close()
        return 0
    except Exception:
        if args.debug:
            raise
        log.exception("internal error")
        print(
            "polydub: internal error (a bug in polydub, not in your input); "
            "rerun with --debug for the traceback and report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
