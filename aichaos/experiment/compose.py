"""A Compose file as the stack: read into the same ``Stack`` model as aichaos's own stack files.

A stack file is read as Compose when its name says so (``compose.yaml``, ``compose.yml``,
``docker-compose.yml``, ``docker-compose.*.yaml``, ``*.compose.yaml``). Checking it against the
Compose specification is left to ``compose-spec`` (PyPI), the Python binding of the Rust
``compose_spec`` crate, which types every key of the specification and refuses unknown ones; its
errors are re-pointed at ``file:line`` here. It was chosen over (a) the ``docker compose`` plugin,
which is often not installed (it is not on aichaos's CI machines) and which would start containers
without aichaos's labels, logs and fault hooks; (b) ``compose-pydantic``, models generated from a
2022 schema; (c) the specification's JSON schema with ``jsonschema``, whose messages name no key
path. The containers themselves are run by aichaos's docker runtime (the docker SDK), so a Compose
run keeps everything a run does: labels, logs, cleanup after ``kill -9``, container faults.

What aichaos takes from a Compose service: ``image``, ``build`` (a context, or context, dockerfile
and args), ``command`` and ``entrypoint``, ``environment`` and ``env_file``, ``ports`` and ``expose``
(each a named port at its container port, published on a free port of 127.0.0.1), ``depends_on``,
``healthcheck`` (the service is ready when the engine calls it healthy), ``volumes`` (bind mounts
relative to the file, named volumes made per run), ``networks`` (made per run; the fault proxy is on
each), ``working_dir``, ``stop_grace_period``, ``gpus`` and ``deploy.resources.reservations.devices``
(device requests). ``container_name``, ``restart``, ``labels`` and ``logging`` are ignored, saying
so; any other key is refused with the reason. ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}``
are filled in from the environment and a ``.env`` file beside the Compose file.

The dependency edges through the fault proxy are those the experiment declares (``edges:``), and
those inferred: an environment value of a service that names another service's ``host:port`` (e.g.
``MODEL_URL: http://model:8000``) is rewritten to the proxy's address. What was inferred is
returned as notes, which the run prints. ``x-aichaos`` on a service gives what Compose has no word
for: port names (``ports: {http: 8000}``), ``ready``, ``metrics`` and ``hooks``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aichaos.errors import ExperimentError, Problem
from aichaos.experiment.durations import parse_duration
from aichaos.experiment.stack import Edge
from aichaos.experiment.yamlpos import KeyPath, Located, format_path

COMPOSE_NAMES = re.compile(r"^((docker-)?compose(\.[\w-]+)?|[\w.-]+\.compose)\.ya?ml$")

SUPPORTED = ("image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose", "depends_on",
             "healthcheck", "volumes", "networks", "working_dir", "stop_grace_period", "gpus", "deploy", "x-aichaos")
IGNORED = {"container_name": "aichaos names each container after the run and the service",
           "restart": "aichaos starts a service again itself when a fault's revert needs it",
           "labels": "aichaos labels each container with its run and service",
           "logging": "aichaos keeps each container's output in the run directory"}
UNSUPPORTED_WHY = {
    "network_mode": "services are on the run's networks (the stack's networks:)",
    "links": "use networks: services reach each other by name",
    "external_links": "use networks: services reach each other by name",
    "extends": "write the service out in full",
    "profiles": "every service of the file is part of the stack",
    "secrets": "pass the value in environment or an env_file",
    "configs": "mount the file with volumes",
    "scale": "one container per service",
    "pid": "each container has its own process namespace",
    "ipc": "each container has its own IPC namespace",
    "privileged": "not for a test stack",
    "cap_add": "not for a test stack",
    "devices": "give GPUs with gpus: or deploy.resources.reservations.devices",
    "cpus": "a cpu fault squeezes a container during a phase",
    "mem_limit": "a memory fault squeezes a container during a phase",
}
# the service keys of the Compose specification, so that one aichaos does not take is told apart from a typo
COMPOSE_SERVICE_KEYS = frozenset("""
    annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs container_name
    cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares cpus cpuset credential_spec
    depends_on deploy develop device_cgroup_rules devices dns dns_opt dns_search domainname driver_opts entrypoint
    env_file environment expose extends external_links extra_hosts gpus group_add healthcheck hostname image init
    ipc isolation labels label_file links logging mac_address mem_limit mem_reservation mem_swappiness memswap_limit
    models network_mode networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop
    privileged profiles provider pull_policy read_only restart runtime scale secrets security_opt shm_size
    stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits use_api_socket user userns_mode
    uts volumes volumes_from working_dir""".split())
TOP_LEVEL = ("services", "volumes", "networks", "name", "version")
AICHAOS_KEYS = ("ports", "ready", "metrics", "hooks")
_VAR = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def is_compose_file(path: Path) -> bool:
    return bool(COMPOSE_NAMES.match(path.name))


@dataclass
class ComposeStack:
    """A Compose file read as stack data (for ``Stack``), and what aichaos said about it."""

    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    lines: dict[KeyPath, KeyPath] = field(default_factory=dict)  # stack key path -> the Compose key path


def _problem(located: Located, path: KeyPath, message: str) -> Problem:
    return Problem(located.file, located.line_of(path), format_path(path), message)


def read_dotenv(directory: Path) -> dict[str, str]:
    from aichaos.runtime.base import read_env_file

    path = directory / ".env"
    return read_env_file(path) if path.is_file() else {}


def interpolate(data: Any, variables: dict[str, str]) -> Any:
    """``${VAR}``, ``${VAR:-default}`` (default when unset or empty), ``${VAR-default}`` (when unset),
    ``$VAR`` and ``$$`` (a literal ``$``) in every string, as Compose fills them in."""
    if isinstance(data, str):
        def fill(m: re.Match[str]) -> str:
            if m.group(1) == "$":
                return "$"
            name = m.group(2) or m.group(5)
            value = variables.get(name)
            if m.group(3) == ":-" and not value:
                return m.group(4)
            if m.group(3) == "-" and value is None:
                return m.group(4)
            return value or ""

        return _VAR.sub(fill, data)
    if isinstance(data, dict):
        return {k: interpolate(v, variables) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, variables) for v in data]
    return data


def check_with_spec(data: dict[str, Any], located: Located) -> list[Problem]:
    """Problems the Compose specification finds (compose-spec), at the file's lines."""
    try:
        from compose_spec import PyCompose
    except ImportError:  # a broken install: aichaos's own checks below still run
        return []
    spec_data = {"services": {n: {k: v for k, v in (s or {}).items() if k != "gpus"}
                              for n, s in (data.get("services") or {}).items()},
                 **{k: v for k, v in data.items() if k != "services"}}
    try:
        compose = PyCompose.from_json(json.dumps(spec_data))
        compose.validate()
    except ValueError as exc:
        text = re.sub(r" at line \d+ column \d+$", "", str(exc))
        path: KeyPath = ()
        head, sep, rest = text.partition(": ")
        if sep and re.fullmatch(r"[\w.\[\]-]+", head):
            path = tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", head))
            text = rest
        elif used := re.search(r"used in the `([^`]+)` service", text):
            path = ("services", used.group(1))
        elif found := re.search(r'invalid (?:type|value): \w+ "?([^",]*)"?', text):
            path = _path_of(located.data, found.group(1)) or ()
        return [_problem(located, path, f"not valid Compose: {text}")]
    return []


