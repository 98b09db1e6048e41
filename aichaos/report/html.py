"""The HTML report: one self-contained file, a pure function of a journal (``FORMATS["html"]``).

What it shows: the verdict and hypothesis; charts over the run's time line (latency percentiles,
error rate by kind, request rate against the expected rate and the users, the scraped service
metrics, and the LLM figures when the load measured streams), each with the fault periods as bands,
the phase boundaries as lines and the SLO's absolute limits as dashed lines; the steady-state strip
(one cell per window: steady, violated, unknown); the gates and the SLO's bounds with their values;
the phases and faults; the distinct errors; the environment (runtime, proxy, versions, services).

The charts are drawn by uPlot (https://github.com/leeoniya/uPlot, MIT), vendored minified with its
licence in ``assets/`` and inlined, so that opening the report makes no network request. Chosen on
size and speed among the candidates: uPlot is 51 KB minified and draws 10,000s of points on a canvas
in milliseconds; Vega-Lite needs Vega and vega-embed (about 800 KB, and it compiles a spec at load);
Plotly's smallest full bundle is about 3.5 MB, over the report's 1.5 MB budget by itself. Time-series
lines, bands and markers are all a run's report needs, which is exactly uPlot's domain.
(``benchmarks/html_report.py`` measures a 10-minute run's report: size, render and open time.)

Per-second figures: a second's latency percentiles are of the successful requests that started in it,
and left blank (insufficient data) below the run's minimum number of samples, as the analysis does;
they are never averaged. Counters are shown as their increase per second, gauges as scraped.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from aichaos.metrics.analysis import DEFAULT_MIN_SAMPLES
from aichaos.metrics.histogram import percentile
from aichaos.metrics.hypothesis import format_value
from aichaos.metrics.samples import Bucket
from aichaos.metrics.scrape import split_key
from aichaos.report import formats
from aichaos.report.journal import Journal

MAX_SCRAPED_SERIES = 24  # across the services: a runtime's process_* and python_* series are left out
_SKIPPED_PREFIXES = ("process_", "python_", "go_")
_LLM_HISTOGRAMS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"))


@cache
def _asset(name: str) -> str:
    return (resources.files("aichaos.report") / "assets" / name).read_text(encoding="utf-8")


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


def _seconds(journal: Journal) -> range:
    """Every second of the time line: from the first sample (or t0) to the last phase's end."""
    t0 = int(journal.t0 or journal.started_at)
    ends = [math.ceil(p.end) for p in journal.phases]
    first = min([t0, *journal.samples])
    last = max([t0, *ends, *(s + 1 for s in journal.samples)])
    return range(first, last)


def _series(label: str, values: Iterable[float | None], **extra: Any) -> dict[str, Any]:
    return {"label": label, "values": list(values), **extra}


def _latency_chart(journal: Journal, seconds: range, min_samples: int) -> dict[str, Any]:
    def pct(bucket: Bucket | None, q: float) -> float | None:
        if bucket is None or sum(bucket.hist.values()) < min_samples:
            return None
        return _round(percentile(bucket.hist, q))

    buckets = [journal.samples.get(s) for s in seconds]
    slo = journal.experiment.get("steady_state", {}).get("slo", {})
    limits = [{"label": f"SLO {name} max", "value": slo[name]["max"]}
              for name in ("p50_ms", "p95_ms", "p99_ms") if isinstance(slo.get(name), dict)
              and slo[name].get("max") is not None]
    return {"id": "latency", "title": "Latency of successful requests, by the second they started",
            "unit": "ms", "note": f"blank: fewer than {min_samples} successful requests in the second",
            "series": [_series(f"p{q}", (pct(b, q) for b in buckets)) for q in (50, 95, 99)], "limits": limits}


def _error_chart(journal: Journal, seconds: range) -> dict[str, Any]:
    kinds = sorted({kind for b in journal.samples.values() for kind in b.errors})
    buckets = [journal.samples.get(s) for s in seconds]

    def rate(bucket: Bucket | None, kind: str | None) -> float | None:
        if bucket is None or not bucket.count:
            return None
        errors = bucket.error_count if kind is None else bucket.errors.get(kind, 0)
        return _round(100.0 * errors / bucket.count)

    series = [_series("all errors", (rate(b, None) for b in buckets))]
    series += [_series(kind, (rate(b, kind) for b in buckets)) for kind in kinds]
    bound = journal.rules.get("error_rate_max")
    limits = [] if bound is None else [{"label": "SLO error rate max", "value": 100.0 * bound}]
    return {"id": "errors", "title": "Error rate by kind", "unit": "%", "series": series, "limits": limits}


