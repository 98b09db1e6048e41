from __future__ import annotations

from pathlib import Path

import typer


def init(
    path: Path = typer.Argument(Path("experiment.yaml"), help="Where to write the starter experiment."),
    stack_path: str = typer.Option("stack.yaml", "--stack-path", help="The stack file the experiment points at."),
    target: str = typer.Option("gateway", help="The service that receives the load."),
    edge: str = typer.Option("gateway->model-server", help="The edge the starter fault slows down."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    stack: bool = typer.Option(False, "--stack", help="Write a commented starter stack file instead (PATH "
                                                      "default stack.yaml; --target names its front service)."),
) -> None:
    """Write a commented starter experiment (or with --stack, a stack file)."""
    from importlib import resources

    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode

    term = Terminal()
    if path.exists() and not force:
        term.error(f"{path} exists; use --force to overwrite it")
        raise typer.Exit(ExitCode.INVALID)
    if stack:
        if path == Path("experiment.yaml"):
            path = Path("stack.yaml")
        if path.exists() and not force:
            term.error(f"{path} exists; use --force to overwrite it")
            raise typer.Exit(ExitCode.INVALID)
        template = resources.files("aichaos").joinpath("templates/stack.yaml").read_text()
        text = template.replace("{file_service}", target)
    else:
        template = resources.files("aichaos").joinpath("templates/experiment.yaml").read_text()
        name = path.stem.replace(" ", "-") or "experiment"
        text = template.format(file=path.name, name=name, stack=stack_path, target=target, edge=edge)
    try:
        path.write_text(text)
    except OSError as exc:
        term.error(f"cannot write {path}: {exc.strerror}")
        raise typer.Exit(ExitCode.INVALID) from exc
    if stack:
        term.success(f"wrote {path}; next: aichaos init experiment.yaml --stack-path {path}, then aichaos validate "
                     "experiment.yaml")
    else:
        term.success(f"wrote {path}; next: aichaos validate {path}")
