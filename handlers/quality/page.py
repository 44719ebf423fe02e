"""The QC report for people: one self-contained HTML page rendered from ``qc.json``.

Why HTML with inline SVG: the page must open anywhere (a browser, a ticket attachment,
an object-store preview) with no server, scripts or network, and drawing the few charts
QC needs (waveform, loudness over time, slots vs speech, similarity bars, sync offsets)
takes a few lines of SVG rather than a plotting dependency in every worker image.

Reading order is "what went wrong first": a verdict banner, the failed gates in red and
the warnings in amber, then the table of every check, then the charts that explain them.
Everything is rendered from the report document alone, so ``polydub report`` can
re-render a job's page from its stored ``qc.json`` at any time.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from handlers.quality.verdicts import MIN_FACE_SHARE

# --- page geometry (px, in the SVG's own coordinates; the SVG scales to the page) -----
CHART_WIDTH = 960
LEFT_MARGIN = 70
RIGHT_MARGIN = 20
WAVE_HEIGHT = 150
LOUDNESS_HEIGHT = 170
TIMING_ROW_HEIGHT = 22
BAR_ROW_HEIGHT = 34
SYNC_HEIGHT = 140
AXIS_HEIGHT = 24
#: Loudness chart range below the target and above it, in LU.
LOUDNESS_BELOW_TARGET_LU = 30.0
LOUDNESS_ABOVE_TARGET_LU = 12.0
#: Roughly how many labelled ticks a time axis gets.
TIME_TICKS = 12

# --- colours --------------------------------------------------------------------------
RED = "#c62828"
AMBER = "#b26a00"
GREEN = "#2e7d32"
BLUE = "#1565c0"
GREY = "#9e9e9e"
LIGHT = "#e3f2fd"
GRID = "#e0e0e0"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212121;
       max-width: 1000px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #616161; margin-bottom: 14px; }
.banner { padding: 12px 16px; border-radius: 6px; color: white; font-size: 18px; font-weight: 600; }
.fail { background: #c62828; } .warn { background: #b26a00; } .pass { background: #2e7d32; }
.issues { list-style: none; padding: 0; margin: 10px 0; }
.issues li { margin: 6px 0; padding: 8px 12px; border-left: 6px solid; border-radius: 3px; }
.issues li.fail { border-color: #c62828; background: #ffebee; color: #b71c1c; }
.issues li.warn { border-color: #b26a00; background: #fff8e1; color: #6d4c00; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #fafafa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pill { display: inline-block; padding: 1px 8px; border-radius: 10px; color: white; font-size: 12px;
        font-weight: 600; white-space: nowrap; }
.pill.fail { background: #c62828; } .pill.warn { background: #b26a00; } .pill.pass { background: #2e7d32; }
.pill.skip { background: #757575; }
tr.bad td { background: #fff5f5; }
svg { width: 100%; height: auto; display: block; margin: 4px 0 10px; }
svg text { font: 11px system-ui, sans-serif; fill: #424242; }
.legend { color: #616161; font-size: 12px; }
.legend span { display: inline-block; width: 12px; height: 10px; margin: 0 4px 0 12px; vertical-align: middle; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:{spec}}{suffix}"


# --- SVG helpers ----------------------------------------------------------------------


def _svg(height: float, body: Sequence[str], label: str) -> str:
    return (f'<svg viewBox="0 0 {CHART_WIDTH} {height:.0f}" role="img" aria-label="{_e(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>")


def _time_scale(duration_s: float) -> Callable[[float], float]:
    span = CHART_WIDTH - LEFT_MARGIN - RIGHT_MARGIN
    return lambda t: LEFT_MARGIN + span * (t / duration_s if duration_s > 0 else 0.0)


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(1, ticks)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _time_axis(x: Callable[[float], float], duration_s: float, top: float, bottom: float) -> list[str]:
    """Vertical grid lines and second labels under a chart spanning ``top..bottom``."""
    step = _nice_step(duration_s, TIME_TICKS)
    out = []
    t = 0.0
    while t <= duration_s + 1e-9:
        out.append(f'<line x1="{x(t):.1f}" y1="{top:.1f}" x2="{x(t):.1f}" y2="{bottom:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{x(t):.1f}" y="{bottom + 14:.1f}" text-anchor="middle">{t:g} s</text>')
        t += step
    return out


def _slots(segments: list[dict[str, Any]], x: Callable[[float], float], top: float, bottom: float) -> list[str]:
    out = []
    for s in segments:
        out.append(f'<rect x="{x(s["slot_start_s"]):.1f}" y="{top:.1f}" '
                   f'width="{max(1.0, x(s["slot_end_s"]) - x(s["slot_start_s"])):.1f}" height="{bottom - top:.1f}" '
                   f'fill="{LIGHT}"><title>segment {s["index"]}: {s["slot_start_s"]:.2f}-{s["slot_end_s"]:.2f} s'
                   f'</title></rect>')
        out.append(f'<text x="{x(s["slot_start_s"]) + 2:.1f}" y="{top + 11:.1f}" fill="{BLUE}">{s["index"]}</text>')
    return out


# --- charts ---------------------------------------------------------------------------


def waveform_chart(report: dict[str, Any]) -> str:
    """The mix's waveform (min/max per bucket) over the subtitle slots."""
    wave = report.get("series", {}).get("waveform")
    duration = float(report["media"]["source_duration_s"])
    if not wave or not wave.get("max"):
        return "<p>No waveform in this report.</p>"
    x = _time_scale(duration)
    top, bottom = 8.0, 8.0 + WAVE_HEIGHT
    mid, half = (top + bottom) / 2, (bottom - top) / 2
    hop = float(wave["hop_s"])
    upper = [f"{x(i * hop):.1f},{mid - half * min(1.0, v):.1f}" for i, v in enumerate(wave["max"])]
    lower = [f"{x(i * hop):.1f},{mid - half * max(-1.0, v):.1f}" for i, v in enumerate(wave["min"])]
    body = _slots(report["segments"], x, top, bottom) + _time_axis(x, duration, top, bottom)
    body.append(f'<polygon points="{" ".join(upper + lower[::-1])}" fill="#455a64" stroke="#455a64" stroke-width="0.5"/>')
    for level in (1.0, -1.0):
        y = mid - half * level
        body.append(f'<line x1="{LEFT_MARGIN}" y1="{y:.1f}" x2="{CHART_WIDTH - RIGHT_MARGIN}" y2="{y:.1f}" '
                    f'stroke="{RED}" stroke-dasharray="3,3"/>')
    body.append(f'<text x="{LEFT_MARGIN - 6}" y="{top + 8:.1f}" text-anchor="end">+1</text>')
    body.append(f'<text x="{LEFT_MARGIN - 6}" y="{mid + 4:.1f}" text-anchor="end">0</text>')
    body.append(f'<text x="{LEFT_MARGIN - 6}" y="{bottom:.1f}" text-anchor="end">-1</text>')
    return _svg(bottom + AXIS_HEIGHT, body, "waveform of the mix")


