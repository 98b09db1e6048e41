from __future__ import annotations

import logging
from pathlib import Path

import typer

log = logging.getLogger(__name__)


def validate(
    files: list[Path] = typer.Argument(..., help="Experiment files to check.", show_default=False),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set load.users=50 (repeatable)."),
) -> None:
    """Check experiment files and their stacks: syntax, types, unknown keys, references.

    Each file gets its own verdict (an ``ok`` line, or its problems); the exit code is 2 when any
    file is invalid."""
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode, ExperimentError
    from aichaos.experiment.loader import load_experiment

    term = Terminal()
    failed = False
    for file in files:
        try:
            loaded = load_experiment(file, set_)
        except ExperimentError as exc:
            failed = True
            for problem in exc.problems:
                term.error(str(problem))
            continue
        except Exception as exc:  # a bug must not cost the other files their verdict
            failed = True
            log.debug("checking %s failed", file, exc_info=True)
            term.error(f"{file}: could not be checked ({type(exc).__name__}: {exc}); this is a bug in aichaos, "
                       "please report it with the file")
            continue
        exp = loaded.experiment
        term.data(f"ok {file}: {exp.name}, {len(exp.phases)} phases, {exp.duration:g}s, "
                  f"stack {loaded.stack_path} ({len(loaded.stack.services)} services)")
        for note in loaded.notes:  # a Compose stack's inferred edges and ignored keys
            term.info(f"{file}: {note}")
    raise typer.Exit(ExitCode.INVALID if failed else ExitCode.OK)
