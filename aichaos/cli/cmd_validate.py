from __future__ import annotations

from pathlib import Path

import typer


def validate(
    files: list[Path] = typer.Argument(..., help="Experiment files to check.", show_default=False),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set load.users=50 (repeatable)."),
) -> None:
    """Check experiment files and their stacks: syntax, types, unknown keys, references."""
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
        exp = loaded.experiment
        term.data(f"ok {file}: {exp.name}, {len(exp.phases)} phases, {exp.duration:g}s, "
                  f"stack {loaded.stack_path} ({len(loaded.stack.services)} services)")
    raise typer.Exit(ExitCode.INVALID if failed else ExitCode.OK)