def loudness_chart(report: dict[str, Any]) -> str:
    """Momentary loudness (400 ms) of the mix against the integrated target and its tolerance."""
    series = report.get("series", {}).get("loudness")
    duration = float(report["media"]["source_duration_s"])
    if not series or not series.get("lufs"):
        return "<p>No loudness series in this report.</p>"
    target = float(report["thresholds"]["loudness_target_lufs"])
    tolerance = float(report["thresholds"]["loudness_tolerance_lu"])
    lo, hi = target - LOUDNESS_BELOW_TARGET_LU, target + LOUDNESS_ABOVE_TARGET_LU
    top, bottom = 8.0, 8.0 + LOUDNESS_HEIGHT
    x = _time_scale(duration)

    def y(lufs: float) -> float:
        return bottom - (min(hi, max(lo, lufs)) - lo) / (hi - lo) * (bottom - top)

    body = _slots(report["segments"], x, top, bottom) + _time_axis(x, duration, top, bottom)
    body.append(f'<rect x="{LEFT_MARGIN}" y="{y(target + tolerance):.1f}" width="{CHART_WIDTH - LEFT_MARGIN - RIGHT_MARGIN}" '
                f'height="{y(target - tolerance) - y(target + tolerance):.1f}" fill="#c8e6c9" opacity="0.6"/>')
    for level in range(int(math.ceil(lo / 10) * 10), int(hi) + 1, 10):
        body.append(f'<text x="{LEFT_MARGIN - 6}" y="{y(level) + 4:.1f}" text-anchor="end">{level}</text>')
        body.append(f'<line x1="{LEFT_MARGIN}" y1="{y(level):.1f}" x2="{CHART_WIDTH - RIGHT_MARGIN}" '
                    f'y2="{y(level):.1f}" stroke="{GRID}"/>')
    hop, block = float(series["hop_s"]), float(series["block_s"])
    points = " ".join(f"{x(i * hop + block / 2):.1f},{y(v):.1f}" for i, v in enumerate(series["lufs"]) if v is not None)
    body.append(f'<polyline points="{points}" fill="none" stroke="{BLUE}" stroke-width="1.5"/>')
    body.append(f'<line x1="{LEFT_MARGIN}" y1="{y(target):.1f}" x2="{CHART_WIDTH - RIGHT_MARGIN}" y2="{y(target):.1f}" '
                f'stroke="{GREEN}" stroke-dasharray="6,3"/>')
    integrated = report["loudness"]["mix_lufs"]
    if integrated is not None and math.isfinite(integrated):
        colour = GREEN if abs(integrated - target) <= tolerance else RED
        body.append(f'<line x1="{LEFT_MARGIN}" y1="{y(integrated):.1f}" x2="{CHART_WIDTH - RIGHT_MARGIN}" '
                    f'y2="{y(integrated):.1f}" stroke="{colour}" stroke-width="2"/>')
        body.append(f'<text x="{CHART_WIDTH - RIGHT_MARGIN - 4}" y="{y(integrated) - 4:.1f}" text-anchor="end" '
                    f'fill="{colour}">integrated {integrated:.1f} LUFS</text>')
    body.append(f'<text x="{LEFT_MARGIN + 4}" y="{y(target) - 4:.1f}" fill="{GREEN}">target {target:.0f} LUFS</text>')
    return _svg(bottom + AXIS_HEIGHT, body, "loudness of the mix over time")