def _path_of(data: Any, text: str, path: KeyPath = ()) -> KeyPath | None:
    """The key path of the first scalar that reads ``text`` (the value a message quotes)."""
    if isinstance(data, dict):
        items: list[tuple[str | int, Any]] = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return path if str(data) == text or (isinstance(data, bool) and str(data).lower() == text) else None
    for key, value in items:
        found = _path_of(value, text, (*path, key))
        if found is not None:
            return found
    return None


def compose_to_stack(located: Located, base_dir: Path, declared: dict[str, Edge] | None = None) -> ComposeStack:
    """The stack data (for ``Stack.model_validate``) of a Compose file, with notes on what was inferred
    or ignored. Raises ExperimentError with every problem found, each at its file:line."""
    raw = located.data
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict) or not raw["services"]:
        raise ExperimentError([_problem(located, ("services",), "a Compose file needs services: a mapping of "
                                                                 "at least one service")])
    data = interpolate(raw, {**read_dotenv(base_dir), **os.environ})
    problems: list[Problem] = []
    for key in data:
        if key not in TOP_LEVEL and not str(key).startswith("x-"):
            why = {"secrets": UNSUPPORTED_WHY["secrets"], "configs": UNSUPPORTED_WHY["configs"],
                   "include": "put the services in one file"}.get(key)
            problems.append(_problem(located, (key,), f"Compose's {key!r} is not supported by aichaos"
                                     + (f": {why}" if why else f"; supported: {', '.join(TOP_LEVEL)}")))
    notes: list[str] = []
    for name, service in data["services"].items():
        for key in service or {}:
            key = str(key)
            if key in SUPPORTED or (key.startswith("x-") and key != "x-aichaos"):
                continue
            if key in IGNORED:
                notes.append(f"compose: services.{name}.{key} ignored ({IGNORED[key]})")
                continue
            why = UNSUPPORTED_WHY.get(key)
            message = f"{key!r} is not supported by aichaos" + (f": {why}" if why else "")
            if key not in COMPOSE_SERVICE_KEYS:  # not Compose's at all: a typo, most likely
                close = difflib.get_close_matches(key, [*SUPPORTED, *IGNORED], n=1, cutoff=0.6)
                message = f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                    f"; aichaos takes {', '.join(SUPPORTED)}")
            elif not why:
                message += f"; supported: {', '.join(SUPPORTED)}"
            problems.append(_problem(located, ("services", name, key), message))
    if problems:
        raise ExperimentError(problems)
    problems = check_with_spec(data, located)
    if problems:
        raise ExperimentError(problems)

    services: dict[str, Any] = {}
    for name, service in data["services"].items():
        try:
            services[name] = _service(name, service or {}, located)
        except ExperimentError as exc:
            problems += exc.problems
    if problems:
        raise ExperimentError(problems)
    _wire_edges(services, declared or {}, notes)
    stack: dict[str, Any] = {"services": services, "network": "run"}
    if data.get("volumes"):
        stack["volumes"] = {n: _named(v) for n, v in data["volumes"].items()}
    if data.get("networks"):
        stack["networks"] = {n: _named(v, ("internal",)) for n, v in data["networks"].items()}
    return ComposeStack(stack, notes)


