"""Prints a finished run's summary (``aichaos.report.formats.summary``, a pure function of its
journal): tables on stdout, messages and the verdict line on stderr."""

from __future__ import annotations

from collections.abc import Callable

from aichaos.cli.terminal import Terminal
from aichaos.report.formats import Level, Table, rich_table, summary
from aichaos.report.journal import Journal


def render_summary(term: Terminal, journal: Journal) -> None:
    printers: dict[Level, Callable[[str], None]] = {
        "info": term.info, "success": term.success, "warning": term.warning, "error": term.error}
    for block in summary(journal):
        if isinstance(block, Table):
            term.print_table(rich_table(block))
        else:
            printers[block.level](block.text)
