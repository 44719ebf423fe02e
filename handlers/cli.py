"""The ``polydub`` command line.

Every user mistake ends as one readable line and a non-zero exit, never a
traceback: :class:`~handlers.runtime.errors.PolydubError` carries the reason
and the fix. Heavy imports (torch, PyAV, the bus) happen inside the commands
so ``polydub --help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from handlers.runtime.errors import PolydubError
from handlers.runtime.logs import configure_logging
from handlers.runtime.settings import get_settings, settings_markdown
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


# --- commands ------------------------------------------------------------------


def cmd_sample(args: argparse.Namespace) -> int:
    from handlers.sample import make_sample

    files = make_sample(
        Path(args.output), target_lang=args.lang, seconds=args.seconds, source_lang=args.source_lang
    )
    print(f"video:     {files.video}")
    print(f"subtitles: {files.subtitles}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from handlers.dryrun import describe_plan, plan_job
    from handlers.embedded import run_job, summarize
    from schemas.events import EngineChoice

    settings = get_settings()
    video, subs = Path(args.video), Path(args.subs)
    if args.dry_run:
        print(describe_plan(plan_job(video, subs, settings), target_lang=args.to))
        return 0
    if not args.verbose:
        # The progress bar tells the story; per-event access logs would bury it.
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    output = Path(args.output) if args.output else video.with_suffix(f".{args.to}.mp4")
    engines = EngineChoice(tts=args.tts, vc=args.vc, lipsync=args.lipsync)
    result = asyncio.run(run_job(video, subs, args.to, output, engines, settings))
    print(summarize(result))
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from infra import stack

    settings = get_settings()
    services = tuple(args.services.split(",")) if args.services else stack.ALL_SERVICES
    if args.action == "up":
        stack.stack_up(settings, services)
    elif args.action == "down":
        stack.stack_down(settings)
    else:
        stack.stack_status(settings)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown())
        return 0
    for name, value in get_settings().model_dump().items():
        shown = "***" if "secret" in name and value else value
        print(f"POLYDUB_{name.upper()}={'' if shown is None else shown}")
    return 0


# --- parser --------------------------------------------------------------------


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
    sample.add_argument("-o", "--output", default="out/sample.mp4", help="video path; subtitles go beside it")
    sample.set_defaults(func=cmd_sample)

    run = sub.add_parser("run", help="dub one video on this machine (embedded broker, store, engines)")
    run.add_argument("video", help="the video to dub")
    run.add_argument("--subs", required=True, help="target-language subtitles (SRT or WebVTT)")
    run.add_argument("--to", type=_language, required=True, help="target language")
    run.add_argument("-o", "--output", default=None, help="output video (default: VIDEO.LANG.mp4)")
    run.add_argument("--tts", choices=("espeak", "fastpitch", "vallex"), default="espeak")
    run.add_argument("--vc", choices=("world", "rvc", "none"), default="world")
    run.add_argument("--lipsync", choices=("mouthwarp", "wav2lip", "none"), default="mouthwarp")
    run.add_argument("--dry-run", action="store_true", help="validate the inputs and print the plan only")
    run.add_argument("-v", "--verbose", action="store_true", help="show every stage's log lines")
    run.set_defaults(func=cmd_run)

    stack = sub.add_parser("stack", help="start/stop the local broker, SeaweedFS and Triton")
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument("--services", default=None, help="comma list of broker,s3,triton (default: all)")
    stack.set_defaults(func=cmd_stack)

    config = sub.add_parser("config", help="print the effective POLYDUB_* settings")
    config.add_argument("--markdown", action="store_true", help="print the settings table for docs")
    config.set_defaults(func=cmd_config)
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