def _named(spec: Any, keep: tuple[str, ...] = ()) -> dict[str, Any] | None:
    if not spec:
        return None
    out = {"external": bool(spec.get("external")), "name": spec.get("name")}
    out.update({k: spec[k] for k in keep if k in spec})
    return {k: v for k, v in out.items() if v is not None}


def _argv(value: Any) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _seconds(value: Any) -> float:
    return parse_duration(value) if isinstance(value, str) else float(value)


def _service(name: str, spec: dict[str, Any], located: Located) -> dict[str, Any]:
    where: KeyPath = ("services", name)
    problems: list[Problem] = []
    out: dict[str, Any] = {}
    extra = spec.get("x-aichaos") or {}
    for key in extra:
        if key not in AICHAOS_KEYS:
            close = difflib.get_close_matches(str(key), AICHAOS_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; x-aichaos takes {', '.join(AICHAOS_KEYS)}"
            problems.append(_problem(located, (*where, "x-aichaos", key), f"unknown key {key!r}{hint}"))
    if "image" in spec:
        out["image"] = spec["image"]
    if "build" in spec:
        build = spec["build"]
        if isinstance(build, str):
            out["build"] = build
        else:
            args = build.get("args") or {}
            if isinstance(args, list):
                args = dict(a.split("=", 1) if "=" in a else (a, os.environ.get(a, "")) for a in args)
            for key in build:
                if key not in ("context", "dockerfile", "args"):
                    problems.append(_problem(located, (*where, "build", key),
                                             f"build.{key} is not supported by aichaos; supported: context, "
                                             "dockerfile, args"))
            out["build"] = {"context": build.get("context", "."), "dockerfile": build.get("dockerfile"),
                            "args": {k: "" if v is None else str(v) for k, v in args.items()}}
    for key, target in (("command", "command"), ("entrypoint", "entrypoint")):
        if spec.get(key) is not None:
            out[target] = _argv(spec[key])
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, os.environ.get(e)) for e in env)
    out["env"] = {k: "" if v is None else str(v) for k, v in env.items() if v is not None or k in os.environ}
    env_file = spec.get("env_file")
    if env_file is not None:
        files = [env_file] if isinstance(env_file, str) else env_file
        out["env_file"] = [f if isinstance(f, str) else f["path"] for f in files
                           if isinstance(f, str) or f.get("required", True) or Path(f["path"]).exists()]
    if "working_dir" in spec:
        out["workdir"] = spec["working_dir"]
    if "stop_grace_period" in spec:
        out["stop_timeout"] = _seconds(spec["stop_grace_period"])

    ports: dict[str, int] = {}
    for i, port in enumerate(spec.get("ports") or []):
        try:
            port_name, number = _port(port)
        except ValueError as exc:
            problems.append(_problem(located, (*where, "ports", i), str(exc)))
            continue
        ports.setdefault(port_name, number)
    for i, exposed in enumerate(spec.get("expose") or []):
        text = str(exposed).split("/")[0]
        if not text.isdigit():
            problems.append(_problem(located, (*where, "expose", i), f"{exposed!r}: aichaos takes one port, not "
                                                                      "a range"))
            continue
        ports.setdefault(text, int(text))
    renamed = extra.get("ports") or {}
    if renamed:
        by_number = {v: k for k, v in ports.items()}
        for port_name, number in renamed.items():
            ports.pop(by_number.get(number, ""), None)
            ports[port_name] = number
    if ports:
        out["ports"] = ports

    depends = spec.get("depends_on") or []
    if isinstance(depends, dict):
        for dep, how in depends.items():
            if (how or {}).get("condition") == "service_completed_successfully":
                problems.append(_problem(located, (*where, "depends_on", dep), "condition "
                                         "service_completed_successfully is not supported by aichaos: every service "
                                         "of the stack runs for the whole experiment"))
    out["after"] = list(depends)

    check = spec.get("healthcheck")
    if check and not check.get("disable") and check.get("test") not in (None, ["NONE"]):
        test = check["test"]
        out["healthcheck"] = {"test": ["CMD-SHELL", test] if isinstance(test, str) else list(test),
                              **{k: _seconds(check[k]) for k in ("interval", "timeout", "start_period") if k in check},
                              **({"retries": check["retries"]} if "retries" in check else {})}
    if "ready" in extra:
        out["ready"] = extra["ready"]
    elif "healthcheck" in out:
        out["ready"] = {"health": True, "timeout": 120}
    elif ports:
        out["ready"] = {"tcp": True, "port": next(iter(ports))}
    else:
        out["ready"] = {"running": True}
    for key in ("metrics", "hooks"):
        if key in extra:
            out[key] = extra[key]

    volumes = []
    for i, volume in enumerate(spec.get("volumes") or []):
        try:
            volumes.append(_mount(volume))
        except ValueError as exc:
            problems.append(_problem(located, (*where, "volumes", i), str(exc)))
    if volumes:
        out["volumes"] = volumes
    networks = spec.get("networks")
    if networks:
        out["networks"] = list(networks)

    gpus = spec.get("gpus")
    if gpus is not None:
        if gpus == "all" or isinstance(gpus, int):
            out["gpus"] = gpus
        else:
            out.setdefault("devices", []).extend(_device(d) for d in gpus)
    deploy = spec.get("deploy") or {}
    for key in deploy:
        if key != "resources":
            problems.append(_problem(located, (*where, "deploy", key), f"deploy.{key} is not supported by aichaos: "
                                     "of deploy it takes resources.reservations.devices (GPUs)"))
    resources = deploy.get("resources") or {}
    for key in resources:
        if key != "reservations":
            problems.append(_problem(located, (*where, "deploy", "resources", key),
                                     f"deploy.resources.{key} is not supported by aichaos (a cpu or memory fault "
                                     "squeezes a container during a phase)"))
    reservations = resources.get("reservations") or {}
    for key in reservations:
        if key != "devices":
            problems.append(_problem(located, (*where, "deploy", "resources", "reservations", key),
                                     f"deploy.resources.reservations.{key} is not supported by aichaos; it takes "
                                     "devices"))
    devices = [_device(d) for d in reservations.get("devices") or []]
    if devices:
        out.setdefault("devices", []).extend(devices)
    if problems:
        raise ExperimentError(problems)
    return out


