"""The keeper of a game-day stack: a detached process that brings the stack up, holds it, injects and
clears faults on request, reverts a ``--for`` fault when its time is up, and on ``down`` (or SIGTERM)
reverts every fault, stops everything and writes the game-day journal.

It is the one owner of everything the stack started, the way a run is: a ``RunSession`` torn down in
reverse order, the run directory locked for its life, and the run state file (``RunState``) kept up
to date with every pid and every active fault's undo record, so that ``aichaos cleanup`` undoes the
lot after a ``kill -9`` of the keeper. Faults are applied through the fault registry, exactly as a
run applies them.

    python -m aichaos.gameday.keeper DIR     # DIR holds gameday.json; started by `aichaos stack up`
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aichaos import __version__, clock
from aichaos.errors import AichaosError, ExitCode, Interrupted, UsageError
from aichaos.experiment.stack import Stack
from aichaos.faults.base import AppliedFault
from aichaos.faults.registry import FaultContext, RunCheck, kind_of
from aichaos.gameday.control import GameDay
from aichaos.gameday.record import Action, write_journal
from aichaos.interrupts import signals_raise
from aichaos.runtime.base import StackHandle
from aichaos.runtime.labels import labelled_children
from aichaos.runtime.registry import RuntimeKind, RuntimeSetup, choose_runtime
from aichaos.runtime.state import RunDirLock, RunState
from aichaos.session import RunSession
from aichaos.stackup import record_services, start_fault_proxy, start_services

log = logging.getLogger(__name__)


@dataclass
class ActiveFault:
    id: str
    applied: AppliedFault
    until: float | None = None  # when a --for fault is reverted
    timer: threading.Timer | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.applied.type, "target": self.applied.target,
                "description": self.applied.description, "applied_at": self.applied.applied_at,
                "until": self.until}


class Keeper:
    """Everything one game-day stack started, and the operations on it. Thread-safe: the control API
    serves each request on its own thread, and ``--for`` timers revert on theirs."""

    def __init__(self, day: GameDay, stack: Stack, kind: RuntimeKind | None = None) -> None:
        self.day = day
        self.stack = stack
        self.kind = kind
        self.state = RunState(day.state_path, day.stack_id)
        self.session = RunSession()
        self.handle = StackHandle()
        self.context: FaultContext | None = None
        self.faults: dict[str, ActiveFault] = {}
        self.applied: list[tuple[str, AppliedFault]] = []  # every fault ever injected, by id
        self.actions: list[Action] = []
        self.errors: list[str] = []
        self.leftovers: list[str] = []
        self.environment: dict[str, Any] = {}
        self.ready_s: float | None = None
        self.lock = threading.RLock()
        self.done = threading.Event()  # down has begun
        self.asked_down = threading.Event()  # `stack down` asked, through the control API
        self.answered = threading.Event()  # and has its answer
        self._next = 1

    # ------------------------------------------------------------ up
    def up(self, report: Any) -> None:
        """Bring the stack up (the fault proxy first, then the services with a proxy on every edge)."""
        day, state, session = self.day, self.state, self.session
        started = time.monotonic()
        state.save()  # before anything starts: cleanup finds the stack from here on
        stack_path = Path(day.stack_file)
        kind = self.kind or choose_runtime(day.runtime, self.stack, report)
        setup = RuntimeSetup(day.stack_id, day.folder, self.stack, stack_path.parent, stack_path.stem, {},
                             day.network, day.toxiproxy_url)
        kind.check(setup)
        self.kind = kind
        state.runtime = kind.name
        state.save()
        up = start_fault_proxy(session, kind, setup, state, report)
        runtime, backend = up.runtime, up.backend
        self.environment.update(up.environment)
        self.environment.update({"runtime": kind.name, "python": sys.version.split()[0], "aichaos": __version__,
                                 "pid": os.getpid()})
        client = backend.client
        report(f"starting {', '.join(self.stack.start_order())}")
        handle = start_services(session, up, self.stack, state, self.handle)
        facts, _ = runtime.stack_facts()
        self.environment.update(facts)
        self.ready_s = time.monotonic() - started
        self.context = FaultContext(client, runtime, handle, self.stack, day.folder / "logs", self._record_pids,
                                    state.helpers)
        self._act("up", f"stack {day.stack_file} up ({kind.name}) in {self.ready_s:.1f}s")

    def _record_pids(self) -> None:
        record_services(self.state, self.handle)()

    def _save_faults(self) -> None:
        self.state.faults = [f.applied.undo_record for f in self.faults.values() if f.applied.undo_record]
        self.state.save()

    def _act(self, kind: str, detail: str, fault: str | None = None) -> None:
        self.actions.append(Action(clock.now(), kind, detail, fault))
        self.write_journal()

    # ------------------------------------------------------------ the operations
    def status(self) -> dict[str, Any]:
        with self.lock:
            runtime = self.session.runtime
            services = {}
            for name, running in self.handle.services.items():
                metrics = self.stack.services[name].metrics
                alive = runtime is not None and runtime.is_alive(name)
                services[name] = {"url": f"http://{running.host}:{running.port}", "pid": running.pid,
                                  "alive": alive, "down_on_purpose": name in (self.context.expected_down
                                                                              if self.context else set()),
                                  "metrics": f"http://{running.host}:{running.port}{metrics}" if metrics else None}
            edges = {edge: {"proxy": info.listen, "upstream": info.upstream,
                            "dependent_sees": self.handle.addresses.get(edge)}
                     for edge, info in self.handle.proxies.items()}
            return {"stack_id": self.day.stack_id, "stack_file": self.day.stack_file, "source": self.day.source,
                    "folder": str(self.day.folder), "runtime": self.kind.name if self.kind else None,
                    "proxy": self.environment.get("proxy"), "services": services, "edges": edges,
                    "faults": [f.to_json() for f in self.faults.values()],
                    "history": [{"id": i, "description": f.description, "applied_at": f.applied_at,
                                 "reverted_at": f.reverted_at} for i, f in self.applied[-50:]],
                    "up_since": self.actions[0].time
                    if self.actions else None, "keeper_pid": os.getpid()}

    def inject(self, data: dict[str, Any], for_s: float | None, allow_external: bool = False) -> dict[str, Any]:
        """Apply a fault (validated again here: the API is not only for aichaos's own commands)."""
        from aichaos.experiment.fault_args import fault_types

        model = fault_types().get(str(data.get("type")))
        if model is None:
            raise UsageError(f"no fault type {data.get('type')!r}")
        try:
            fault = model.model_validate(data)
        except ValueError as exc:
            raise UsageError(f"invalid fault: {exc}") from None
        kind = kind_of(fault)
        if kind.target == "load":
            raise UsageError(f"{fault.type} changes an experiment's load plan: a game day has no plan to change",
                             hint="run it in an experiment, or change the load of `aichaos watch --load`")
        problems = list(kind.check_stack(fault, self.stack))
        if problems:
            raise UsageError("; ".join(f"{key}: {message}" for key, message in problems))
        assert self.kind is not None and self.context is not None
        proxy = self.environment.get("proxy") or {}
        kind.check_run(fault, RunCheck(self.kind.capabilities, self.kind.name, allow_external, proxy.get("kind"),
                                       proxy.get("version", "")))
        if for_s is not None and for_s <= 0:
            raise UsageError("--for must be longer than 0s")
        with self.lock:
            if self.done.is_set():
                raise UsageError("the stack is going down")
            fault_id = f"f{self._next}"
            self._next += 1
            applied = kind.apply(fault, fault_id, 0, self.context)
            active = ActiveFault(fault_id, applied)
            self.faults[fault_id] = active
            self.applied.append((fault_id, applied))
            self._save_faults()
            if for_s is not None:
                active.until = applied.applied_at + for_s
                active.timer = threading.Timer(for_s, self._expire, args=(fault_id,))
                active.timer.daemon = True
                active.timer.start()
            lasting = f" for {for_s:g}s" if for_s is not None else ""
            self._act("inject", f"{fault_id}: {applied.description}{lasting}", fault_id)
            return active.to_json()

    def clear(self, fault_id: str | None) -> list[dict[str, Any]]:
        """Revert one fault, or every fault; FaultRevertError (exit 3) names any that could not be."""
        with self.lock:
            if fault_id is not None and fault_id not in self.faults:
                active = ", ".join(self.faults) or "none"
                raise UsageError(f"no active fault {fault_id!r} (active: {active})")
            ids = [fault_id] if fault_id is not None else list(self.faults)
            return [self._revert(i, "clear") for i in ids]

    def _expire(self, fault_id: str) -> None:
        with self.lock:
            if fault_id in self.faults and not self.done.is_set():
                self._revert(fault_id, "expire")

    def _revert(self, fault_id: str, why: str) -> dict[str, Any]:
        active = self.faults[fault_id]
        if active.timer is not None:
            active.timer.cancel()
        out = active.to_json()
        try:
            active.applied.revert()
        except AichaosError as exc:
            active.applied.revert_error = exc.message
            self.errors.append(f"could not revert {fault_id} ({active.applied.description}): {exc.message}")
            self._act("revert_failed", f"{fault_id}: {exc.message}", fault_id)
            raise
        del self.faults[fault_id]
        self._save_faults()
        words = {"clear": "cleared", "expire": "time up, reverted", "down": "reverted at stack down"}[why]
        self._act("revert" if why == "down" else why, f"{fault_id} {words}: {active.applied.description}", fault_id)
        return out

    def down(self, hurry: bool = False) -> dict[str, Any]:
        """Revert every fault, stop everything, write the journal. Safe to call twice."""
        with self.lock:
            if self.done.is_set():
                return {"journal": str(self.day.folder / "journal.json"), "leftovers": self.leftovers}
            self.done.set()
            for fault_id in list(self.faults):
                try:
                    self._revert(fault_id, "down")
                except AichaosError:
                    pass  # recorded in errors; its undo record stays in the state file for cleanup
            self.leftovers = self.session.teardown(hurry=hurry)
            self.leftovers += [f"fault {f.id} {f.applied.description} ({f.applied.revert_error})"
                               for f in self.faults.values()]
            self._act("down", "stack down" + (f"; left: {'; '.join(self.leftovers)}" if self.leftovers else ""))
            if self.leftovers:
                self.state.save()  # cleanup tries again from it
            else:
                self.state.remove()
            return {"journal": str(self.day.folder / "journal.json"), "leftovers": self.leftovers}

    def write_journal(self) -> None:
        try:
            write_journal(self)
        except (OSError, AichaosError) as exc:  # the journal is a record, never a reason to fail an action
            log.warning("cannot write the game-day journal: %s", exc)


# ---------------------------------------------------------------- the control API
class _Handler(BaseHTTPRequestHandler):
    keeper: Keeper
    token: str
    server_version = "aichaos-keeper"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)  # watch asks every second

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self._answer(401, {"error": "not authorised", "exit_code": ExitCode.INVALID})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        keeper, path = self.keeper, self.path.rstrip("/")
        try:
            if method == "GET" and path == "/status":
                answer: Any = keeper.status()
            elif method == "POST" and path == "/faults":
                answer = keeper.inject(body["fault"], body.get("for_s"), bool(body.get("allow_external")))
            elif method == "DELETE" and (path == "/faults" or path.startswith("/faults/")):
                answer = {"cleared": keeper.clear(path[len("/faults/"):] or None)}
            elif method == "POST" and path == "/down":
                keeper.asked_down.set()
                answer = keeper.down()
            else:
                self._answer(404, {"error": f"no {method} {path}", "exit_code": ExitCode.INVALID})
                return
            self._answer(200, answer)
            if path == "/down":
                keeper.answered.set()
            return
        except AichaosError as exc:
            self._answer(400 if exc.exit_code == ExitCode.INVALID else 500,
                         {"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
            return
        except Exception as exc:  # a bug: say so, keep serving
            log.exception("control request failed")
            self._answer(500, {"error": f"internal error in the keeper: {exc!r}", "exit_code": ExitCode.ENVIRONMENT})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def serve_control(keeper: Keeper, token: str) -> ThreadingHTTPServer:
    """The control API on a free loopback port, served on a thread."""
    handler = type("Handler", (_Handler,), {"keeper": keeper, "token": token})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="aichaos-keeper-api", daemon=True).start()
    return server


# ---------------------------------------------------------------- the process
def _say(message: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):  # `stack up` was interrupted: nobody listens any more
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def main(folder: Path) -> int:
    from aichaos.experiment.loader import load_stack

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    day = GameDay.read(folder)
    try:
        lock = RunDirLock.for_new_run(folder)
    except AichaosError as exc:
        _say({"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        return exc.exit_code
    keeper = Keeper(day, load_stack(Path(day.stack_file)))
    with lock, labelled_children(day.stack_id):
        with signals_raise() as gate:
            try:
                keeper.up(lambda text: _say({"info": text}))
                token = secrets.token_urlsafe(24)
                server = serve_control(keeper, token)
                day.control_url = f"http://127.0.0.1:{server.server_address[1]}"
                day.token, day.keeper_pid = token, os.getpid()
                day.save()
            except (AichaosError, Exception) as exc:
                gate.raising = False
                if not isinstance(exc, AichaosError):
                    log.exception("the keeper failed")
                message = exc.message if isinstance(exc, AichaosError) else f"internal error: {exc!r}"
                keeper.errors.append(message)
                keeper.down(hurry=isinstance(exc, Interrupted))
                _say({"error": message, "hint": getattr(exc, "hint", None),
                      "exit_code": getattr(exc, "exit_code", ExitCode.ENVIRONMENT)})
                return int(getattr(exc, "exit_code", ExitCode.ENVIRONMENT))
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, frame: stop.set())
        _say({"ready": keeper.status()})
        _stdout_to_devnull()  # `stack up` returns now: later writes must not meet a closed pipe
        while not stop.is_set() and not keeper.done.is_set():
            stop.wait(0.5)
        keeper.down()
        if keeper.asked_down.is_set():
            keeper.answered.wait(10)  # `stack down` gets its answer before the keeper exits
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
