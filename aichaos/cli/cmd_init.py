from __future__ import annotations

from pathlib import Path

import typer


def init(
    path: Path = typer.Argument(Path("experiment.yaml"), help="Where to write the starter experiment."),
    stack: str = typer.Option("stack.yaml", help="The stack file the experiment points at."),
    target: str = typer.Option("gateway", help="The service that receives the load."),
    edge: str = typer.Option("gateway->model-server", help="The edge the starter fault slows down."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter experiment."""
    from importlib import resources

    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode

    term = Terminal()
    if path.exists() and not force:
        term.error(f"{path} exists; use --force to overwrite it")
        raise typer.Exit(ExitCode.INVALID)
    template = resources.files("aichaos").joinpath("templates/experiment.yaml").read_text()
    name = path.stem.replace(" ", "-") or "experiment"
    text = template.format(file=path.name, name=name, stack=stack, target=target, edge=edge)
    try:
        path.write_text(text)
    except OSError as exc:
        term.error(f"cannot write {path}: {exc.strerror}")
        raise typer.Exit(ExitCode.INVALID) from exc
    term.success(f"wrote {path}; next: aichaos validate {path}")
