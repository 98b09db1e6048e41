"""LLM load end to end: `aichaos run` against the exact stub server (tests/llm_stub.py) on the local
runtime, streamed over SSE and measured token by token. A few seconds of load each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_run import assert_nothing_left, journal, run

STUB = ROOT / "tests" / "llm_stub.py"


def write_experiment(tmp_path: Path, stub_args: str, load: str, body: str) -> Path:
    command = json.dumps([sys.executable, str(STUB), "--port", "{port}", "--host", "{host}", *stub_args.split()])
    (tmp_path / "stack.yaml").write_text(f"""\
services:
  llm:
    command: {command}
    ready: {{http: /health, timeout: 30s}}
    hooks: {{path: /admin/faults}}
""")
    path = tmp_path / "llm.yaml"
    path.write_text(f"""\
version: 1
name: llm
stack: stack.yaml
runtime: local
load:
  target: llm
{load}
  requests:
    - name: chat
      llm: {{model: stub, prompt: "{{{{ words(lognormal(20, 0.5)) }}}}", max_tokens: 12}}
steady_state:
  window: 2s
  warmup: 1s
  min_requests: 10
{body}""")
    return path


def totals_of(samples: list[dict]) -> dict[str, int]:
    """The per-second LLM buckets added up."""
    out = {"requests": 0, "streams": 0, "output_tokens": 0, "itl": 0, "ttft": 0, "tpot": 0, "e2el": 0, "gap": 0}
    for bucket in samples:
        llm = bucket.get("llm")
        if llm is None:
            continue
        for key in ("requests", "streams", "output_tokens"):
            out[key] += llm[key]
        for key in ("itl", "ttft", "tpot", "e2el", "gap"):
            out[key] += sum(llm[key].values())
    return out


def test_streamed_run_on_workers_buckets_add_up_and_a_slowdown_is_detected_and_recovered(tmp_path):
    # TTFT 40 ms, then a token every 10 ms; the fault makes both 5 times slower (ITL 50 ms)
    # on two Locust workers: their buckets travel to the master with their reports
    path = write_experiment(tmp_path, "--ttft-ms 40 --itl-ms 10", "  users: 6\n  workers: 2", """\
  slo: {itl_p99_ms: {max: 30}, ttft_p95_ms: {max: 150}, error_rate: {max: 0.01}}
phases:
  - {name: baseline, duration: 4s}
  - {name: fault, duration: 3s, faults: [{type: inference_slowdown, service: llm, factor: 5}]}
  - {name: recovery, duration: 5s}
gates:
  recovery_time: {max: 4s}
  degradation: {itl_p50_ms: {max_ratio: 10}, tokens_per_s: {max_ratio: 2}}
""")
    run_dir = tmp_path / "run"
    result = run(["run", str(path), "--run-dir", str(run_dir)])
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(run_dir)
    assert j["verdict"] == "pass"

    # every request, stream, token and gap the load process counted is in exactly one second's bucket
    totals = totals_of(j["samples"])
    reported = j["load_totals"]["llm"]
    assert {k: totals[k] for k in reported} == reported
    assert totals["requests"] == j["load_totals"]["locust_total"] == sum(s["count"] for s in j["samples"])
    assert totals["streams"] == totals["requests"] > 50  # the stub fails nothing here
    assert totals["ttft"] == totals["tpot"] == totals["e2el"] == totals["gap"] == totals["streams"]
    assert totals["output_tokens"] == 12 * totals["streams"]
    assert totals["itl"] == totals["output_tokens"] - totals["streams"]  # n tokens, n - 1 gaps
    assert j["load_totals"]["load_cpu_max"] > 0 and j["load_totals"]["load_saturated_s"] >= 0  # the load's own CPU

    phases = {p["name"]: p["metrics"]["llm"] for p in j["phases"]}
    base, fault, after = phases["baseline"], phases["fault"], phases["recovery"]
    # no token can arrive before the server sends it: measured times are never below the truth (less
    # the histogram's resolution, 1%)
    assert base["ttft_p50_ms"] >= 40 * 0.99 and base["itl_p50_ms"] >= 10 * 0.99
    assert fault["itl_p50_ms"] >= 50 * 0.99 > base["itl_p50_ms"] * 2
    assert base["tokens_from"] == {"usage": base["streams"], "chunks": 0}
    assert base["tokens_per_s"] > fault["tokens_per_s"]
    assert after["itl_p50_ms"] < 30

    [result_] = j["fault_results"]
    assert result_["time_to_detect_s"] is not None and result_["time_to_recover_s"] is not None
    assert "itl_p50_ms" in result_["degradation"] and result_["degradation"]["itl_p50_ms"]["ratio"] > 2
    violated = [w for w in j["windows"] if w["status"] == "violated"]
    assert violated and all(any(b.startswith("itl_p99_ms") for b in w["broken"]) for w in violated)
    assert "LLM requests" in result.stdout + result.stderr  # the summary's table of them
    assert_nothing_left(j)


def test_stalls_truncations_and_error_events_are_detected(tmp_path):
    # every 4th stream stalls 600 ms after its 3rd token; every 5th is cut after 2 tokens; every
    # 7th gets an error event after 1 token; no usage, so tokens are counted from the chunks
    path = write_experiment(
        tmp_path, "--ttft-ms 20 --itl-ms 10 --stall-every 4 --stall-after 3 --stall-ms 600 "
                  "--truncate-every 5 --truncate-after 2 --error-every 7 --error-after 1 --no-usage",
        "  users: 12\n  rate: 30\n  arrival: poisson", """\
  slo: {max_gap_ms: {max: 300}, error_rate: {max: 1.0}}