def timing_chart(report: dict[str, Any]) -> str:
    """One row per segment: the subtitle slot (grey) and where the dub's speech is (green/red)."""
    segments = report["segments"]
    if not segments:
        return "<p>No segments.</p>"
    duration = float(report["media"]["source_duration_s"])
    x = _time_scale(duration)
    top = 6.0
    bottom = top + TIMING_ROW_HEIGHT * len(segments)
    body = _time_axis(x, duration, top, bottom)
    for row, s in enumerate(segments):
        y = top + row * TIMING_ROW_HEIGHT
        body.append(f'<text x="{LEFT_MARGIN - 6}" y="{y + 15:.1f}" text-anchor="end">#{s["index"]}</text>')
        body.append(f'<rect x="{x(s["slot_start_s"]):.1f}" y="{y + 3:.1f}" '
                    f'width="{max(1.0, x(s["slot_end_s"]) - x(s["slot_start_s"])):.1f}" height="{TIMING_ROW_HEIGHT - 6}" '
                    f'fill="none" stroke="{GREY}" stroke-width="1.5"><title>slot {s["slot_start_s"]:.2f}-'
                    f'{s["slot_end_s"]:.2f} s</title></rect>')
        if s["speech_start_s"] is not None:
            colour = GREEN if s["on_time"] else RED
            body.append(f'<rect x="{x(s["speech_start_s"]):.1f}" y="{y + 7:.1f}" '
                        f'width="{max(1.0, x(s["speech_end_s"]) - x(s["speech_start_s"])):.1f}" '
                        f'height="{TIMING_ROW_HEIGHT - 14}" fill="{colour}" opacity="0.85"><title>speech '
                        f'{s["speech_start_s"]:.2f}-{s["speech_end_s"]:.2f} s (start {s["start_offset_s"]:+.2f} s, '
                        f'end {s["end_offset_s"]:+.2f} s)</title></rect>')
        else:
            body.append(f'<text x="{x(s["slot_start_s"]) + 4:.1f}" y="{y + 15:.1f}" fill="{RED}">no speech</text>')
        if s["next_start_s"] < duration:
            body.append(f'<line x1="{x(s["next_start_s"]):.1f}" y1="{y + 2:.1f}" x2="{x(s["next_start_s"]):.1f}" '
                        f'y2="{y + TIMING_ROW_HEIGHT - 2:.1f}" stroke="{AMBER}" stroke-dasharray="2,2"/>')
    return _svg(bottom + AXIS_HEIGHT, body, "segment timing: slots and speech")


