"""A Compose file as the stack: every supported key, a clear error for each unsupported one, edges
inferred or declared, named ports, and the device requests GPU services get."""

from __future__ import annotations

from pathlib import Path

import pytest

from aichaos.errors import ExperimentError
from aichaos.experiment.compose import is_compose_file
from aichaos.experiment.loader import load_experiment, load_stack, load_stack_notes
from aichaos.experiment.stack import Stack
from aichaos.runtime.base import allocate_ports, edge_value, service_environment, substitute
from tests.conftest import EXPERIMENT

FULL = """\
name: demo
services:
  model:
    build:
      context: model
      dockerfile: Dockerfile.gpu
      args: {BASE_IMAGE: "${BASE_IMAGE:-python:3.11-slim}"}
    entrypoint: python3
    command: app.py --workers 2
    environment: [MODEL_VERSION=v1, "LOG=${LOG_LEVEL-info}"]
    env_file: model.env
    ports: ["8000", {target: 9100, name: metrics}]
    expose: ["7000"]
    healthcheck:
      test: curl -f http://127.0.0.1:8000/health
      interval: 2s
      timeout: 1s
      retries: 5
      start_period: 10s
    volumes: [./data:/data:ro, weights:/weights, /scratch]
    networks: [backend]
    working_dir: /srv
    stop_grace_period: 1m
    deploy:
      resources:
        reservations:
          devices: [{driver: nvidia, count: 1, capabilities: [gpu]}]
    container_name: my-model
    restart: always
    x-team: ml
    x-aichaos:
      metrics: {port: metrics, path: /metrics}
  gateway:
    image: gateway:1
    command: ["serve", "--port", "8080"]
    environment:
      MODEL_URL: http://model:8000/v1
      OTHER: notmodel:8000/x
    ports: ["127.0.0.1:18080:8080/tcp"]
    depends_on:
      model: {condition: service_healthy}
    networks: {backend: {}, frontend: {}}
    gpus: all
volumes:
  weights: {}
networks:
  backend: {internal: true}
  frontend: {}
x-shared: 1
"""


@pytest.fixture
def compose(tmp_path: Path):
    def _write(text: str, name: str = "compose.yaml") -> Path:
        (tmp_path / "model.env").write_text("# comment\nexport THREADS=4\nQUOTED='a b'\n")
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def problems_of(path: Path) -> list:
    with pytest.raises(ExperimentError) as info:
        load_stack(path)
    return info.value.problems


@pytest.mark.parametrize("name, expected", [
    ("compose.yaml", True), ("compose.yml", True), ("docker-compose.yml", True), ("docker-compose.prod.yaml", True),
    ("app.compose.yaml", True), ("stack.yaml", False), ("compose.json", False)])
def test_compose_files_are_known_by_name(name, expected):
    assert is_compose_file(Path(name)) is expected


def test_every_supported_key_is_read(compose, monkeypatch):
    monkeypatch.delenv("BASE_IMAGE", raising=False)
    monkeypatch.setenv("LOG_LEVEL", "debug")
    stack, notes = load_stack_notes(compose(FULL))
    model, gateway = stack.services["model"], stack.services["gateway"]
    assert model.build is not None and not isinstance(model.build, str)
    assert (model.build.context, model.build.dockerfile, model.build.args) == (
        "model", "Dockerfile.gpu", {"BASE_IMAGE": "python:3.11-slim"})
    assert model.entrypoint == ["python3"] and model.command == ["app.py", "--workers", "2"]
    assert model.env == {"MODEL_VERSION": "v1", "LOG": "debug"}
    assert model.env_file == ["model.env"]
    assert model.ports == {"8000": 8000, "metrics": 9100, "7000": 7000}
    assert model.healthcheck is not None and model.healthcheck.test == [
        "CMD-SHELL", "curl -f http://127.0.0.1:8000/health"]
    assert (model.healthcheck.interval, model.healthcheck.timeout, model.healthcheck.retries,
            model.healthcheck.start_period) == (2.0, 1.0, 5, 10.0)
    assert model.ready.health  # the healthcheck is the readiness
    assert [(m.type, m.source, m.target, m.read_only) for m in model.volumes] == [
        ("bind", "./data", "/data", True), ("volume", "weights", "/weights", False),
        ("volume", None, "/scratch", False)]
    assert model.networks == ["backend"] and gateway.networks == ["backend", "frontend"]
    assert model.workdir == "/srv" and model.stop_timeout == 60.0
    assert [(d.driver, d.count, d.capabilities) for d in model.devices] == [("nvidia", 1, ["gpu"])]
    assert model.metrics_port == "metrics" and model.metrics_path == "/metrics"
    assert gateway.image == "gateway:1" and gateway.gpus == "all"
    assert gateway.ports == {"8080": 8080} and gateway.ready.tcp and gateway.ready.port == "8080"
    assert stack.network == "run"
    assert stack.volumes == {"weights": None}
    assert stack.networks["backend"] is not None and stack.networks["backend"].internal
    assert any("container_name ignored" in n for n in notes) and any("restart ignored" in n for n in notes)


