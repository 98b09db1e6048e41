from __future__ import annotations


def schema() -> None:
    """Print the JSON Schema of the experiment format (for editors and CI linters)."""
    import json

    from aichaos.cli.terminal import Terminal
    from aichaos.experiment.loader import json_schema

    Terminal().raw(json.dumps(json_schema(), indent=2))