def similarity_chart(report: dict[str, Any]) -> str:
    """Per speaker: similarity before (grey) and after (blue, red below the floor) conversion."""
    speakers = report["speakers"]
    if not speakers:
        return "<p>No speaker could be measured.</p>"
    minimum = float(report["thresholds"]["similarity_min"])
    span = CHART_WIDTH - LEFT_MARGIN - RIGHT_MARGIN - 60

    def x(value: float) -> float:
        return LEFT_MARGIN + 60 + span * max(0.0, min(1.0, value))

    top = 6.0
    bottom = top + BAR_ROW_HEIGHT * len(speakers)
    body = []
    for tick in np.arange(0.0, 1.01, 0.1):
        body.append(f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{bottom:.1f}" stroke="{GRID}"/>')
        body.append(f'<text x="{x(tick):.1f}" y="{bottom + 14:.1f}" text-anchor="middle">{tick:.1f}</text>')
    for row, s in enumerate(speakers):
        y = top + row * BAR_ROW_HEIGHT
        body.append(f'<text x="{LEFT_MARGIN + 54}" y="{y + 20:.1f}" text-anchor="end">{_e(s["speaker"])}</text>')
        if s["before"] is not None:
            body.append(f'<rect x="{x(0):.1f}" y="{y + 4:.1f}" width="{x(s["before"]) - x(0):.1f}" height="10" '
                        f'fill="{GREY}"/>')
            body.append(f'<text x="{x(s["before"]) + 4:.1f}" y="{y + 13:.1f}">before VC {s["before"]:.2f}</text>')
        colour = BLUE if s["after"] >= minimum else RED
        body.append(f'<rect x="{x(0):.1f}" y="{y + 16:.1f}" width="{max(0.0, x(s["after"]) - x(0)):.1f}" height="12" '
                    f'fill="{colour}"/>')
        body.append(f'<text x="{x(s["after"]) + 4:.1f}" y="{y + 26:.1f}" fill="{colour}">dub {s["after"]:.2f}</text>')
    body.append(f'<line x1="{x(minimum):.1f}" y1="{top - 2}" x2="{x(minimum):.1f}" y2="{bottom:.1f}" stroke="{RED}" '
                f'stroke-width="2" stroke-dasharray="5,3"/>')
    return _svg(bottom + AXIS_HEIGHT, body, "speaker similarity")


def sync_chart(report: dict[str, Any]) -> str:
    """Per chunk: the lip-sync offset in ms against the ± bound; grey where nothing was measurable."""
    chunks = report["chunks"]
    if not chunks:
        return "<p>No chunk was measured.</p>"
    bound_ms = 1000 * float(report["thresholds"]["av_offset_max_s"])
    search_ms = 1000 * float(report["thresholds"]["av_search_s"])
    top, bottom = 10.0, 10.0 + SYNC_HEIGHT
    mid = (top + bottom) / 2

    def y(ms: float) -> float:
        return mid - (bottom - top) / 2 * max(-1.0, min(1.0, ms / search_ms))

    slot = (CHART_WIDTH - LEFT_MARGIN - RIGHT_MARGIN) / len(chunks)
    body = [f'<rect x="{LEFT_MARGIN}" y="{y(bound_ms):.1f}" width="{CHART_WIDTH - LEFT_MARGIN - RIGHT_MARGIN}" '
            f'height="{y(-bound_ms) - y(bound_ms):.1f}" fill="#c8e6c9" opacity="0.6"/>']
    for ms in (-search_ms, -bound_ms, 0.0, bound_ms, search_ms):
        body.append(f'<line x1="{LEFT_MARGIN}" y1="{y(ms):.1f}" x2="{CHART_WIDTH - RIGHT_MARGIN}" y2="{y(ms):.1f}" '
                    f'stroke="{GRID if abs(ms) != bound_ms else GREEN}"/>')
        body.append(f'<text x="{LEFT_MARGIN - 6}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms:+.0f} ms</text>')
    min_r = float(report["thresholds"]["av_min_correlation"])
    for i, c in enumerate(chunks):
        cx = LEFT_MARGIN + slot * (i + 0.5)
        width = min(60.0, slot * 0.5)
        label = f"chunk {c['chunk_index']}"
        no_face = c["frames"] == 0 or c["face_frames"] / c["frames"] < MIN_FACE_SHARE
        if c["offset_s"] is None or no_face:
            note = "no face" if no_face else "no speech"
            body.append(f'<text x="{cx:.1f}" y="{mid - 6:.1f}" text-anchor="middle" fill="{AMBER}">{note}</text>')
        else:
            ms = 1000 * c["offset_s"]
            weak = (c["correlation"] or 0.0) < min_r
            colour = GREY if weak else (GREEN if abs(ms) <= bound_ms else RED)
            y0, y1 = sorted((y(0.0), y(ms)))
            body.append(f'<rect x="{cx - width / 2:.1f}" y="{y0:.1f}" width="{width:.1f}" '
                        f'height="{max(2.0, y1 - y0):.1f}" fill="{colour}"><title>{label}: {ms:+.0f} ms, '
                        f'r={c["correlation"]:.2f}</title></rect>')
            body.append(f'<text x="{cx:.1f}" y="{(y1 + 14) if ms < 0 else (y0 - 4):.1f}" text-anchor="middle" '
                        f'fill="{colour}">{ms:+.0f} ms (r {c["correlation"]:.2f})</text>')
        body.append(f'<text x="{cx:.1f}" y="{bottom + 14:.1f}" text-anchor="middle">{label} '
                    f'({c["start_s"]:.1f}-{c["end_s"]:.1f} s)</text>')
    return _svg(bottom + AXIS_HEIGHT, body, "lip sync offset per chunk")


# --- the page -------------------------------------------------------------------------


def _status(check: dict[str, Any]) -> tuple[str, str]:
    if check["passed"]:
        return ("skip", "skipped") if check["reason"].startswith("skipped") else ("pass", "pass")
    return ("fail", "FAIL") if check["gate"] else ("warn", "warn")


def _checks_table(checks: list[dict[str, Any]]) -> str:
    rows = []
    for c in checks:
        css, text = _status(c)
        value = c["value"]
        shown = _fmt(value, ".3g") if isinstance(value, float) else ("–" if value is None else _e(value))
        rows.append(f'<tr class="{"bad" if css == "fail" else ""}"><td><span class="pill {css}">{text}</span></td>'
                    f'<td>{_e(c["name"])}{"" if c["gate"] else " <small>(warning only)</small>"}</td>'
                    f'<td class="num">{shown}</td><td>{_e(c["reason"])}</td></tr>')
    return ("<table><tr><th>verdict</th><th>check</th><th>value</th><th>why</th></tr>"
            + "".join(rows) + "</table>")


def _segments_table(report: dict[str, Any]) -> str:
    rows = []
    for s in report["segments"]:
        rows.append(
            f'<tr class="{"" if s["on_time"] else "bad"}"><td>{s["index"]}</td><td>{_e(s["speaker"])}</td>'
            f'<td class="num">{s["slot_start_s"]:.2f}-{s["slot_end_s"]:.2f}</td>'
            f'<td class="num">{_fmt(s["start_offset_s"], "+.2f")}</td><td class="num">{_fmt(s["end_offset_s"], "+.2f")}</td>'
            f'<td class="num">{_fmt(s["overflow_s"], ".2f")}</td><td class="num">{_fmt(s["speedup"], ".2f", "x")}</td>'
            f'<td class="num">{_fmt(s["longest_gap_s"], ".2f")}</td><td>{_e(s.get("text", ""))}</td></tr>')
    return ("<table><tr><th>#</th><th>speaker</th><th>slot (s)</th><th>start off (s)</th><th>end off (s)</th>"
            "<th>overflow (s)</th><th>speed-up</th><th>longest gap (s)</th><th>text</th></tr>"
            + "".join(rows) + "</table>")


def _loudness_table(report: dict[str, Any]) -> str:
    lo, t = report["loudness"], report["thresholds"]
    rows = [
        ("mix, integrated", _fmt(lo["mix_lufs"], ".1f", " LUFS"),
         f'target {t["loudness_target_lufs"]:.1f} ± {t["loudness_tolerance_lu"]:.1f} LU'),
        ("dub track, integrated", _fmt(lo["dub_lufs"], ".1f", " LUFS"), "before mixing (for reference)"),
        ("dub track, sample peak", _fmt(lo["dub_peak_dbfs"], "+.1f", " dBFS"), "above 0: float overs (warning)"),
        ("mix, true peak (4x)", _fmt(lo["true_peak_dbtp"], ".1f", " dBTP"),
         f'ceiling {t["true_peak_ceiling_dbfs"]:.1f} dBTP (+{t["true_peak_tolerance_db"]:.1f} dB tolerance)'),
        ("clipped samples", f'mix {lo["mix_clipped"]}, dub {lo["dub_clipped"]}',
         f'limit {t["max_clipped_share"]:.3%} of samples'),
    ]
    return ("<table><tr><th>measure</th><th>value</th><th>limit</th></tr>"
            + "".join(f'<tr><td>{a}</td><td class="num">{b}</td><td>{_e(c)}</td></tr>' for a, b, c in rows)
            + "</table>")


def _intelligibility(report: dict[str, Any]) -> str:
    """Each segment's subtitle and what the recogniser heard, before and after voice conversion."""
    i = report["intelligibility"]
    if not i["measured"]:
        return f"<p>{_e(i['reason'])}.</p>"
    t = report["thresholds"]
    metric = _e(i["metric"].upper())
    before = i.get("error_rate_before")
    summary = f"{metric} of the delivered dub: <b>{i['error_rate']:.1%}</b>"
    if before is not None:
        summary += (f" · before voice conversion: <b>{before:.1%}</b> · change "
                    f"<b>{100 * (i['error_rate'] - before):+.1f} points</b> "
                    f"(limit +{100 * t['max_wer_increase']:.0f})")
    summary += f" · limit {t['max_wer']:.0%} each"
    head = "<tr><th>#</th><th>subtitle</th><th>scored as</th>"
    head += "<th>heard before VC</th><th>error</th>" if before is not None else ""
    head += "<th>heard in the dub</th><th>error</th></tr>"
    rows = []
    for s in i["segments"]:
        bad = s["error_rate"] > t["max_wer"] or (s.get("error_rate_before") or 0.0) > t["max_wer"]
        cells = f'<td>{s["index"]}</td><td>{_e(s["reference"])}</td><td>{_e(s["scored"])}</td>'
        if before is not None:
            cells += (f'<td>{_e(s.get("hypothesis_before") or "")}</td>'
                      f'<td class="num">{_fmt(s.get("error_rate_before"), ".0%")}</td>')
        cells += f'<td>{_e(s["hypothesis"])}</td><td class="num">{s["error_rate"]:.0%}</td>'
        rows.append(f'<tr class="{"bad" if bad else ""}">{cells}</tr>')
    return f"<p>{summary}</p><table>{head}{''.join(rows)}</table>"


def render_html(report: dict[str, Any]) -> str:
    """The whole page for one job's ``qc.json`` document."""
    checks = report["checks"]
    failed = [c for c in checks if c["gate"] and not c["passed"]]
    warned = [c for c in checks if not c["gate"] and not c["passed"]]
    if failed:
        banner = (f'<div class="banner fail">QC FAILED: {len(failed)} check(s) failed'
                  + (f", {len(warned)} warning(s)" if warned else "") + "</div>")
    elif warned:
        banner = f'<div class="banner warn">QC passed with {len(warned)} warning(s)</div>'
    else:
        banner = '<div class="banner pass">QC passed: every check is within its limits</div>'
    issues = "".join(f'<li class="fail"><b>{_e(c["name"])}</b>: {_e(c["reason"])}</li>' for c in failed)
    issues += "".join(f'<li class="warn"><b>{_e(c["name"])}</b> (warning): {_e(c["reason"])}</li>' for c in warned)
    issues += "".join(f'<li class="warn"><b>input fixed</b>: {_e(fix)}</li>' for fix in report.get("input_fixes", []))
    engines = report.get("engines", {})
    media = report["media"]
    t = report["thresholds"]
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report.get("stage_timings_s", {}).items())
    legend_slots = f'<span style="background:{LIGHT}"></span>subtitle slots'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>QC report {_e(report["job_id"])}</title>