def _rate_chart(journal: Journal, seconds: range) -> dict[str, Any]:
    achieved = [None if (b := journal.samples.get(s)) is None else b.count for s in seconds]
    expected: list[float | None] = []
    for s in seconds:
        if s in journal.offered:
            expected.append(_round(journal.offered[s]))
            continue
        phase = next((p for p in journal.phases if p.start <= s < p.end), None)
        expected.append(None if phase is None or phase.expected_rps is None else _round(phase.expected_rps))
    series = [_series("achieved req/s", achieved), _series("expected req/s", expected, dash=True)]
    if journal.users:
        series.append(_series("users", (journal.users.get(s) for s in seconds), axis="right"))
    return {"id": "rate", "title": "Request rate against the expected rate", "unit": "req/s", "series": series,
            "limits": []}


def _scraped_charts(journal: Journal, seconds: range) -> list[dict[str, Any]]:
    """One chart per scraped service: the series an SLO reads first, then the others, within a cap."""
    store = journal.scrapes
    read: dict[str, set[str]] = {key.partition("/")[0]: set() for p in journal.phases for key in p.service_metrics}
    for p in journal.phases:
        for key in p.service_metrics:
            service, _, selector = key.partition("/")
            read[service].add(split_key(selector.split(" / ")[0])[0])
    chosen: list[tuple[str, str, str]] = []  # (service, series, kind)
    for service in sorted(store.kinds):
        kinds = store.kinds[service]
        keys = [k for k in kinds if not k.startswith(_SKIPPED_PREFIXES) and not k.endswith("_created")]
        keys.sort(key=lambda k: (split_key(k)[0] not in read.get(service, set()), k))
        chosen += [(service, k, kinds[k]) for k in keys]
    chosen = chosen[:MAX_SCRAPED_SERIES]
    charts = []
    for service in dict.fromkeys(service for service, _, _ in chosen):
        series = []
        for _, key, kind in (c for c in chosen if c[0] == service):
            values: list[float | None] = []
            previous: float | None = None
            for s in seconds:
                value = store.series.get(s, {}).get(service, {}).get(key)
                if kind == "counter":
                    # an increase per second; a counter that went down was reset (its value is the increase)
                    shown = None if value is None or previous is None else (
                        value - previous if value >= previous else value)
                    previous = value if value is not None else previous
                    values.append(_round(shown))
                else:
                    values.append(_round(value))
            series.append(_series(key + (" /s" if kind == "counter" else ""), values))
        # series of very different sizes (bytes beside a ratio) go to charts of their own
        def top(entry: dict[str, Any]) -> float:
            return max((abs(v) for v in entry["values"] if v is not None), default=0.0)

        groups: list[list[dict[str, Any]]] = []
        for entry in sorted(series, key=top):
            if groups and top(entry) <= 50 * max(top(groups[-1][0]), 1.0):
                groups[-1].append(entry)
            else:
                groups.append([entry])
        for n, members in enumerate(groups):
            charts.append({"id": f"scraped-{service}" + (f"-{n + 1}" if n else ""),
                           "title": f"{service}: scraped metrics (counters per second)", "unit": "",
                           "series": members, "limits": []})
    return charts


def _llm_charts(journal: Journal, seconds: range, min_samples: int) -> list[dict[str, Any]]:
    """Streams' TTFT, TPOT and ITL by second, and tokens and goodput per second, when any were measured."""
    stats = [getattr(journal.samples.get(s), "llm", None) for s in seconds]
    if not any(s is not None for s in stats):
        return []

    def pct(stat: Any, name: str, q: float) -> float | None:
        hist = getattr(stat, name, None) if stat is not None else None
        if not hist or sum(hist.values()) < min_samples:
            return None
        return _round(percentile(hist, q))

    latency = [_series(f"{label} p{q}", (pct(s, name, q) for s in stats))
               for name, label in _LLM_HISTOGRAMS for q in (50, 95)]
    throughput = [
        _series("output tokens/s", (None if s is None else s.output_tokens for s in stats)),
        _series("goodput req/s", (None if s is None else s.good for s in stats), axis="right"),
    ]
    return [{"id": "llm-latency", "title": "LLM streams: time to first token, per output token, between tokens "
                                           "(ITL: each gap; AIPerf calls TPOT 'ITL')",
             "unit": "ms", "note": f"blank: fewer than {min_samples} samples in the second",
             "series": latency, "limits": []},
            {"id": "llm-throughput", "title": "LLM output tokens and goodput per second", "unit": "tokens/s",
             "series": throughput, "limits": []}]


