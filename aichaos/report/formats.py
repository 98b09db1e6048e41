"""Pure formatters: journal → rows, JUnit XML, Markdown. Writers and printers live elsewhere."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from aichaos.report.journal import Journal


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def phase_rows(journal: Journal) -> list[list[str]]:
    """One row per phase: name, duration, requests, rps, p50, p95, p99, error rate, faults."""
    rows = []
    for phase in journal.phases:
        m = phase.metrics
        faults = ", ".join(f["description"] for f in journal.faults if f["phase"] == phase.name)
        if m is None:
            rows.append([phase.name, f"{phase.end - phase.start:.0f}s", "-", "-", "-", "-", "-", "-", faults])
            continue
        rows.append([phase.name, f"{phase.end - phase.start:.0f}s", str(m.count), f"{m.rps:.1f}",
                     _ms(m.p50_ms), _ms(m.p95_ms), _ms(m.p99_ms), f"{m.error_rate:.2%}", faults])
    return rows


PHASE_HEADERS = ["phase", "length", "requests", "rps", "p50 ms", "p95 ms", "p99 ms", "errors", "faults"]
GATE_HEADERS = ["gate", "phase", "value", "limit", "result"]


def gate_rows(journal: Journal) -> list[list[str]]:
    return [[g.name, g.phase, g.value, g.limit, "pass" if g.passed else "FAIL"] for g in journal.gates]


def fault_rows(journal: Journal) -> list[list[str]]:
    out = []
    for r in journal.fault_results:
        ttd = "no violation" if r.time_to_detect_s is None else f"{r.time_to_detect_s:.1f}s"
        ttr = "not recovered" if r.time_to_recover_s is None else f"{r.time_to_recover_s:.1f}s"
        p50 = r.degradation["p50_ms"]
        added = "-" if p50.delta is None else f"{p50.delta:+.1f} ms"
        out.append([r.phase, ttd, ttr, added])
    return out


FAULT_HEADERS = ["fault phase", "time to detect", "time to recover", "p50 change"]


def junit_xml(journal: Journal) -> str:
    """One test suite per run, one test case per gate (errors and interrupts as a failing case)."""
    cases: list[str] = []
    for g in journal.gates:
        name = quoteattr(f"{g.name}[{g.phase}]" if g.phase else g.name)
        body = "" if g.passed else (
            f'<failure message={quoteattr(f"{g.value} (limit {g.limit})")}>{escape(g.detail)}</failure>')
        cases.append(f"    <testcase classname={quoteattr(journal.experiment.get('name', 'experiment'))} "
                     f"name={name}>{body}</testcase>")
    if journal.verdict in ("error", "interrupted"):
        message = "; ".join(journal.errors) or journal.verdict
        cases.append(f"    <testcase classname={quoteattr(journal.experiment.get('name', 'experiment'))} "
                     f"name=\"run\"><error message={quoteattr(message)}/></testcase>")
    failures = sum(1 for g in journal.gates if not g.passed)
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
    if journal.experiment.get("description"):
        out += [journal.experiment["description"], ""]
    out += ["## Phases", "", table(PHASE_HEADERS, phase_rows(journal)), ""]
    if journal.fault_results:
        out += ["## Faults", "", table(FAULT_HEADERS, fault_rows(journal)), ""]
    if journal.gates:
        out += ["## Gates", "", table(GATE_HEADERS, gate_rows(journal)), ""]
    if journal.errors:
        out += ["## Errors", ""] + [f"- {e}" for e in journal.errors] + [""]
    if journal.leftovers:
        out += ["## Not cleaned up", ""] + [f"- {e}" for e in journal.leftovers] + [""]
    return "\n".join(out)