phases:
  - {name: baseline, duration: 5s}
gates: {baseline_steady: false}
""")
    run_dir = tmp_path / "run"
    result = run(["run", str(path), "--run-dir", str(run_dir)])
    assert (run_dir / "journal.json").exists(), result.stderr + result.stdout
    j = journal(run_dir)
    assert j["status"] == "completed", result.stderr + result.stdout
    [phase] = j["phases"]
    metrics, llm = phase["metrics"], phase["metrics"]["llm"]
    errors = metrics["errors"]
    requests = llm["requests"]
    assert requests > 40
    # the stub's own arithmetic: multiples of 7 get an error event, other multiples of 5 are cut
    assert errors["truncated"] == pytest.approx(requests * (1 / 5 - 1 / 35), abs=3)
    assert errors["stream_error"] == pytest.approx(requests / 7, abs=3)
    assert set(errors) == {"truncated", "stream_error"}
    assert llm["streams"] == requests - errors["truncated"] - errors["stream_error"]
    assert llm["max_gap_ms"] >= 600  # the stall, seen as the longest gap
    assert llm["itl_p50_ms"] < 300  # ... while most gaps are short
    assert llm["tokens_from"] == {"usage": 0, "chunks": llm["streams"]}
    assert metrics["rps"] == pytest.approx(30, rel=0.3)  # Poisson arrivals at the offered rate
    windows = [w for w in j["windows"] if w["status"] != "unknown"]
    assert windows and all(any(b.startswith("max_gap_ms") for b in w["broken"]) for w in windows)
    assert_nothing_left(j)


def test_an_unset_api_key_stops_the_run_before_anything_starts(tmp_path):
    path = write_experiment(tmp_path, "", "  users: 2", """\
  slo: {ttft_p95_ms: {max: 500}}
phases:
  - {name: baseline, duration: 2s}
""")
    path.write_text(path.read_text().replace("max_tokens: 12}", "max_tokens: 12, api_key_env: AICHAOS_UNSET_KEY}"))
    env = {k: v for k, v in os.environ.items() if k != "AICHAOS_UNSET_KEY"}
    result = subprocess.run([sys.executable, "-m", "aichaos", "run", str(path), "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert result.returncode == 3, result.stderr + result.stdout
    assert "AICHAOS_UNSET_KEY" in result.stderr and "llm stub on" not in result.stderr
    assert json.loads((tmp_path / "run" / "journal.json").read_text())["services"] == {}


def test_a_stream_silent_past_the_timeout_is_a_timeout_and_its_user_goes_on(tmp_path):
    # every 3rd stream goes silent for 1.5 s after 2 tokens; the load gives up waiting after 0.5 s
    path = write_experiment(tmp_path, "--ttft-ms 20 --itl-ms 10 --stall-every 3 --stall-after 2 --stall-ms 1500",
                            "  users: 2\n  timeout: 500ms", """\
  slo: {error_rate: {max: 1.0}}
phases:
  - {name: baseline, duration: 4s}
gates: {baseline_steady: false}
""")
    run_dir = tmp_path / "run"
    result = run(["run", str(path), "--run-dir", str(run_dir)])
    assert (run_dir / "journal.json").exists(), result.stderr + result.stdout
    [phase] = journal(run_dir)["phases"]
    errors, llm = phase["metrics"]["errors"], phase["metrics"]["llm"]
    assert set(errors) == {"timeout"} and errors["timeout"] >= 2
    # after each timeout the user's connection is given back, and it carries on with the next request
    assert llm["streams"] >= 2 * errors["timeout"]
    assert llm["max_gap_ms"] < 500
