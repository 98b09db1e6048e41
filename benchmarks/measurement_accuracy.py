"""How right aichaos's numbers are, on the plain stack where the truth is known.

Two runs of `aichaos run` machinery (local runtime, builtin proxy, real Locust):

1. a ``down`` fault of known length on frontend->backend: the service is broken exactly while the
   edge is down, so the true outage is the fault's length and the true time to recover is 0 s
   (target: measured within ±1 s of both);
2. a ``latency`` fault of known size: the true added p50 is the injected latency
   (target: measured within ±5%);
3. a ``kill`` of a backend that takes ``--restart-s`` to start: it fails until it is ready again, so
   the true time to recover is its restart (measured independently: the revert's wait until the
   service answers its readiness probe); target: within ±1 s;
4. a partial outage: ``reset_peer`` on a share of the connections (``--survive`` of them live), with
   the frontend opening a connection per request: the true error rate of the fault phase is the
   share cut, and it must be detected (target: error rate within ±5 points, detected within a window).

    python benchmarks/measurement_accuracy.py [--down 6] [--latency-ms 200] [--restart-s 3] [--survive 0.1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from aichaos.experiment.loader import load_experiment
from aichaos.run import RunOptions, run_experiment

ROOT = Path(__file__).resolve().parent.parent

EXPERIMENT = """\
version: 1
name: {name}
stack: {stack}
runtime: local
load:
  target: frontend
  users: 8
  wait: {{min: 5ms, max: 15ms}}
  requests: [{{name: work, method: GET, path: /work}}]
steady_state:
  window: 1s
  warmup: 1s
  slo: {{p95_ms: {{max: {slo_ms}}}, error_rate: {{max: 0.01}}}}
phases:
  - {{name: baseline, duration: 6s}}
  - {{name: fault, duration: {fault_s}s, faults: [{fault}]}}
  - {{name: recovery, duration: 8s}}
"""


SLOW_STACK = """\
services:
  backend:
    command: [python, -m, sample_stack.echo, backend, --port, "{{port}}", --startup-delay, "{delay}"]
    ready: {{http: /health, timeout: 30s}}
  frontend:
    command: [python, -m, sample_stack.echo, frontend, --port, "{{port}}"]
    ready: {{http: /health, timeout: 30s}}
    env: {{BACKEND_FRESH_CONNECTIONS: "{fresh}"}}
    depends_on:
      backend: {{env: BACKEND_URL, scheme: http}}
"""


def run(folder: Path, name: str, fault: str, fault_s: int, slo_ms: float, stack: Path | None = None) -> dict:
    path = folder / f"{name}.yaml"
    path.write_text(EXPERIMENT.format(name=name, stack=stack or ROOT / "sample_stack" / "plain.yaml", fault=fault,
                                      fault_s=fault_s, slo_ms=slo_ms))
    journal = run_experiment(load_experiment(path), RunOptions(run_dir=folder / name), report=lambda _: None)
    if journal.verdict == "error":
        raise SystemExit(f"{name}: the run failed: {journal.errors}")
    return journal.to_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down", type=int, default=6, help="seconds the edge is down")
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--restart-s", type=float, default=3.0, help="seconds the killed backend takes to start")
    parser.add_argument("--survive", type=float, default=0.1, help="share of connections a partial outage spares")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        down = run(folder, "down", "{type: down, edge: frontend->backend}", args.down, 100)
        latency = run(folder, "latency", f"{{type: latency, edge: frontend->backend, latency_ms: {args.latency_ms}}}",
                      8, args.latency_ms / 2)
        slow = folder / "slow-stack.yaml"
        slow.write_text(SLOW_STACK.format(delay=args.restart_s, fresh=0))
        restart = run(folder, "restart", "{type: kill, service: backend}", 4, 100, stack=slow)
        fresh = folder / "fresh-stack.yaml"  # a connection per request: toxicity is then a share of requests
        fresh.write_text(SLOW_STACK.format(delay=0, fresh=1))
        partial = run(folder, "partial", "{type: reset_peer, edge: frontend->backend, timeout_ms: 0, "
                      f"toxicity: {1 - args.survive:g}}}", 6, 100, stack=fresh)

    [d] = down["fault_results"]
    outage = None
    if d["time_to_detect_s"] is not None and d["time_to_recover_s"] is not None:
        # violated from (detect - window) after the start, steady again TTR after the revert
        outage = (d["revert"] - d["start"]) + d["time_to_recover_s"] - (d["time_to_detect_s"] - 1)
    phases = {p["name"]: p["metrics"] for p in latency["phases"]}
    added = phases["fault"]["p50_ms"] - phases["baseline"]["p50_ms"]
    error = (added - args.latency_ms) / args.latency_ms

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}s"

    print(f"{'measure':<34} {'truth':>8} {'measured':>9} {'error':>8} {'target':>8}")
    ttr = d["time_to_recover_s"]
    print(f"{'down: time to recover':<34} {'0.0s':>8} {fmt(ttr):>9} "
          f"{'n/a' if ttr is None else f'{ttr:+.1f}s':>8} {'±1s':>8}")
    print(f"{'down: outage (detect → recover)':<34} {f'{args.down:.1f}s':>8} {fmt(outage):>9} "
          f"{'n/a' if outage is None else f'{outage - args.down:+.1f}s':>8} {'±1s':>8}")
    print(f"{'latency: added p50':<34} {f'{args.latency_ms}ms':>8} {f'{added:.1f}ms':>9} {error:>+8.1%} {'±5%':>8}")
    [r] = restart["fault_results"]
    truth_restart = r.get("revert_s")  # the revert waited exactly until the restarted backend was ready
    ttr_restart = r["time_to_recover_s"]
    print(f"{'kill, slow restart: time to recover':<34} {fmt(truth_restart):>8} {fmt(ttr_restart):>9} "
          f"{'n/a' if ttr_restart is None or truth_restart is None else f'{ttr_restart - truth_restart:+.1f}s':>8}"
          f" {'±1s':>8}")
    [p] = partial["fault_results"]
    cut = 1 - args.survive
    measured_rate = next(ph["metrics"]["error_rate"] for ph in partial["phases"] if ph["name"] == "fault")
    print(f"{'partial outage: fault error rate':<34} {cut:>8.1%} {measured_rate:>9.1%} "
          f"{(measured_rate - cut) * 100:>+7.1f}p {'±5p':>8}")
    ttd = p["time_to_detect_s"]
    print(f"{'partial outage: time to detect':<34} {'<= 1.0s':>8} {fmt(ttd):>9} {'':>8} {'1 window':>8}")
    print(f"latency run p50: baseline {phases['baseline']['p50_ms']:.2f} ms, fault {phases['fault']['p50_ms']:.2f} ms")
    print(f"samples: down run {sum(s['count'] for s in down['samples'])} requests, "
          f"latency run {sum(s['count'] for s in latency['samples'])} requests")


if __name__ == "__main__":
    main()
