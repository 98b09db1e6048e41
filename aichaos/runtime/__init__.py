"""Runtimes stand the stack up: ``local`` (child processes, the embedded default) and ``docker``."""