<style>{STYLE}</style></head><body>
<h1>QC report: {_e(report["job_id"])}</h1>
<div class="meta">target language <b>{_e(report.get("target_lang", "?"))}</b> ·
engines: tts <b>{_e(engines.get("tts"))}</b>, vc <b>{_e(engines.get("vc"))}</b>,
lip sync <b>{_e(engines.get("lipsync"))}</b> ({_e(t["engine_set"])} engine set) ·
{media["source_duration_s"]:.2f} s at {media["fps"]:g} fps</div>
{banner}
<ul class="issues">{issues}</ul>
<h2>Checks</h2>
{_checks_table(checks)}
<h2>Sound over time</h2>
<div class="legend">{legend_slots}<span style="background:#455a64"></span>waveform of the mix
<span style="background:{RED}"></span>full scale</div>
{waveform_chart(report)}
<div class="legend"><span style="background:{BLUE}"></span>momentary loudness (400 ms)
<span style="background:#c8e6c9"></span>target ± tolerance</div>
{loudness_chart(report)}
{_loudness_table(report)}
<h2>Segment timing</h2>
<div class="legend"><span style="border:1.5px solid {GREY}"></span>subtitle slot
<span style="background:{GREEN}"></span>speech on time <span style="background:{RED}"></span>speech off time
<span style="border-left:2px dashed {AMBER}"></span>next segment starts</div>
{timing_chart(report)}
{_segments_table(report)}
<h2>Speaker similarity</h2>
<div class="legend"><span style="background:{GREY}"></span>synthesis (before voice conversion)
<span style="background:{BLUE}"></span>delivered dub <span style="border-left:2px dashed {RED}"></span>floor
{t["similarity_min"]:.2f} ({_e(t["engine_set"])} engines; neural VC targets 0.85, 0.87 hoped for)</div>
{similarity_chart(report)}
<h2>Lip sync</h2>
<div class="legend"><span style="background:#c8e6c9"></span>within ±{1000 * t["av_offset_max_s"]:.0f} ms ·
positive: the picture is late · grey: lips barely follow the dub (correlation below {t["av_min_correlation"]:.2f})</div>
{sync_chart(report)}
<h2>Intelligibility</h2>
{_intelligibility(report)}
<p class="legend">stage time: {_e(timings or "–")}</p>
</body></html>
"""
