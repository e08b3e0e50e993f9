"""From settings and an operation to what exactly runs: the template
namespace of an instance, and the rendered launch spec (argv, environment,
files, endpoint, readiness probe) with digests to tell whether it changed."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from controllers.process.readiness import Probe
from controllers.process.settings import ProcessSettings
from controllers.process.template import TemplateError, Value, render
from controllers.process.workdir import InstanceRecord
from orchestration_sdk import OperationContext, Permanent

# What a process takes from the controller's environment: the locale and time
# zone, and (behind the controller's bin directory) PATH. Nothing else: the
# controller's NATS URL, credentials, TLS files and settings stay with it.
INHERITED_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")

# Where a bare command name is looked up first: the controller's own Python
# environment (a virtualenv's bin holds `python`, `nats-server`, ...).
BIN_DIR = Path(sys.executable).parent


@dataclass(frozen=True)
class LaunchSpec:
    """Everything rendered for one instance at one moment."""

    argv: tuple[str, ...]
    env: dict[str, str]
    files: dict[str, str]
    endpoint: str
    probe: Probe

    @property
    def launch_digest(self) -> str:
        """Changes when the process must be restarted to see the change."""
        return _digest({"argv": self.argv, "env": self.env})

    @property
    def files_digest(self) -> str:
        return _digest(self.files)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def namespace(ctx: OperationContext, record: InstanceRecord, work_dir: Path, base_dir: Path) -> dict[str, Value]:
    """Every name a template may use: the cluster's parameters, overridden by
    the instance's own values, its siblings' and its providers' endpoints."""
    values: dict[str, Value] = dict(ctx.parameters)
    values.update({
        "uuid": record.uuid,
        "domain": record.domain,
        "solution": record.solution,
        "element": record.element,
        "cluster": record.cluster,
        "component": ctx.component,
        "host": record.host,
        "work_dir": str(work_dir),
        "base_dir": str(base_dir),
        "python": sys.executable,
        "bin_dir": str(BIN_DIR),
        "configuration": ctx.configuration,
        "siblings": list(ctx.siblings),
    })
    for name, port in record.ports.items():
        values[f"ports.{name}"] = str(port)
    if "port" in record.ports:
        values["port"] = str(record.ports["port"])
    for provider in ctx.providers:
        values[f"providers.{provider.relationship}"] = list(provider.endpoints)
    return values


def render_endpoint(settings: ProcessSettings, values: dict[str, Value]) -> str:
    return _render(settings.endpoint, values, "endpoint")


def environment(uuid: str, work_dir: Path, user: str) -> dict[str, str]:
    """What every process of an instance (its command, its ready_command)
    starts with, whatever the controller's own environment holds: PATH (the
    controller's bin directory first), HOME and TMPDIR (the work dir, which
    no other domain's user can enter, unlike /tmp), USER and LOGNAME
    (the user it runs as), the locale and time zone if set, and
    ORCH_INSTANCE, ORCH_WORK_DIR and PYTHONUNBUFFERED."""
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env["PATH"] = os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", os.defpath)])
    env["HOME"] = env["TMPDIR"] = str(work_dir)
    env["USER"] = env["LOGNAME"] = user
    # Output reaches the log files at once, so a failure's tail shows it.
    env["PYTHONUNBUFFERED"] = "1"
    env["ORCH_INSTANCE"] = uuid
    env["ORCH_WORK_DIR"] = str(work_dir)
    return env


def launch_spec(settings: ProcessSettings, values: dict[str, Value], work_dir: Path, user: str) -> LaunchSpec:
    """Render every template of `settings`; a failure names the key and fails
    permanently. The process gets `environment` and the settings' `env`."""
    endpoint = render_endpoint(settings, values)
    values = {**values, "endpoint": endpoint}
    argv = _split(_render(settings.command, values, "command"), "command")
    argv += [_render(arg, values, f"args[{i}]") for i, arg in enumerate(settings.args)]
    argv[0] = resolve(argv[0], work_dir, "command")
    env = environment(str(values["uuid"]), work_dir, user)
    env.update({key: _render(value, values, f"env.{key}") for key, value in settings.env.items()})
    files = {name: _render(text, values, f"files.{name}") for name, text in settings.files.items()}
    return LaunchSpec(tuple(argv), env, files, endpoint, _probe(settings, values, work_dir))


def _probe(settings: ProcessSettings, values: dict[str, Value], work_dir: Path) -> Probe:
    given = [(key, text) for key, text in (("ready_tcp", settings.ready_tcp), ("ready_http", settings.ready_http),
                                            ("ready_command", settings.ready_command)) if text]
    if len(given) > 1:
        raise Permanent(f"process: choose one readiness probe, not {' and '.join(key for key, _ in given)}")
    if not given:
        return Probe()
    key, text = given[0]
    rendered = _render(text, values, key)
    if key == "ready_command":
        argv = _split(rendered, key)
        argv[0] = resolve(argv[0], work_dir, key)
        return Probe("command", shlex.join(argv))
    own = {str(v) for k, v in values.items() if k == "port" or k.startswith("ports.")}
    return Probe("tcp" if key == "ready_tcp" else "http", _own_loopback(key, rendered, own))


# What a probe may reach: the instance's own ports on loopback, nothing else
# (the controller may run as root; a probe must not be a way to scan or call
# other hosts and services from it).
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::")  # the last two: this host, as a target


def _own_loopback(key: str, target: str, own: set[str]) -> str:
    """`target` (host:port, or an http URL) if it names one of the instance's
    own ports on a loopback address; else a permanent error saying so."""
    if key == "ready_http":
        parsed = urllib.parse.urlsplit(target)
        scheme, host = parsed.scheme, parsed.hostname or ""
        try:
            port = str(parsed.port or "")
        except ValueError:
            port = ""
        if scheme not in ("http", "https"):
            raise Permanent(f"process: {key}={target!r} must be an http:// or https:// URL")
    else:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
    if host not in _LOOPBACK or port not in own:
        allowed = ", ".join(sorted(own)) or "none: give the instance a port (port: auto)"
        raise Permanent(f"process: {key}={target!r} may reach only the instance's own ports on loopback "
                        f"(127.0.0.1:{{{{port}}}}; its ports: {allowed})")
    return target


def resolve(program: str, work_dir: Path, key: str) -> str:
    """The absolute path of a program: `python` is the controller's own
    interpreter; a bare name is looked up in the controller's bin directory,
    then on PATH; a relative path is relative to the instance's work dir."""
    if program in ("python", "python3"):
        return sys.executable
    if "/" not in program:
        beside = BIN_DIR / program
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
        found = shutil.which(program)
        if found:
            return found
        raise Permanent(f"process: {key}: program '{program}' not found in {BIN_DIR} or on PATH")
    path = Path(program) if Path(program).is_absolute() else work_dir / program
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise Permanent(f"process: {key}: '{path}' is not an executable file")
    return str(path)


def _render(template: str, values: dict[str, Value], where: str) -> str:
    try:
        return render(template, values, where)
    except TemplateError as err:
        raise Permanent(f"process: {err}") from None


def _split(line: str, key: str) -> list[str]:
    try:
        argv = shlex.split(line)
    except ValueError as err:
        raise Permanent(f"process: {key} {line!r} cannot be split into arguments: {err}") from None
    if not argv:
        raise Permanent(f"process: {key} is empty after rendering")
    return argv