def _device(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"capabilities": list(spec.get("capabilities") or ["gpu"])}
    for key in ("driver", "count", "device_ids", "options"):
        if spec.get(key) is not None:
            out[key] = spec[key]
    return out


def _port(spec: Any) -> tuple[str, int]:
    """(name, container port) of a Compose port: ``"8080:80"``, ``"80"``, ``"127.0.0.1:8080:80/tcp"`` or
    ``{target: 80, name: http}``. The published (host) side is not kept: aichaos publishes each port on a
    free port of 127.0.0.1, so two stacks never collide."""
    if isinstance(spec, dict):
        if spec.get("protocol", "tcp") != "tcp":
            raise ValueError(f"a {spec['protocol']} port: aichaos proxies TCP only")
        number = int(spec["target"])
        return str(spec.get("name") or number), number
    text = str(spec)
    body, _, protocol = text.partition("/")
    if protocol and protocol != "tcp":
        raise ValueError(f"{text!r} is a {protocol} port: aichaos proxies TCP only")
    container = body.rsplit(":", 1)[-1]
    if not container.isdigit():
        raise ValueError(f"{text!r}: aichaos takes one container port, not a range")
    return container, int(container)


def _mount(spec: Any) -> dict[str, Any]:
    if isinstance(spec, dict):
        kind = spec.get("type", "volume")
        if kind not in ("bind", "volume", "tmpfs"):
            raise ValueError(f"a volume of type {kind!r} is not supported by aichaos (bind, volume or tmpfs)")
        return {"type": kind, "source": spec.get("source"), "target": spec["target"],
                "read_only": bool(spec.get("read_only"))}
    parts = str(spec).split(":")
    if len(parts) == 1:
        return {"type": "volume", "target": parts[0]}
    source, target, *mode = parts
    read_only = bool(mode) and "ro" in mode[0].split(",")
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    return {"type": kind, "source": os.path.expanduser(source), "target": target, "read_only": read_only}


