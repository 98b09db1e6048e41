"""The one exception hierarchy of aichaos.

Every error a user can meet is an ``AichaosError`` carrying the exit code that DESIGN.md documents,
a message that says what failed, and, where it helps, a hint saying what to check::

    AichaosError                      (exit 3 unless a subclass says otherwise)
    ├── UsageError                    exit 2  bad command line (--set, options)
    │   └── ExperimentError           exit 2  an experiment or stack file is invalid (file:line key)
    ├── EnvironmentFailure            exit 3  the world did not cooperate
    │   ├── StackStartError                   a service did not start or become ready
    │   ├── ProxyError                        the fault proxy did not answer or refused a call
    │   ├── FaultInjectionError               a fault could not be applied
    │   ├── FaultRevertError                  a fault could not be reverted
    │   ├── LoadError                         the load generator failed
    │   └── BaselineNotSteady                 the baseline did not hold: no fault was injected
    └── Interrupted                   exit 130  SIGINT / SIGTERM

Third-party exceptions are translated at the boundary (``raise ProxyError(...) from exc``), so a
traceback never reaches the user.
"""

from __future__ import annotations

from dataclasses import dataclass


class ExitCode:
    OK = 0
    GATE_FAILED = 1
    INVALID = 2
    ENVIRONMENT = 3
    INTERRUPTED = 130


class AichaosError(Exception):
    exit_code = ExitCode.ENVIRONMENT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class UsageError(AichaosError):
    exit_code = ExitCode.INVALID


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where it is and what is wrong."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class ExperimentError(UsageError):
    """An experiment or stack file is invalid. Carries every problem found, each with file:line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class EnvironmentFailure(AichaosError):
    exit_code = ExitCode.ENVIRONMENT


class StackStartError(EnvironmentFailure):
    pass


class ProxyError(EnvironmentFailure):
    pass


class FaultInjectionError(EnvironmentFailure):
    pass


class FaultRevertError(EnvironmentFailure):
    pass


class LoadError(EnvironmentFailure):
    pass


class BaselineNotSteady(EnvironmentFailure):
    """The system was not steady before the method: the experiment cannot be conducted."""


class Interrupted(AichaosError):
    exit_code = ExitCode.INTERRUPTED

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name
