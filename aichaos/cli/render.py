"""Prints a finished run's summary: tables on stdout, verdict line on stderr."""

from __future__ import annotations

from aichaos.cli.terminal import Terminal
from aichaos.report.formats import (
    FAULT_HEADERS,
    GATE_HEADERS,
    PHASE_HEADERS,
    fault_rows,
    gate_rows,
    load_notes,
    phase_rows,
    service_metric_headers,
    service_metric_rows,
)
from aichaos.report.journal import Journal


def render_summary(term: Terminal, journal: Journal) -> None:
    if journal.phases:
        term.table("Phases", PHASE_HEADERS, phase_rows(journal))
        for note in load_notes(journal):
            term.info(note)
        metric_rows = service_metric_rows(journal)
        if metric_rows:
            term.table("Service metrics", service_metric_headers(journal), metric_rows)
    if journal.fault_results:
        term.table("Faults", FAULT_HEADERS, fault_rows(journal))
    if journal.gates:
        term.table("Gates", GATE_HEADERS, gate_rows(journal), styles={"pass": "green", "FAIL": "bold red"})
    for error in journal.errors:
        term.error(error)
    for leftover in journal.leftovers:
        term.warning(f"not cleaned up: {leftover}")
    failed = [f"{g.name}[{g.phase}]" if g.phase else g.name for g in journal.failed_gates]
    line = f"verdict: {journal.verdict.upper()} (exit {journal.exit_code})"
    if failed:
        line += " - failed: " + ", ".join(failed)
    line += f" - journal {journal.path}"
    if journal.verdict == "pass":
        term.success(line)
    elif journal.verdict == "fail":
        term.error(line)
    else:
        term.warning(line)