def test_an_env_value_naming_a_dependency_host_port_is_an_inferred_edge(compose):
    stack, notes = load_stack_notes(compose(FULL))
    edge = stack.services["gateway"].depends_on["model"]
    assert (edge.env, edge.replace, edge.port) == ("MODEL_URL", "model:8000", "8000")
    assert stack.edges == ["gateway->model"]
    assert stack.services["gateway"].after == []
    assert "edge gateway->model: MODEL_URL (model:8000) rewritten to go through the fault proxy (inferred)" in notes
    # the rewrite keeps the rest of the value: scheme and path
    assert edge_value(stack.services["gateway"], edge, "aichaos-fault-proxy:40001") == \
        "http://aichaos-fault-proxy:40001/v1"


def test_depends_on_without_an_address_orders_the_start_and_says_so(compose):
    text = FULL.replace("MODEL_URL: http://model:8000/v1", "MODEL_URL: http://elsewhere:8000/v1")
    stack, notes = load_stack_notes(compose(text))
    assert stack.edges == [] and stack.services["gateway"].after == ["model"]
    assert stack.start_order() == ["model", "gateway"]
    assert any("gateway depends on model with no edge through the fault proxy" in n for n in notes)


def test_the_experiment_declares_an_edge_the_environment_does_not_show(tmp_path, compose):
    compose(FULL.replace("MODEL_URL: http://model:8000/v1", "MODEL_HOST: model"))
    exp = EXPERIMENT.replace("stack: stack.yaml", "stack: compose.yaml\nedges:\n  gateway->model: {env: MODEL_ADDR, "
                             "scheme: http, port: metrics}").replace("target: frontend", "target: gateway").replace(
        "frontend->backend", "gateway->model")
    (tmp_path / "exp.yaml").write_text(exp)
    loaded = load_experiment(tmp_path / "exp.yaml")
    edge = loaded.stack.services["gateway"].depends_on["model"]
    assert (edge.env, edge.scheme, edge.port, edge.replace) == ("MODEL_ADDR", "http", "metrics", None)
    assert "edge gateway->model: MODEL_ADDR through the fault proxy (declared in the experiment)" in loaded.notes


@pytest.mark.parametrize("key, value, message", [
    ("privileged", "true", "'privileged' is not supported by aichaos: not for a test stack"),
    ("network_mode", "host", "'network_mode' is not supported by aichaos: services are on the run's networks"),
    ("secrets", "[token]", "'secrets' is not supported by aichaos: pass the value in environment"),
    ("extends", "{service: base}", "'extends' is not supported by aichaos: write the service out in full"),
    ("devices", '["/dev/nvidia0"]', "'devices' is not supported by aichaos: give GPUs with gpus:"),
    ("cpus", "0.5", "'cpus' is not supported by aichaos: a cpu fault squeezes"),
    ("tty", "true", "'tty' is not supported by aichaos; supported: image, build"),
    ("enviroment", "{A: b}", "unknown key 'enviroment'; did you mean 'environment'?"),
])
def test_each_unsupported_service_key_is_a_clear_error_at_its_line(compose, key, value, message):
    text = FULL.replace("    x-team: ml\n", f"    x-team: ml\n    {key}: {value}\n")
    [problem] = problems_of(compose(text))
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(f"    {key}:"))
    assert problem.line == line and problem.key == f"services.model.{key}"
    assert message in problem.message


@pytest.mark.parametrize("old, new, key, message", [
    ("          devices:", "          memory: 1g\n          devices:",
     "services.model.deploy.resources.reservations.memory", "deploy.resources.reservations.memory is not supported"),
    ("    deploy:\n", "    deploy:\n      replicas: 2\n", "services.model.deploy.replicas", "deploy.replicas is not"),
    ("dockerfile: Dockerfile.gpu", "dockerfile: Dockerfile.gpu\n      target: prod", "services.model.build.target",
     "build.target is not supported"),
    ('ports: ["8000", {target: 9100, name: metrics}]', 'ports: ["8000-8001"]', "services.model.ports[0]",
     "one container port, not a range"),
    ('ports: ["8000", {target: 9100, name: metrics}]', 'ports: ["8000/udp"]', "services.model.ports[0]",
     "aichaos proxies TCP only"),
    ("condition: service_healthy", "condition: service_completed_successfully", "services.gateway.depends_on.model",
     "service_completed_successfully is not supported"),
    ("x-shared: 1", "configs: {}", "configs", "'configs' is not supported by aichaos: mount the file"),
    ("      metrics: {port", "      metric: {port", "services.model.x-aichaos.metric", "did you mean 'metrics'"),
])
def test_unsupported_parts_of_supported_keys_are_clear_errors(compose, old, new, key, message):
    [problem] = problems_of(compose(FULL.replace(old, new)))
    assert problem.key == key and message in problem.message
    assert problem.line is not None


