"""Pure formatters: journal → text. Writers and printers live elsewhere.

Every format is a function of a journal alone and ``FORMATS`` maps a format's name to it; that is
what ``aichaos run`` writes and prints and what ``aichaos report`` re-renders. Adding a format is its
function (here, or a module of its own for a large one) and one entry in ``FORMATS``.

The text summary is also kept as blocks (``summary``): tables, and messages with a level, which the
terminal prints in colour (tables on stdout, messages on stderr); ``summary_text`` is the same
summary as plain text.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from rich.console import Console
from rich.markup import escape as markup_escape
from rich.table import Table as RichTable

from aichaos.metrics.analysis import Metrics
from aichaos.metrics.hypothesis import format_value
from aichaos.report.journal import Journal


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(metrics: Metrics, value: float | None) -> str:
    """A latency percentile, or why there is none: too few successful requests to compute one."""
    if value is None and metrics.ok_count is not None and metrics.count and metrics.insufficient:
        return f"insufficient ({metrics.latency_samples} ok)"
    return _ms(value)


def _pct_ms(metrics: Metrics, value: float | None) -> str:
    text = _pct(metrics, value)
    return text if value is None else f"{text} ms"


def phase_rows(journal: Journal) -> list[list[str]]:
    """One row per phase: name, duration, users, requests, rps (and its share of the expected
    rate), p50, p95, p99, error rate, faults."""
    rows = []
    for phase in journal.phases:
        m = phase.metrics
        faults = ", ".join(f["description"] for f in journal.faults if f["phase"] == phase.name)
        users = "-" if phase.users is None else f"{phase.users:.0f}"
        if m is None:
            rows.append([phase.name, f"{phase.end - phase.start:.0f}s", users, "-", "-", "-", "-", "-", "-",
                         faults])
            continue
        rps = f"{m.rps:.1f}"
        if phase.load_ratio is not None:
            rps += f" ({phase.load_ratio:.0%})"
        rows.append([phase.name, f"{phase.end - phase.start:.0f}s", users, str(m.count), rps,
                     _pct(m, m.p50_ms), _pct(m, m.p95_ms), _pct(m, m.p99_ms), f"{m.error_rate:.2%}", faults])
    return rows


PHASE_HEADERS = ["phase", "length", "users", "requests", "rps (of expected)", "p50 ms", "p95 ms", "p99 ms",
                 "errors", "faults"]


LLM_HEADERS = ["phase", "LLM requests", "TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms", "ITL p99 ms", "TPOT p50 ms",
               "E2EL p95 ms", "max gap ms", "tokens/s", "goodput/s", "tokens from"]


def llm_rows(journal: Journal) -> list[list[str]]:
    """One row per phase with LLM requests: their counts and token metrics (``aichaos.metrics.llm``),
    and where the token counts came from (the server's usage, or the chunks)."""
    rows = []
    for phase in journal.phases:
        llm = phase.metrics.llm if phase.metrics is not None else None
        if llm is None:
            continue
        source = llm.get("tokens_from", {})
        origin = ", ".join(f"{kind} {n}" for kind, n in source.items() if n) or "-"
        rows.append([phase.name, f"{llm['streams']} of {llm['requests']} ok",
                     *[_ms(llm.get(k)) for k in ("ttft_p50_ms", "ttft_p95_ms", "itl_p50_ms", "itl_p99_ms",
                                                 "tpot_p50_ms", "e2el_p95_ms", "max_gap_ms")],
                     f"{llm['tokens_per_s']:.1f}", f"{llm['goodput']:.2f}", origin])
    return rows


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def service_metric_rows(journal: Journal) -> list[list[str]]:
    """One row per scraped metric that an SLO or stop condition reads: its summary in each phase
    (a gauge's mean, a counter's rate per second, a ratio of increases), as the analysis recorded it."""
    keys = list(journal.phases[0].service_metrics) if journal.phases else []
    return [[key, *[_value(phase.service_metrics.get(key)) for phase in journal.phases]] for key in keys]


def service_metric_headers(journal: Journal) -> list[str]:
    return ["service metric (gauge: mean, counter: per s)", *[p.name for p in journal.phases]]


def load_notes(journal: Journal) -> list[str]:
    """Plain-language notes on the load: a load that fell short, the error budget spent."""
    notes = []
    for phase in journal.phases:
        ratio = phase.load_ratio
        if ratio is not None and ratio < 0.8 and phase.metrics is not None and phase.expected_rps is not None:
            kind = "offered" if phase.offered_rps is not None else "expected from the baseline"
            notes.append(f"{phase.name}: the load achieved {phase.metrics.rps:.1f} req/s of {phase.expected_rps:.1f} "
                         f"{kind} ({ratio:.0%}): the service slowed the load down, so fewer requests saw the fault")
    saturated = journal.load_totals.get("load_saturated_s")
    if saturated:
        highest = journal.load_totals.get("load_cpu_max", 0)
        notes.append(f"the load process was at 90% or more of a core for {saturated}s (at most {highest:.0%}): the "
                     "load itself may have been the bottleneck, and token gaps it timed read short; add load workers "
                     "(load.workers)")
    if journal.error_budget_spent is not None:
        notes.append(f"error budget spent over the run: {journal.error_budget_spent:.0%} of what the error-rate SLO "
                     "allows for as many requests")
    return notes
GATE_HEADERS = ["gate", "phase", "value", "limit", "result"]


def gate_rows(journal: Journal) -> list[list[str]]:
    return [[g.name, g.phase, g.value, g.limit, "pass" if g.passed else "FAIL"] for g in journal.gates]


def fault_rows(journal: Journal) -> list[list[str]]:
    out = []
    for r in journal.fault_results:
        ttd = "no violation" if r.time_to_detect_s is None else f"{r.time_to_detect_s:.1f}s"
        if r.degraded is False:
            ttr = "not degraded"
        else:
            ttr = "not recovered" if r.time_to_recover_s is None else f"{r.time_to_recover_s:.1f}s"
        if r.revert_s is not None and r.revert_s >= 0.05:
            ttr += f" (revert took {r.revert_s:.1f}s)"
        p50 = r.degradation["p50_ms"]
        added = "-" if p50.delta is None else f"{p50.delta:+.1f} ms"
        out.append([r.phase, ttd, ttr, added])
    return out


FAULT_HEADERS = ["fault phase", "time to detect", "time to recover", "p50 change"]


def junit_xml(journal: Journal) -> str:
    """One test suite per run: one test case per gate, one per bound of the SLO (``slo.METRIC``, from
    journals of version 4 on: ``aichaos.metrics.hypothesis``) with the value measured in each phase in
    its message (a passing case carries it as its output), and errors and interrupts as a failing case."""
    suite = quoteattr(journal.experiment.get("name", "experiment"))
    cases: list[str] = []
    for g in journal.gates:
        name = quoteattr(f"{g.name}[{g.phase}]" if g.phase else g.name)
        body = "" if g.passed else (
            f'<failure message={quoteattr(f"{g.value} (limit {g.limit})")}>{escape(g.detail)}</failure>')
        cases.append(f"    <testcase classname={suite} name={name}>{body}</testcase>")
    for slo in journal.slos:
        measured = ", ".join(f"{phase} {format_value(slo.metric, value)}" for phase, value in slo.values.items())
        message = f"{measured} (limit {slo.limit})"
        body = (f"<system-out>{escape(message)}; {escape(slo.detail)}</system-out>" if slo.held else
                f"<failure message={quoteattr(message)}>{escape(slo.detail)}</failure>")
        cases.append(f"    <testcase classname={suite} name={quoteattr('slo.' + slo.metric)}>{body}</testcase>")
    if journal.verdict in ("error", "interrupted"):
        message = "; ".join(journal.errors) or journal.verdict
        cases.append(f"    <testcase classname={suite} "
                     f"name=\"run\"><error message={quoteattr(message)}/></testcase>")
    failures = sum(1 for g in journal.gates if not g.passed) + sum(1 for s in journal.slos if not s.held)
    errors = 1 if journal.verdict in ("error", "interrupted") else 0
    duration = (journal.ended_at or journal.started_at) - journal.started_at
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuite name={quoteattr("aichaos:" + journal.experiment.get("name", ""))} tests="{len(cases)}" '
        f'failures="{failures}" errors="{errors}" time="{duration:.3f}">\n' + "\n".join(cases) + "\n</testsuite>\n"
    )


