"""The game-day journal: every action of a game day (up, inject, clear, a ``--for`` fault's expiry,
the reverts at stack down, down) and what ``aichaos watch`` measured meanwhile, in the journal format of a run, so that
``aichaos report`` renders it like one.

Its *phases* are the spans between actions ("up", "inject f1", "clear f1", …), each with the metrics
of the whole seconds inside it; each fault sits in the phase its injection began; its events are the
actions. A game day has no SLO and so no windows, gates or verdict: its ``experiment`` holds a
``game_day`` entry (the stack, the file it came from, the number of actions), and its verdict is
"game-day".

Measurements come from ``measurements.jsonl`` in the stack's directory, where every ``aichaos watch``
appends one JSON object a line: ``{"bucket": …}`` per second of its load, ``{"scrape": …}`` per
service scraped in a second. Several watches may append to it at once (each line one ``write``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aichaos.errors import ExitCode
from aichaos.gameday.control import MEASUREMENTS_FILE
from aichaos.metrics.analysis import metrics_of
from aichaos.metrics.samples import Bucket
from aichaos.metrics.scrape import ScrapeStore
from aichaos.report.journal import Journal, PhaseRecord

if TYPE_CHECKING:
    from aichaos.gameday.keeper import Keeper

VERDICT = "game-day"  # a game day is observed, not judged


@dataclass(frozen=True)
class Action:
    time: float
    kind: str  # up, inject, clear, expire (a --for fault's time was up), revert (at stack down), revert_failed, down
    detail: str
    fault: str | None = None  # the fault's id (f1, f2, …)

    @property
    def phase(self) -> str:
        """The name of the span this action begins."""
        return self.kind if self.fault is None else f"{self.kind} {self.fault}"


def measurement_line(*, bucket: Bucket | None = None, scrape: Mapping[str, Any] | None = None) -> str:
    """One line of ``measurements.jsonl``."""
    return json.dumps({"bucket": bucket.to_json()} if bucket is not None else {"scrape": scrape}) + "\n"


def read_measurements(lines: Iterable[str]) -> tuple[dict[int, Bucket], ScrapeStore]:
    """The buckets (summed by second) and scrapes of ``measurements.jsonl``; a torn last line (a watch
    killed mid-write) is skipped."""
    buckets: dict[int, Bucket] = {}
    scrapes = ScrapeStore()
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "bucket" in entry:
            bucket = Bucket.from_json(entry["bucket"])
            if bucket.second in buckets:
                buckets[bucket.second].add(bucket)
            else:
                buckets[bucket.second] = bucket
        elif "scrape" in entry:
            s = entry["scrape"]
            scrapes.add(int(s["second"]), s["service"], s["values"], s["kinds"])
    return buckets, scrapes


def game_day_journal(*, stack_id: str, folder: Path, source: str, stack_file: str, actions: list[Action],
                     faults: list[tuple[str, dict[str, Any]]], samples: dict[int, Bucket], scrapes: ScrapeStore,
                     environment: dict[str, Any], services: dict[str, Any], proxies: dict[str, Any],
                     ready_s: float | None, errors: list[str], leftovers: list[str], now: float) -> Journal:
    """The journal of a game day so far (a pure function of what it is given)."""
    stack_name = Path(stack_file).stem
    ended = bool(actions) and actions[-1].kind == "down"
    journal = Journal(run_id=stack_id, run_dir=folder, experiment_file=source, stack_file=stack_file,
                      experiment={"name": f"game-day-{stack_name}",
                                  "description": f"game day on {stack_file}",
                                  "game_day": {"stack_id": stack_id, "source": source, "actions": len(actions)}})
    journal.started_at = actions[0].time if actions else now
    journal.ended_at = actions[-1].time if ended else None
    journal.t0 = actions[0].time if actions else None
    journal.analysis_start = int(journal.t0) if journal.t0 is not None else 0
    journal.status = ("error" if errors else "completed") if ended else "running"
    journal.verdict = "error" if errors else VERDICT
    journal.exit_code = ExitCode.ENVIRONMENT if errors else ExitCode.OK
    journal.environment, journal.services, journal.proxies = environment, services, proxies
    journal.stack_ready_s = ready_s
    for i, action in enumerate(actions):
        if action.kind == "down":
            continue
        end = actions[i + 1].time if i + 1 < len(actions) else now
        record = PhaseRecord(action.phase, action.time, end)
        first, last = math.ceil(action.time), math.floor(end)  # whole seconds inside the span
        if any(first <= s < last for s in samples):
            record.metrics = metrics_of(samples, first, last)
        journal.phases.append(record)
    journal.events = [{"time": a.time, "kind": a.kind, "phase": a.phase, "detail": a.detail} for a in actions]
    journal.faults = [{**fault, "id": fault_id, "phase": f"inject {fault_id}"} for fault_id, fault in faults]
    journal.samples = samples
    journal.scrapes = scrapes
    journal.errors, journal.leftovers = list(errors), list(leftovers)
    return journal


def write_journal(keeper: Keeper) -> Path:
    """Write the keeper's game day so far to ``journal.json`` in its directory."""
    folder = keeper.day.folder
    try:
        with open(folder / MEASUREMENTS_FILE, encoding="utf-8") as lines:
            samples, scrapes = read_measurements(lines)
    except FileNotFoundError:
        samples, scrapes = {}, ScrapeStore()
    handle = keeper.handle
    services = {n: {"port": s.port, "pid": s.pid, "container": s.container, "ready_after_s": round(s.ready_after_s, 3),
                    "log": str(s.log_path)} for n, s in handle.services.items()}
    proxies = {edge: {"proxy": p.name, "listen": p.listen, "upstream": p.upstream,
                      "address": handle.addresses.get(edge)} for edge, p in handle.proxies.items()}
    journal = game_day_journal(
        stack_id=keeper.day.stack_id, folder=folder, source=keeper.day.source, stack_file=keeper.day.stack_file,
        actions=list(keeper.actions), faults=[(i, f.to_json()) for i, f in keeper.applied], samples=samples,
        scrapes=scrapes, environment=dict(keeper.environment), services=services, proxies=proxies,
        ready_s=keeper.ready_s, errors=keeper.errors, leftovers=keeper.leftovers, now=time.time())
    return journal.write()
