"""Heroku packaging stays consistent: lock files vs pyproject.toml, Procfile vs CLI, app.json vs settings.

Heroku's Python buildpack installs exactly one package-manager file; ours is
``requirements.txt`` (pinned by ``make lock`` from ``pyproject.toml``, plus ``--editable .``
so the ``contact-adapter`` command exists on the dyno). These tests fail when the pins and
``pyproject.toml`` drift apart, when a pin is missing from the closure, when the Procfile
names a command or option the CLI does not have, or when app.json declares a config var
that is not a real, documented setting. See docs/heroku.md for the reasoning.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import typer.main
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from adapter.ops import cli
from adapter.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
EDITABLE_SELF = ("--editable .", "-e .")
# Files that make the buildpack pick a package manager: more than one is a build error.
PACKAGE_MANAGER_FILES = ("requirements.txt", "Pipfile", "Pipfile.lock", "poetry.lock", "uv.lock")
# Config vars that are not Settings but that the platform or the CLI reads.
PLATFORM_VARS = frozenset({"PORT", "WEB_CONCURRENCY", "HOST"})


@dataclass(frozen=True)
class Lock:
    path: Path
    pins: dict[str, Version]
    header: str
    other_lines: tuple[str, ...]


def read_lock(name: str) -> Lock:
    path = ROOT / name
    pins: dict[str, Version] = {}
    other: list[str] = []
    header = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            header = header or (line if "uv pip compile" in line else "")
            continue
        if not line:
            continue
        if line.startswith("-"):
            other.append(line)
            continue
        req = Requirement(line.split(" #", 1)[0])
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{name}: {line!r} is not a pin"
        key = canonicalize_name(req.name)
        assert key not in pins, f"{name}: {req.name} is pinned twice"
        pins[key] = Version(specs[0].version)
    return Lock(path, pins, header, tuple(other))


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def direct_requirements(*, extras: tuple[str, ...] = ()) -> list[Requirement]:
    project = pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def lock_environment() -> dict[str, str]:
    """The environment the locks are compiled for: Linux (Heroku) and .python-version."""
    env = default_environment()
    major_minor = python_version_file()
    env.update(
        python_version=major_minor,
        python_full_version=major_minor + ".0",
        sys_platform="linux",
        platform_system="Linux",
        os_name="posix",
        implementation_name="cpython",
        platform_python_implementation="CPython",
    )
    return dict(env)


def python_version_file() -> str:
    return (ROOT / ".python-version").read_text().strip()


def check_pinned(lock: Lock, reqs: list[Requirement], why: str) -> list[str]:
    problems: list[str] = []
    env = lock_environment()
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        pinned = lock.pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{lock.path.name}: {req.name} ({why}) is not pinned")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(
                f"{lock.path.name}: {req.name}=={pinned} does not satisfy {req} ({why})"
            )
    return problems


def closure_problems(lock: Lock, roots: list[Requirement]) -> list[str]:
    """Walk the dependency graph from ``roots`` through installed metadata: every node pinned.

    The venv is installed from the dev lock; a node whose installed version differs from its
    pin cannot be inspected and is only checked at its own level.
    """
    env = lock_environment()
    problems: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[Requirement, str]] = [(r, "pyproject.toml") for r in roots]
    while todo:
        req, parent = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        problems += check_pinned(lock, [req], f"needed by {parent}")
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != lock.pins.get(key[0]):
            continue
        for text in dist.requires or []:
            child = Requirement(text)
            extras_env = [dict(env, extra=e) for e in ("", *req.extras)]
            if child.marker is not None and not any(child.marker.evaluate(e) for e in extras_env):
                continue
            child.marker = None
            todo.append((child, f"{req.name}{sorted(req.extras) or ''}"))
    return sorted(set(problems))


PYPROJECT = "(pyproject.toml)"  # how uv's `# via` names a dependency of this project


def read_via(name: str) -> dict[str, set[str]]:
    """``{pinned package: the packages uv's ``# via`` comments say need it}``.

    uv writes ``# via typer`` or ``# via`` followed by ``#   a`` lines under each pin; this
    project shows as ``omnichannel-contact-adapter (pyproject.toml)`` (kept as PYPROJECT).
    """
    via: dict[str, set[str]] = {}
    current: str | None = None
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.strip()
        if not line:
            continue
        if not raw.startswith((" ", "\t")):  # a pin, a header comment or an option line
            current = None
            if not line.startswith(("#", "-")):
                current = canonicalize_name(Requirement(line.split(" #", 1)[0]).name)
                via[current] = set()
            continue
        if current is None or not line.startswith("#"):
            continue
        entry = line.lstrip("#").strip().removeprefix("via").strip()
        if entry:
            via[current].add(PYPROJECT if entry.endswith(PYPROJECT) else canonicalize_name(entry))
    return via


def unneeded_pins(lock: Lock, via: dict[str, set[str]], roots: list[Requirement]) -> list[str]:
    """Pins that no requirement of ``roots`` needs, directly or through what needs it.

    ``roots`` are pyproject.toml's requirements as they are now: a ``(pyproject.toml)`` in a
    ``# via`` comment only says what pyproject.toml *was* when the lock was compiled.
    """
    env = lock_environment()
    needed_by: dict[str, set[str]] = {}
    for package, parents in via.items():
        for parent in parents:
            needed_by.setdefault(parent, set()).add(package)
    todo = [canonicalize_name(r.name) for r in roots if r.marker is None or r.marker.evaluate(env)]
    needed: set[str] = set()
    while todo:
        package = todo.pop()
        if package not in needed:
            needed.add(package)
            todo.extend(needed_by.get(package, ()))
    return sorted(set(lock.pins) - needed)


# -- lock files -----------------------------------------------------------------------------


def test_runtime_lock_pins_every_dependency_of_pyproject() -> None:
    lock = read_lock("requirements.txt")
    roots = direct_requirements()
    assert check_pinned(lock, roots, "pyproject.toml") == []
    assert closure_problems(lock, roots) == []


def test_dev_lock_pins_every_dependency_including_the_dev_extra() -> None:
    lock = read_lock("requirements-dev.txt")
    roots = direct_requirements(extras=("dev",))
    assert check_pinned(lock, roots, "pyproject.toml [dev]") == []
    assert closure_problems(lock, roots) == []


@pytest.mark.parametrize(
    ("name", "extras"), [("requirements.txt", ()), ("requirements-dev.txt", ("dev",))]
)
def test_lock_pins_nothing_that_pyproject_no_longer_needs(
    name: str, extras: tuple[str, ...]
) -> None:
    """A dependency removed from pyproject.toml must leave the lock too (`make lock`)."""
    lock, via = read_lock(name), read_via(name)
    assert set(via) == set(lock.pins)
    unexplained = sorted(p for p, parents in via.items() if not parents)
    assert unexplained == [], f"{name}: pins without a `# via` comment (run `make lock`)"
    stale = unneeded_pins(lock, via, direct_requirements(extras=extras))
    assert stale == [], (
        f"{name} pins {stale}, which no dependency in pyproject.toml needs any more: "
        "run `make lock` to regenerate it"
    )


def test_a_dependency_dropped_from_pyproject_but_left_in_the_lock_is_caught() -> None:
    """The check above against pyproject.toml minus one dependency, the lock unchanged."""
    lock, via = read_lock("requirements.txt"), read_via("requirements.txt")
    roots = direct_requirements()

    def without(name: str) -> list[Requirement]:
        kept = [r for r in roots if canonicalize_name(r.name) != name]
        assert len(kept) == len(roots) - 1, f"{name} is not a dependency any more"
        return kept

    # Only this project needs prometheus-client: dropping it leaves a stale pin.
    assert unneeded_pins(lock, via, without("prometheus-client")) == ["prometheus-client"]
    # jinja2 goes, and with it markupsafe, which nothing else needs.
    assert unneeded_pins(lock, via, without("jinja2")) == ["jinja2", "markupsafe"]
    # typer still needs rich: dropping it from pyproject.toml leaves a needed pin.
    assert unneeded_pins(lock, via, without("rich")) == []


def test_runtime_and_dev_locks_agree_on_every_shared_pin() -> None:
    """CI tests exactly the versions that Heroku installs."""
    runtime, dev = read_lock("requirements.txt"), read_lock("requirements-dev.txt")
    missing = sorted(set(runtime.pins) - set(dev.pins))
    assert missing == [], f"pinned for Heroku but not in the dev lock: {missing}"
    differ = {n: (str(v), str(dev.pins[n])) for n, v in runtime.pins.items() if dev.pins[n] != v}
    assert differ == {}, f"runtime vs dev pins differ (run `make lock`): {differ}"


def test_runtime_lock_installs_the_project_itself_and_nothing_unpinned() -> None:
    lock = read_lock("requirements.txt")
    assert lock.other_lines in ((EDITABLE_SELF[0],), (EDITABLE_SELF[1],)), (
        "requirements.txt must end with '--editable .' (and contain nothing else unpinned): "
        "Heroku's pip path installs only this file, and the Procfile runs `contact-adapter`"
    )
    assert read_lock("requirements-dev.txt").other_lines == ()


def test_exactly_one_package_manager_file_and_a_python_version_file() -> None:
    present = [name for name in PACKAGE_MANAGER_FILES if (ROOT / name).exists()]
    assert present == ["requirements.txt"], (
        f"Heroku's buildpack fails with more than one package manager file: {present}"
    )
    assert not (ROOT / "runtime.txt").exists(), "runtime.txt is deprecated: use .python-version"
    version = python_version_file()
    assert re.fullmatch(r"3\.\d+", version), f".python-version should be major.minor: {version!r}"
    requires = pyproject()["project"]["requires-python"]
    assert Requirement(f"python{requires}").specifier.contains(version + ".0")
    for name in ("requirements.txt", "requirements-dev.txt"):
        header = read_lock(name).header
        assert f"--python-version {version}" in header, f"{name} was not compiled for {version}"
    assert pyproject()["tool"]["mypy"]["python_version"] == version


# -- Procfile ---------------------------------------------------------------------------------


def procfile() -> dict[str, str]:
    processes: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if match:
            assert match.group(1) not in processes, f"Procfile: {match.group(1)} twice"
            processes[match.group(1)] = match.group(2).strip()
    return processes


def cli_group() -> Any:
    """The click group behind the typer app (typer vendors click: duck-typed here)."""
    group = typer.main.get_command(cli.app)
    assert hasattr(group, "commands")
    return group


def parse_cli(command: str, env: dict[str, str]) -> tuple[Any, Any]:
    """Resolve a Procfile command line to its CLI command and parsed options (not run)."""
    argv = [re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], a) for a in shlex.split(command)]
    assert argv[0] == "contact-adapter", f"{command!r}: expected the contact-adapter command"
    group = cli_group()
    args = argv[1:]
    while hasattr(group, "commands"):
        assert args, f"{command!r}: no subcommand"
        sub = group.commands.get(args[0])
        assert sub is not None, f"{command!r}: contact-adapter has no command {args[0]!r}"
        group, args = sub, args[1:]
    ctx = group.make_context(argv[0], list(args))  # raises on an unknown option or bad value
    return group, ctx


def test_procfile_declares_web_worker_and_release_as_real_cli_commands() -> None:
    processes = procfile()
    assert set(processes) == {"web", "worker", "release"}
    env = {"PORT": "5000"}
    web, ctx = parse_cli(processes["web"], env)
    assert web.name == "serve"
    assert ctx.params["host"] == "0.0.0.0", "the web dyno must listen on all interfaces"
    assert ctx.params["port"] == 5000, "the web dyno must bind $PORT"
    assert "$PORT" in processes["web"] or "${PORT}" in processes["web"]
    worker, _ = parse_cli(processes["worker"], env)
    assert worker.name == "worker"
    release, _ = parse_cli(processes["release"], env)
    assert release.name == "migrate"


def test_web_workers_come_from_web_concurrency() -> None:
    from adapter.settings import Settings

    serve = cli_group().commands["serve"]
    by_name = {p.name: p for p in serve.params}
    # No default of the command's own: WEB_CONCURRENCY, PORT and HOST are settings (from
    # the environment, where Heroku sets them, or .env), used unless given on the line.
    for option in ("workers", "port", "host"):
        assert by_name[option].default is None, option
    assert {"web_concurrency", "port", "host"} <= set(Settings.model_fields)
    assert "--workers" not in procfile()["web"], "let WEB_CONCURRENCY choose the worker count"


# -- app.json -----------------------------------------------------------------------------------


def app_json() -> dict[str, Any]:
    return dict(json.loads((ROOT / "app.json").read_text()))


def readme_settings() -> set[str]:
    """Every variable named in the first cell of a README table row."""
    text = (ROOT / "README.md").read_text()
    names: set[str] = set()
    for cell in re.findall(r"^\|([^|\n]*)\|", text, re.MULTILINE):
        names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", cell))
    return names


def channel_setting_in_code(name: str) -> bool:
    """A channel's own setting (read with ``settings.lookup``): named in the code."""
    sources = [*(ROOT / "handlers").rglob("*.py"), *(ROOT / "adapter").rglob("*.py")]
    return any(f'"{name}"' in path.read_text() for path in sources)


def test_app_json_declares_the_heroku_deployment() -> None:
    manifest = app_json()
    assert manifest["name"] and manifest["description"]
    assert manifest["buildpacks"] == [{"url": "heroku/python"}]
    addons = [a if isinstance(a, str) else a["plan"] for a in manifest["addons"]]
    assert any(a.split(":")[0] == "heroku-postgresql" for a in addons)
    assert set(manifest["formation"]) == {"web"}
    assert manifest["formation"]["web"]["quantity"] == 1
    assert "DATABASE_URL" not in manifest["env"], "the heroku-postgresql add-on sets DATABASE_URL"


@pytest.mark.parametrize("name", sorted(app_json()["env"]))
def test_every_app_json_config_var_is_a_real_documented_setting(name: str) -> None:
    spec = app_json()["env"][name]
    assert isinstance(spec, dict) and spec.get("description"), f"{name}: no description"
    field = Settings.model_fields.get(name.lower())
    real = field is not None or name in PLATFORM_VARS or channel_setting_in_code(name)
    assert real, f"{name} is not a setting of the service"
    assert name in readme_settings(), f"{name} is not in the README's settings table"
    if "value" in spec:
        assert isinstance(spec["value"], str)
        if field is not None:
            load_settings(**{name.lower(): spec["value"]})  # a default that validates
        else:
            assert spec["value"].isdigit()
    if spec.get("generator") is not None:
        assert spec["generator"] == "secret"
        assert "TOKEN" in name or "SECRET" in name
    if "value" not in spec and "generator" not in spec:
        assert "required" in spec, f"{name}: say whether it is required (Heroku defaults to true)"


def test_generated_secrets_cover_every_service_token() -> None:
    env = app_json()["env"]
    for name in ("API_TOKEN", "ADMIN_TOKEN", "METRICS_TOKEN"):
        assert env[name].get("generator") == "secret", f"{name} should be generated"
    for name in ("ROCKETCHAT_URL", "ROCKETCHAT_USER_ID", "ROCKETCHAT_AUTH_TOKEN"):
        assert env[name].get("required") is True, f"{name} has no usable default on Heroku"


def test_readme_has_the_deploy_button() -> None:
    text = (ROOT / "README.md").read_text()
    assert "https://www.herokucdn.com/deploy/button.svg" in text
    assert "(https://heroku.com/deploy" in text
    assert (ROOT / "docs" / "heroku.md").is_file()
