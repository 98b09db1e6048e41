from __future__ import annotations

import typer


def schema(
    stack: bool = typer.Option(False, "--stack", help="The schema of the stack file format instead."),
) -> None:
    """Print the JSON Schema of the experiment format, or with --stack of the stack format (for editors and CI
    linters)."""
    import json

    from aichaos.cli.terminal import Terminal
    from aichaos.experiment.loader import json_schema

    Terminal().raw(json.dumps(json_schema(stack=stack), indent=2))
