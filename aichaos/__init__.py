"""aichaos: chaos engineering for AI serving stacks."""

__version__ = "0.1.0"