def chart_data(journal: Journal) -> dict[str, Any]:
    """What the page's script draws: the time line (seconds from t0), phases, fault bands and charts."""
    seconds = _seconds(journal)
    t0 = journal.t0 or journal.started_at
    min_samples = int(journal.rules.get("min_samples") or DEFAULT_MIN_SAMPLES)
    charts = [_latency_chart(journal, seconds, min_samples), _error_chart(journal, seconds),
              _rate_chart(journal, seconds), *_llm_charts(journal, seconds, min_samples),
              *_scraped_charts(journal, seconds)]
    end = journal.ended_at or seconds.stop
    faults = [{"label": f["description"], "start": round(f["applied_at"] - t0, 3),
               "end": round((f.get("reverted_at") or end) - t0, 3)}
              for f in journal.faults if f.get("applied_at") is not None]
    return {"x": [s - int(t0) for s in seconds],
            "phases": [{"name": p.name, "start": round(p.start - t0, 3), "end": round(p.end - t0, 3)}
                       for p in journal.phases],
            "faults": faults, "charts": charts}


# ---------------------------------------------------------------- the page
def _table(headers: list[str], rows: list[list[str]], classes: Mapping[str, str] | None = None) -> str:
    classes = classes or {}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    head = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    body = "".join(
        "<tr>" + "".join(f'<td class="{classes[c]}">{html.escape(c)}</td>' if c in classes else
                         f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _strip(journal: Journal) -> str:
    """The steady-state windows as one cell per window start, on the charts' time line."""
    if not journal.windows:
        return "<p>No window was judged (the run ended before its baseline).</p>"
    t0 = int(journal.t0 or journal.started_at)
    seconds = _seconds(journal)
    span = max(1, len(seconds))
    cells = []
    for w in journal.windows:
        x = (w.start - seconds.start) / span * 1000
        title = f"{w.start - t0}s to {w.end - t0}s: {w.status.value}"
        if w.broken:
            title += " (" + ", ".join(w.broken) + ")"
        cells.append(f'<rect class="{w.status.value}" x="{x:.2f}" y="0" width="{1000 / span:.2f}" height="20">'
                     f"<title>{html.escape(title)}</title></rect>")
    counts = {s: sum(1 for w in journal.windows if w.status.value == s) for s in ("steady", "violated", "unknown")}
    legend = " · ".join(f'<span class="key {s}"></span>{n} {s}' for s, n in counts.items())
    width = int(journal.experiment.get("steady_state", {}).get("window", 5))
    return (f'<svg class="strip" viewBox="0 0 1000 20" preserveAspectRatio="none" role="img" '
            f'aria-label="steady-state windows">{"".join(cells)}</svg>'
            f'<p class="legend">{legend} (windows of {width}s, one starting each second, placed at their start)</p>')


def _slo_rows(journal: Journal) -> list[list[str]]:
    return [[s.metric, s.limit, ", ".join(f"{p} {format_value(s.metric, v)}" for p, v in s.values.items()),
             f"{s.broken} of {s.judged}", "held" if s.held else "NOT HELD"] for s in journal.slos]


def _error_rows(journal: Journal) -> list[list[str]]:
    """Each kind of failed request: how many, and the first and last second it was seen in."""
    t0 = int(journal.t0 or journal.started_at)
    seen: dict[str, list[int]] = {}
    for second, bucket in sorted(journal.samples.items()):
        for kind, n in bucket.errors.items():
            entry = seen.setdefault(kind, [0, second, second])
            entry[0] += n
            entry[2] = second
    return [[kind, str(n), f"{first - t0}s", f"{last - t0}s"] for kind, (n, first, last) in seen.items()]


def _environment_rows(journal: Journal) -> list[list[str]]:
    rows = []
    for key, value in journal.environment.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        rows.append([key, str(value)])
    for name, service in journal.services.items():
        rows.append([f"service {name}", ", ".join(f"{k} {v}" for k, v in service.items() if k != "log")])
    for edge, proxy in journal.proxies.items():
        rows.append([f"edge {edge}", f"proxy {proxy.get('proxy')} listening on {proxy.get('listen')} "
                                     f"to {proxy.get('upstream')}"])
    if journal.stack_ready_s is not None:
        rows.append(["stack ready after", f"{journal.stack_ready_s:.1f}s"])
    rows.append(["journal", f"version written by aichaos {journal.aichaos_version}, {journal.path}"])
    return rows


def _json_for_script(data: Any) -> str:
    # inside <script>, "</" would end the element; JSON allows "<\/" for it
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def html_report(journal: Journal) -> str:
    """The report as one HTML file: every script, style and datum inline, nothing fetched."""
    name = journal.experiment.get("name", "")
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(journal.started_at))
    verdict = journal.verdict or journal.status
    sections = [f'<header class="{html.escape(verdict)}"><h1>aichaos run {html.escape(journal.run_id)}: '
                f"{html.escape(name)}</h1><p class=verdict>Verdict: {html.escape(verdict.upper())} "
                f"(exit {journal.exit_code}, status {html.escape(journal.status)}) · started {started}</p></header>"]
    lines = formats.hypothesis_lines(journal) + formats.result_lines(journal) + formats.load_notes(journal)
    if journal.stop:
        lines.append(f"stopped: {journal.stop}")
    if lines:
        sections.append("<section><h2>Hypothesis and result</h2><ul>" +
                        "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul></section>")
    sections.append('<section><h2>Time line</h2><p class="legend"><span class="key fault"></span>fault applied '
                    '<span class="key phase"></span>phase boundary <span class="key limit"></span>SLO limit · '
                    'drag to zoom, double-click to reset</p><div id="charts"></div>'
                    "<h3>Steady-state windows</h3>" + _strip(journal) + "</section>")
    if journal.gates or journal.slos:
        body = ""
        if journal.gates:
            body += "<h3>Gates</h3>" + _table(formats.GATE_HEADERS, formats.gate_rows(journal),
                                              {"pass": "pass", "FAIL": "fail"})
        if journal.slos:
            body += "<h3>SLO</h3>" + _table(["metric", "limit", "measured by phase", "windows broken", "hypothesis"],
                                            _slo_rows(journal), {"held": "pass", "NOT HELD": "fail"})
        sections.append(f"<section><h2>Gates and SLO</h2>{body}</section>")
    if journal.phases:
        body = _table(formats.PHASE_HEADERS, formats.phase_rows(journal))
        if journal.fault_results:
            body += "<h3>Faults</h3>" + _table(formats.FAULT_HEADERS, formats.fault_rows(journal))
        metric_rows = formats.service_metric_rows(journal)
        if metric_rows:
            body += "<h3>Service metrics</h3>" + _table(formats.service_metric_headers(journal), metric_rows)
        sections.append(f"<section><h2>Phases</h2>{body}</section>")
    errors = _error_rows(journal)
    if errors or journal.errors or journal.leftovers:
        body = _table(["kind of failed request", "requests", "first seen", "last seen"], errors) if errors else ""
        items = journal.errors + [f"not cleaned up: {e}" for e in journal.leftovers]
        if items:
            body += "<ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in items) + "</ul>"
        sections.append(f"<section><h2>Errors</h2>{body}</section>")
    sections.append("<section><h2>Environment</h2>" + _table(["", ""], _environment_rows(journal)) + "</section>")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        # the page may run its own inline script and nothing else, and reach no network
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>aichaos {html.escape(name)} {html.escape(journal.run_id)}: {html.escape(verdict)}</title>"
        f"<style>{_asset('uPlot.min.css')}\n{_asset('report.css')}</style></head><body>"
        + "\n".join(sections)
        + f'<script type="application/json" id="aichaos-data">{_json_for_script(chart_data(journal))}</script>'
        f"<script>{_asset('uPlot.iife.min.js')}</script><script>{_asset('report.js')}</script></body></html>\n"
    )
