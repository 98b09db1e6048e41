from __future__ import annotations

from pathlib import Path

import typer


def report(
    journal: Path = typer.Argument(..., help="A run's journal.json, or its run directory.", show_default=False),
    format_: str = typer.Option("text", "--format", "-f",
                                help="text (the summary the run printed), json, junit, md or html (as the run's "
                                     "report.html)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the report to this file instead."),
) -> None:
    """Re-render a past run's report from its journal, exactly as the run printed or wrote it.

    Exit 0 once rendered (whatever the run's verdict); 2 when the journal is missing, not a journal,
    or of a version this aichaos cannot read, or the format is unknown.
    """
    from aichaos.cli.render import render_summary
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode, UsageError
    from aichaos.report.formats import FORMATS
    from aichaos.report.journal import read_journal

    term = Terminal()
    render = FORMATS.get(format_)
    if render is None:
        term.error(f"--format must be one of {', '.join(FORMATS)}, not {format_!r}")
        raise typer.Exit(ExitCode.INVALID)
    try:
        record = read_journal(journal)
    except UsageError as exc:
        term.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    if output is not None:
        try:
            output.write_text(render(record))
        except OSError as exc:
            term.error(f"cannot write {output}: {exc.strerror}")
            raise typer.Exit(ExitCode.INVALID) from None
    elif format_ == "text":
        render_summary(term, record)  # in colour on a terminal, tables on stdout: as the run printed it
    else:
        term.raw(render(record))