def markdown(journal: Journal) -> str:
    def table(headers: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(lines)

    name = journal.experiment.get("name", "")
    out = [f"# aichaos run {journal.run_id}: {name}", "",
           f"**Verdict: {journal.verdict.upper()}** (exit {journal.exit_code}, status {journal.status})", ""]
    if journal.experiment.get("game_day"):
        out = [f"# aichaos game day {journal.run_id}", "", f"**{_game_day_line(journal)}**", ""]
    hypothesis, result = hypothesis_lines(journal), result_lines(journal)
    if hypothesis:
        out += ["## Hypothesis and result", ""] + [f"- {line}" for line in hypothesis + result] + [""]
    elif journal.experiment.get("description"):
        out += [journal.experiment["description"], ""]
    out += ["## Phases", "", table(PHASE_HEADERS, phase_rows(journal)), ""]
    notes = load_notes(journal)
    if notes:
        out += [f"- {n}" for n in notes] + [""]
    llm = llm_rows(journal)
    if llm:
        out += ["## LLM requests", "", table(LLM_HEADERS, llm), ""]
    distinct = error_lines(journal)
    if distinct:
        out += ["### Distinct errors", ""] + [f"- `{line.replace('`', chr(39))}`" for line in distinct] + [""]
    metric_rows = service_metric_rows(journal)
    if metric_rows:
        out += ["## Service metrics", "", table(service_metric_headers(journal), metric_rows), ""]
    if journal.fault_results:
        out += ["## Faults", "", table(FAULT_HEADERS, fault_rows(journal)), ""]
    if journal.gates:
        out += ["## Gates", "", table(GATE_HEADERS, gate_rows(journal)), ""]
    if journal.errors:
        out += ["## Errors", ""] + [f"- {e}" for e in journal.errors] + [""]
    if journal.leftovers:
        out += ["## Not cleaned up", ""] + [f"- {e}" for e in journal.leftovers] + [""]
    return "\n".join(out)


def _game_day_line(journal: Journal) -> str:
    game_day = journal.experiment["game_day"]
    return (f"game day on {game_day.get('source')}: {game_day.get('actions')} actions "
            f"(status {journal.status})")


def json_text(journal: Journal) -> str:
    """The journal itself, as ``journal.json`` holds it."""
    return journal.dumps()


def error_lines(journal: Journal, per_phase: int = 3) -> list[str]:
    """The most frequent distinct errors of each phase, with a count and an example (status and the
    start of the body, or the exception's message)."""
    out = []
    for phase in journal.phases:
        if phase.metrics is None:
            continue
        for e in phase.metrics.top_errors[:per_phase]:
            out.append(f"[{phase.name}] {e['count']} x {e['kind']}: {e['example'][:160] or '(no message)'}")
    return out


def hypothesis_lines(journal: Journal) -> list[str]:
    """The experiment's description, labelled as the hypothesis it is, and the rules it is judged by."""
    rules = journal.rules
    if not rules:
        return []  # a journal from before the rules were recorded
    out = []
    if rules.get("hypothesis"):
        out.append(f"hypothesis: {' '.join(str(rules['hypothesis']).split())}")
    bound = f"error rate <= {rules['error_rate_max']:.2%}"
    if rules.get("error_rate_default"):
        bound += " (the default: the SLO names no error rate)"
    out.append(f"judged by: the SLO with {bound}; a latency percentile needs {rules['min_samples']} successful "
               "requests")
    return out


def result_lines(journal: Journal) -> list[str]:
    """What was measured, beside the hypothesis: each fault phase against the baseline."""
    if not journal.rules or journal.baseline is None:
        return []
    base = journal.baseline
    out = []
    for r in journal.fault_results:
        phase = next((p for p in journal.phases if p.name == r.phase), None)
        if phase is None or phase.metrics is None:
            continue
        m = phase.metrics
        detect = "no violation" if r.time_to_detect_s is None else f"detected after {r.time_to_detect_s:.1f}s"
        if r.degraded is False:
            recover = "nothing to recover from"
        else:
            recover = "not recovered" if r.time_to_recover_s is None else \
                f"recovered {r.time_to_recover_s:.1f}s after the fault phase ended"
        out.append(f"result [{r.phase}]: p95 {_pct_ms(base, base.p95_ms)} -> {_pct_ms(m, m.p95_ms)}, errors "
                   f"{base.error_rate:.2%} -> {m.error_rate:.2%}; {detect}; {recover}")
    return out


# ---------------------------------------------------------------- the text summary
Level = Literal["info", "success", "warning", "error"]


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    styles: dict[str, str] = field(default_factory=dict)  # cell text -> Rich style


@dataclass(frozen=True)
class Message:
    level: Level
    text: str


Block = Table | Message

# how a terminal without colour shows a message of each level
_PREFIX: dict[Level, str] = {"info": "", "success": "", "warning": "warning: ", "error": "error: "}
TEXT_WIDTH = 140  # what the terminal uses when stdout is not one (logs, CI, a file)


def summary(journal: Journal) -> list[Block]:
    """The summary a finished run prints: phases, service metrics, faults, gates, then errors,
    leftovers and the verdict line."""
    out: list[Block] = [Message("info", line) for line in hypothesis_lines(journal)]
    if journal.phases:
        out.append(Table("Phases", PHASE_HEADERS, phase_rows(journal)))
        out += [Message("info", note) for note in load_notes(journal)]
        llm = llm_rows(journal)
        if llm:
            out.append(Table("LLM requests", LLM_HEADERS, llm))
        out += [Message("info", f"error seen {line}") for line in error_lines(journal)]
        metric_rows = service_metric_rows(journal)
        if metric_rows:
            out.append(Table("Service metrics", service_metric_headers(journal), metric_rows))
    if journal.fault_results:
        out.append(Table("Faults", FAULT_HEADERS, fault_rows(journal)))
    if journal.gates:
        out.append(Table("Gates", GATE_HEADERS, gate_rows(journal), {"pass": "green", "FAIL": "bold red"}))
    out += [Message("info", line) for line in result_lines(journal)]
    out += [Message("error", error) for error in journal.errors]
    out += [Message("warning", f"not cleaned up: {leftover}") for leftover in journal.leftovers]
    if journal.experiment.get("game_day"):  # observed, not judged: no verdict (aichaos.gameday.record)
        noted: Level = "error" if journal.errors else "info"
        out.append(Message(noted, f"{_game_day_line(journal)} - journal {journal.path}"))
        return out
    failed = [f"{g.name}[{g.phase}]" if g.phase else g.name for g in journal.failed_gates]
    line = f"verdict: {journal.verdict.upper()} (exit {journal.exit_code})"
    if failed:
        line += " - failed: " + ", ".join(failed)
    line += f" - journal {journal.path}"
    level: Level = "success" if journal.verdict == "pass" else "error" if journal.verdict == "fail" else "warning"
    out.append(Message(level, line))
    return out


def rich_table(table: Table) -> RichTable:
    """The Rich table the terminal prints for ``table``."""
    out = RichTable(title=table.title, title_justify="left", show_lines=False)
    for header in table.headers:
        out.add_column(header, overflow="fold")
    for row in table.rows:
        cells = []
        for cell in row:
            style = table.styles.get(cell)
            cells.append(f"[{style}]{markup_escape(cell)}[/{style}]" if style else markup_escape(cell))
        out.add_row(*cells)
    return out


def summary_text(journal: Journal, width: int = TEXT_WIDTH) -> str:
    """The summary as plain text: what a terminal without colour shows, stdout and stderr in order."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, highlight=False, soft_wrap=True,
                      color_system=None, force_terminal=False)
    for block in summary(journal):
        if isinstance(block, Table):
            console.print(rich_table(block))
        else:
            buffer.write(_PREFIX[block.level] + block.text + "\n")
    return buffer.getvalue()


# ---------------------------------------------------------------- the registry
def html_text(journal: Journal) -> str:
    """The HTML report (``aichaos.report.html``, a module of its own, which reads the tables above)."""
    from aichaos.report.html import html_report

    return html_report(journal)


FORMATS: dict[str, Callable[[Journal], str]] = {
    "text": summary_text,
    "json": json_text,
    "junit": junit_xml,
    "md": markdown,
    "html": html_text,
}