def test_the_compose_specification_is_checked_by_compose_spec_at_the_line(compose):
    text = FULL.replace("retries: 5", "retries: five")
    [problem] = problems_of(compose(text))
    assert problem.key == "services.model.healthcheck.retries"
    assert problem.line == next(i for i, t in enumerate(text.splitlines(), 1) if "retries:" in t)
    assert "not valid Compose" in problem.message
    [problem] = problems_of(compose(FULL.replace("networks: [backend]", "networks: [nowhere]")))
    assert problem.key == "services.model" and "nowhere" in problem.message


def test_named_ports_fill_placeholders_and_environment(tmp_path):
    stack = Stack.model_validate({"services": {
        "server": {"command": ["srv", "--http", "{port.http}", "--metrics", "{port.metrics}", "--main", "{port}"],
                   "ports": {"http": None, "metrics": None, "grpc": 50051}, "env_file": ["s.env"],
                   "env": {"GRPC": "{host}:{port.grpc}"}, "ready": {"http": "/ready", "port": "http"},
                   "metrics": {"port": "metrics", "path": "/m"}},
        "client": {"command": ["c"], "ready": {"tcp": True},
                   "depends_on": {"server": {"env": "SERVER", "port": "grpc", "scheme": "grpc"}}}}})
    (tmp_path / "s.env").write_text("FROM_FILE={port.metrics}\n")
    ports = allocate_ports(stack)
    server = ports["server"]
    assert server["grpc"] == 50051 and len({server["http"], server["metrics"], 50051}) == 3
    assert list(ports["client"]) == ["port"]
    argv = [substitute(a, server["http"], ports=server) for a in stack.services["server"].command or []]
    assert argv == ["srv", "--http", str(server["http"]), "--metrics", str(server["metrics"]), "--main",
                    str(server["http"])]
    env = service_environment(stack.services["server"], server["http"], {}, "0.0.0.0", server, tmp_path)
    assert env["GRPC"] == "0.0.0.0:50051" and env["PORT_METRICS"] == str(server["metrics"])
    assert env["FROM_FILE"] == str(server["metrics"]) and env["PORT"] == str(server["http"])
    edge = stack.services["client"].depends_on["server"]
    assert edge_value(stack.services["client"], edge, "127.0.0.1:4000") == "grpc://127.0.0.1:4000"


@pytest.mark.parametrize("service, message", [
    ({"ready": {"http": "/", "port": "nope"}, "ports": {"http": None}}, "ready.port 'nope' is not one of"),
    ({"ready": {"tcp": True}, "ports": {"Bad Name": None}}, "port name 'Bad Name' must match"),
    ({"ready": {"tcp": True}, "metrics": {"port": "x"}}, "metrics.port 'x' is not one of the service's ports (port)"),
    ({"ready": {"tcp": True, "http": "/"}}, "give only one probe, not http and tcp"),
    ({"ready": {"tcp": True}, "gpus": 0}, "gpus is all, a count of at least 1"),
    ({"ready": {"tcp": True}, "address": "nohost"}, "'nohost' is not host:port"),
])
def test_stack_service_mistakes_are_refused(service, message):
    with pytest.raises(ValueError) as info:
        Stack.model_validate({"services": {"s": {"command": ["x"], **service}}})
    assert message in str(info.value)


def test_an_edge_naming_a_port_the_dependency_lacks_is_refused():
    with pytest.raises(ValueError) as info:
        Stack.model_validate({"services": {"a": {"command": ["a"], "ready": {"tcp": True}},
                                           "b": {"command": ["b"], "ready": {"tcp": True},
                                                 "depends_on": {"a": {"env": "A", "port": "grpc"}}}}})
    assert "the edge b->a names port 'grpc', which 'a' does not have (port)" in str(info.value)