def _wire_edges(services: dict[str, dict[str, Any]], declared: dict[str, Edge], notes: list[str]) -> None:
    """Edges through the fault proxy: the experiment's, then those an environment value implies (one
    that names another service's host:port); every other depends_on only orders the start."""
    for name, service in services.items():
        edges: dict[str, dict[str, Any]] = {}
        for key, edge in declared.items():
            dependent, _, dep = key.partition("->")
            if dependent == name:
                edges[dep] = edge.model_dump(exclude_none=True, exclude_defaults=True) | {"env": edge.env}
                value = service.get("env", {}).get(edge.env, "")
                for port_name, number in (services.get(dep, {}).get("ports") or {}).items():
                    if edge.replace is None and f"{dep}:{number}" in value:  # rewrite the address it holds
                        edges[dep] |= {"replace": f"{dep}:{number}", "port": edge.port or port_name}
                        break
                notes.append(f"edge {key}: {edge.env} through the fault proxy (declared in the experiment)")
        for dep, other in services.items():
            if dep == name or dep in edges:
                continue
            ports = other.setdefault("ports", {})
            for value in service.get("env", {}).values():  # a port it does not list, named in an address
                for number in re.findall(rf"(?<![\w.-]){re.escape(dep)}:(\d{{1,5}})(?!\d)", value):
                    if int(number) not in ports.values():
                        ports[number] = int(number)
            if not ports:
                del other["ports"]
            for port_name, number in ports.items():
                needle = f"{dep}:{number}"
                named = [k for k, v in service.get("env", {}).items() if re.search(rf"(?<![\w.-]){re.escape(needle)}"
                                                                                 r"(?![\d])", v)]
                if named:
                    edges[dep] = {"env": named[0], "replace": needle, "port": port_name}
                    also = f" ({', '.join(named[1:])} also name it and keep the direct address)" if named[1:] else ""
                    notes.append(f"edge {name}->{dep}: {named[0]} ({needle}) rewritten to go through the fault "
                                 f"proxy (inferred){also}")
                    break
        if edges:
            service["depends_on"] = edges
        unproxied = [d for d in service.get("after", []) if d not in edges]
        for dep in unproxied:
            notes.append(f"{name} depends on {dep} with no edge through the fault proxy: no environment value of "
                         f"{name} names {dep}'s host:port (declare it in the experiment's edges: to proxy it)")
        service["after"] = unproxied