def test_gpu_services_get_device_requests():
    pytest.importorskip("docker")
    from aichaos.runtime.docker import device_requests, engine_device_requests, gpus_given

    stack = Stack.model_validate({"services": {
        "all": {"image": "x", "ready": {"running": True}, "gpus": "all"},
        "two": {"image": "x", "ready": {"running": True}, "gpus": 2},
        "ids": {"image": "x", "ready": {"running": True}, "gpus": ["0", "GPU-3f"]},
        "compose": {"image": "x", "ready": {"running": True},
                    "devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu", "utility"]}]},
        "none": {"image": "x", "ready": {"running": True}}}})
    engine = {n: engine_device_requests(device_requests(s)) for n, s in stack.services.items()}
    assert engine["all"] == [{"Driver": "nvidia", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]],
                              "Options": {}}]
    assert engine["two"][0]["Count"] == 2
    assert engine["ids"][0]["DeviceIDs"] == ["0", "GPU-3f"] and engine["ids"][0]["Count"] == 0
    assert engine["compose"][0]["Capabilities"] == [["gpu", "utility"]]
    assert engine["none"] == []
    assert gpus_given(device_requests(stack.services["ids"])) == ["0", "GPU-3f"]
    assert gpus_given(device_requests(stack.services["all"])) == ["all"]
    assert gpus_given(device_requests(stack.services["two"])) == ["2 of any"]
    assert gpus_given(device_requests(stack.services["none"])) is None


def test_docker_host_names_where_published_ports_are_reached():
    pytest.importorskip("docker")
    from aichaos.runtime.docker import engine_host

    assert engine_host("tcp://gpu-box.internal:2376") == "gpu-box.internal"
    assert engine_host("ssh://me@10.0.0.7") == "10.0.0.7"
    assert engine_host("unix:///var/run/docker.sock") == "127.0.0.1"
    assert engine_host("tcp://127.0.0.1:2375") == "127.0.0.1"
    assert engine_host("") == "127.0.0.1"


def test_every_key_of_the_stack_format_is_in_the_readme():
    from pydantic import BaseModel

    from aichaos.experiment import stack as model
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The stack file"):]
    section = section[:section.index("\n## ", 3)]
    models = [m for m in vars(model).values() if isinstance(m, type) and issubclass(m, BaseModel)
              and m.__module__ == model.__name__]
    missing = sorted({f"{m.__name__}.{f.alias or n}" for m in models for n, f in m.model_fields.items()
                      if f"`{f.alias or n}`" not in section})
    assert missing == []


class _AttachedFake:
    """The fake runtime with the capability of an attached one (runtime external)."""

    @staticmethod
    def kind(world):
        from aichaos.runtime.external import ATTACHED
        from aichaos.runtime.fake import FakeKind

        class AttachedFakeKind(FakeKind):
            capabilities = frozenset({ATTACHED})

        return AttachedFakeKind(world)


@pytest.mark.parametrize("quiet", [False, True])
def test_an_attached_run_injects_only_when_every_edge_carried_traffic(tmp_path, quiet):
    from aichaos import clock
    from aichaos.run import RunOptions, run_experiment
    from aichaos.runtime.fake import FakeClock, FakeWorld
    from tests.conftest import STACK
    from tests.unit.test_run_loop import EXPERIMENT as LOOP

    world = FakeWorld()
    if quiet:
        world.quiet.add("frontend__backend")
    (tmp_path / "stack.yaml").write_text(STACK)
    (tmp_path / "experiment.yaml").write_text(LOOP)
    loaded = load_experiment(tmp_path / "experiment.yaml")
    lines: list[str] = []
    with clock.using(FakeClock()):
        journal = run_experiment(loaded, RunOptions(runs_dir=tmp_path / "runs", runtime_kind=_AttachedFake.kind(world)),
                                 report=lines.append, load_factory=world.load)
    if quiet:
        assert journal.exit_code == 3 and not any(e.startswith("add_toxic") for e in world.events)
        assert "no traffic went through the fault proxy on frontend->backend" in journal.errors[0]
    else:
        assert any(e.startswith("add_toxic") for e in world.events)
        assert "every edge carried traffic through the fault proxy (1)" in lines


def test_an_address_names_a_port_the_dependency_does_not_list(compose):
    text = """\
services:
  cache: {image: redis:7}
  app:
    image: app
    environment: {REDIS_URL: "redis://cache:6379/0"}
    depends_on: [cache]
"""
    stack = load_stack(compose(text))
    assert stack.services["cache"].ports == {"6379": 6379}
    edge = stack.services["app"].depends_on["cache"]
    assert (edge.env, edge.replace, edge.port) == ("REDIS_URL", "cache:6379", "6379")
    assert stack.services["cache"].ready.running  # no port was listed: ready once it runs
