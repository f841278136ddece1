"""Deploying a Sentry Node onto a host: facts read the host, operations change only what differs.

Running `deploy_node` twice changes nothing the second time."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shlex
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from gradientlab import agent
from gradientlab.agent.extension import archive_contents, unpack_crx
from gradientlab.config import NetworkSettings, RunnerSettings
from gradientlab.node.browser import (
    BROWSER_FACTS_SH,
    DEBIAN_CHROMIUM,
    BrowserFacts,
    NoUsableBrowser,
    choose_browser,
    parse_browser_facts,
    playwright_install_command,
    playwright_path_command,
)
from gradientlab.remote.executor import CommandResult, Executor, RemoteError

NODE_DIR = ".gradientlab/node"
VENV_PYTHON = ".gradientlab/venv/bin/python"
AGENT_DIR = Path(agent.__file__).parent
STUN_SOURCE = AGENT_DIR / "stun.py"  # the tap-readiness test, run on its own by poc_taps
# what the runner process never imports: shipping a new one restarts nothing
AGENT_STANDALONE = frozenset({"agent/stun.py"})
# the flat layout of earlier releases (runner.py beside these), removed by deploy
OLD_AGENT_FILES = ("facts.py", "pages.py", "stun.py")
UNIT_NAME = "gradientlab-node.service"


@dataclass(frozen=True)
class NodeSettings:
    """What the runner on a host needs. `password` goes only into a 0600 file on the host."""

    email: str
    password: str
    network: NetworkSettings
    runner: RunnerSettings
    dashboard_url: str
    extension_source: str
    extension_id: str

    def runner_config(
        self, supervisor: str = "runner", chromium: str | None = None
    ) -> dict[str, Any]:
        """config.json; `supervisor` says who starts the runner: "systemd" or "runner";
        `chromium` is the browser deploy chose on this host."""
        return {
            "email": self.email,
            "password": self.password,
            "dashboard_url": self.dashboard_url,
            "extension_id": self.extension_id,
            "extension_source": self.extension_source,
            "chromium": chromium or self.runner.chromium or DEBIAN_CHROMIUM,
            "status_interval_seconds": self.runner.status_interval_seconds,
            "browser_check_seconds": self.runner.browser_check_seconds,
            "supervisor": supervisor,
        }


@dataclass
class DeployResult:
    host: str
    changes: list[str] = field(default_factory=list)
    extension_version: str | None = None
    extension_id: str | None = None
    runner_pid: int | None = None
    supervisor: str = ""
    browser: str | None = None  # the Chromium this host's node runs
    browser_source: str | None = None  # "package", "playwright" or "configured"
    plan: bool = False  # the changes are what a deploy would do; nothing was changed
    host_os: str | None = None  # PRETTY_NAME from /etc/os-release

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(ex: Executor, command: str, step: str, timeout: float = 120) -> str:
    result = ex.run(command, timeout=timeout)
    if not result.ok:
        raise RemoteError(
            f"{ex.name}: {step} failed (exit {result.exit_code}): "
            f"{(result.stderr or result.stdout).strip()[-600:]}"
        )
    return result.stdout


def _json_line(ex: Executor, command: str, step: str, timeout: float = 120) -> dict[str, Any]:
    result = ex.run(command, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RemoteError(
            f"{ex.name}: {step} printed no JSON (exit {result.exit_code}): "
            f"{(result.stderr or result.stdout).strip()[-600:]}"
        )
    data: dict[str, Any] = json.loads(lines[-1])
    if "error" in data or not result.ok:
        raise RemoteError(f"{ex.name}: {step} failed: {data.get('error', result.stderr[-600:])}")
    return data


# ---------------------------------------------------------------- facts


def has_systemd(ex: Executor) -> bool:
    return ex.run("test -d /run/systemd/system && command -v systemctl >/dev/null").ok


def read_browser_facts(ex: Executor) -> BrowserFacts:
    """The host's OS and the Chromium binaries it has (see gradientlab.node.browser)."""
    return parse_browser_facts(_check(ex, BROWSER_FACTS_SH, "reading the host's OS"))


def python_has_playwright(ex: Executor, python: str) -> bool:
    return ex.run(f"{shlex.quote(python)} -c 'import playwright' 2>/dev/null").ok


def chromium_version_on(ex: Executor, wanted: str) -> CommandResult:
    """`chromium --version` on the host: proves the browser is there and runs."""
    return ex.run(f"{shlex.quote(wanted)} --version 2>&1", timeout=60)


# ---------------------------------------------------------------- operations


# The host side runs on Python 3.9 and later (Debian 11, Ubuntu 22.04, Raspberry Pi OS bullseye).
MIN_HOST_PYTHON = (3, 9)
# What a venv for the runner needs from the host's python3: its version, and whether `venv` can
# make an environment with pip in it (Debian and Ubuntu split that out as python3-venv).
HOST_PYTHON_SH = (
    "command -v python3 >/dev/null 2>&1 || { echo 'python3 missing'; exit 0; }; "
    "python3 -c 'import sys; print(\"python3 %d.%d\" % sys.version_info[:2])'; "
    "python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && echo 'venv ok' || echo 'venv missing'"
)


@dataclass(frozen=True)
class HostPython:
    """The host's python3 as a venv for the runner needs it."""

    version: tuple[int, int] | None  # None: no python3 at all
    has_venv: bool

    @property
    def problem(self) -> str | None:
        """What keeps deploy from making the runner's venv, said so an operator can fix it."""
        if self.version is None:
            return (
                "the host has no python3; install it (Debian/Ubuntu: `sudo apt-get install "
                "python3 python3-venv`)"
            )
        if self.version < MIN_HOST_PYTHON:
            found = ".".join(map(str, self.version))
            return (
                f"the host's python3 is {found}; the node runner needs Python 3.9 or later "
                "(Debian 11, Ubuntu 22.04 and Raspberry Pi OS bullseye have it): upgrade the "
                "host's OS or install a newer python3"
            )
        if not self.has_venv:
            found = ".".join(map(str, self.version))
            return (
                f"the host's python3 ({found}) cannot make a venv: python3-venv is not "
                f"installed; install it (`sudo apt-get install python3-venv`, or "
                f"python{found}-venv) and deploy again"
            )
        return None


def read_host_python(ex: Executor) -> HostPython:
    out = ex.run(HOST_PYTHON_SH, timeout=60).stdout
    m = re.search(r"python3 (\d+)\.(\d+)", out)
    return HostPython(
        (int(m.group(1)), int(m.group(2))) if m else None, "venv ok" in out.splitlines()
    )


def linger_enabled(ex: Executor) -> bool:
    """Whether logind keeps this user's systemd manager (and so the runner's unit) running with
    no one logged in, and starts it at boot."""
    out = ex.run('loginctl show-user "$USER" --property=Linger --value 2>/dev/null').stdout
    return out.strip() == "yes"


def linger_problem(user: str) -> str:
    return (
        f"lingering is off for {user} and {user} may not turn it on (logind asks polkit, "
        f"which allows only root here): without it systemd stops the runner when the last SSH "
        f"session ends and never starts it at boot. Run `sudo loginctl enable-linger {user}` "
        "on the host once, then deploy again"
    )


def ensure_linger(ex: Executor, steps: Steps) -> str | None:
    """Lingering on for the node's user (cloud-init turns it on as root on cloud VMs); the
    problem, said for the operator, when the user cannot turn it on."""
    if linger_enabled(ex):
        return None
    if steps.plan:
        steps.changes.append("would enable lingering for the node's user (loginctl)")
        return None
    ex.run('loginctl enable-linger "$USER"')
    if linger_enabled(ex):
        steps.changes.append("enabled lingering for the node's user (loginctl enable-linger)")
        return None
    return linger_problem(ex.run("id -un").stdout.strip() or "the node's user")


def ensure_runtime(ex: Executor, python: str | None, steps: Steps) -> str:
    """A Python with Playwright: the host's own (cloud bootstrap, local provider) or a venv."""
    if python and python_has_playwright(ex, python):
        return python
    if python_has_playwright(ex, VENV_PYTHON):
        return VENV_PYTHON
    host_python = read_host_python(ex)
    if host_python.problem is not None:
        raise RemoteError(f"{ex.name}: {host_python.problem}")
    pw = version("playwright")
    steps.run(
        "python3 -m venv .gradientlab/venv && "
        f".gradientlab/venv/bin/pip install --quiet playwright=={pw}",
        "installing Playwright for the runner in .gradientlab/venv",
        f"installed playwright {pw} in .gradientlab/venv",
        timeout=600,
    )
    return VENV_PYTHON


# `cloud-init status --wait` alone is not enough: cloud-init 22.4 (Debian 12) ends it at the
# first stage that reports an error, while the final stage (packages, runcmd: lingering) is
# still running. So, where cloud-init is enabled and has not written boot-finished (its final
# stage's last act), wait for systemd to finish booting too (cloud-final.service is part of the
# boot); then its answer, with the exit code that says done (0), error (1) or degraded (2).
CLOUD_INIT_WAIT_SH = (
    "cloud-init status --wait >/dev/null 2>&1; "
    "if [ -e /run/cloud-init/enabled ] && [ ! -e /var/lib/cloud/instance/boot-finished ] "
    '&& command -v systemctl >/dev/null; then n=0; while [ $n -lt 900 ] && [ "$(systemctl show '
    '-p ActiveState --value cloud-final.service 2>/dev/null)" = activating ]; do sleep 1; '
    "n=$((n+1)); done; fi; "
    "cloud-init status --long 2>&1"
)


def wait_for_cloud_init(ex: Executor, changes: list[str], timeout: float = 1200) -> None:
    """A new VM is still installing packages on first boot: install nothing before it ends."""
    if not ex.run("command -v cloud-init >/dev/null 2>&1").ok:
        return
    done = ex.run(CLOUD_INIT_WAIT_SH, timeout=timeout)
    if done.exit_code == 2:  # "degraded": finished, with recoverable errors
        changes.append(f"cloud-init finished degraded: {done.stdout.strip()[-200:]}")
    elif not done.ok:
        raise RemoteError(
            f"{ex.name}: cloud-init did not finish cleanly (exit {done.exit_code}): "
            f"{done.stdout.strip()[-400:]}; see /var/log/cloud-init-output.log on the host"
        )


def install_playwright_chromium(ex: Executor, python: str, steps: Steps) -> str | None:
    """Playwright's Chromium build for GradientLab's user (idempotent); its path (None in a
    plan before Playwright itself is installed)."""
    if steps.plan and not python_has_playwright(ex, python):
        steps.changes.append("would have installed Playwright's Chromium")
        return None
    out = _check(ex, playwright_path_command(python), "asking Playwright for its Chromium").strip()
    path = out.splitlines()[-1].strip() if out else ""
    if not path.startswith("/"):
        raise RemoteError(f"{ex.name}: Playwright did not say where its Chromium is: {out!r}")
    if not ex.run(f"test -x {shlex.quote(path)}").ok:
        steps.run(
            playwright_install_command(python),
            "installing Playwright's Chromium",
            f"installed Playwright's Chromium at {path}",
            timeout=900,
        )
    return path


def systemd_unit(python: str) -> str:
    return "\n".join(
        [
            "[Unit]",
            "Description=GradientLab Sentry Node runner",
            "After=network-online.target",
            "",
            "[Service]",
            f"ExecStart=%h/{python} %h/{NODE_DIR}/runner.py run"
            if not python.startswith("/")
            else f"ExecStart={python} %h/{NODE_DIR}/runner.py run",
            "Restart=always",
            "RestartSec=5",
            "MemoryHigh=400M",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def autostart_script(python: str) -> str:
    return f'#!/bin/sh\ncd "$HOME" && exec {shlex.quote(python)} {NODE_DIR}/runner.py start\n'


def agent_files() -> dict[str, bytes]:
    """The host side as deploy ships it, by path under NODE_DIR: the agent package as agent/, its
    `__main__.py` as runner.py beside it (the command systemd, the keeper and the ladder run)."""
    files = {"runner.py": (AGENT_DIR / "__main__.py").read_bytes()}
    for path in sorted(AGENT_DIR.glob("*.py")):
        if path.name != "__main__.py":
            files[f"agent/{path.name}"] = path.read_bytes()
    return files


def put_file(ex: Executor, path: str, data: bytes, mode: int, changes: list[str]) -> bool:
    """Write `path` when its content differs; True when it did."""
    return Steps(ex, changes, plan=False).file(path, data, mode)


class Steps:
    """What deploy does on a host, or with `plan` only says what it would do: every change goes
    through here, so that a plan and a deploy can never disagree about what differs."""

    def __init__(self, ex: Executor, changes: list[str], plan: bool) -> None:
        self.ex, self.changes, self.plan = ex, changes, plan

    def dir(self, path: str, mode: int = 0o700) -> bool:
        if self.plan:
            missing = not self.ex.run(f"test -d {shlex.quote(path)}").ok
            if missing:
                self.changes.append(f"would create {path}")
            return missing
        created = self.ex.ensure_dir(path, mode)
        if created:
            self.changes.append(f"created {path}")
        return created

    def file(self, path: str, data: bytes, mode: int) -> bool:
        current = self.ex.read_file(path)
        if current is not None and _sha(current) == _sha(data):
            return False
        if self.plan:
            self.changes.append(f"would write {path}")
            return True
        self.ex.write_file(path, data, mode)
        self.changes.append(f"wrote {path}")
        return True

    def remove(self, path: str) -> bool:
        if not self.ex.run(f"test -e {shlex.quote(path)}").ok:
            return False
        if self.plan:
            self.changes.append(f"would remove {path}")
            return True
        _check(self.ex, f"rm -f {shlex.quote(path)}", f"removing {path}")
        self.changes.append(f"removed {path}")
        return True

    def run(self, command: str, step: str, done: str, timeout: float = 120) -> str:
        """Run a changing command; `done` says what it did ("started the runner")."""
        if self.plan:
            self.changes.append(f"would have {done}")
            return ""
        out = _check(self.ex, command, step, timeout)
        self.changes.append(done)
        return out


def deploy_node(
    ex: Executor, settings: NodeSettings, python: str | None, plan: bool = False
) -> DeployResult:
    """Bring the node on this host to what `settings` want, changing only what differs. With
    `plan`, change nothing and list what a deploy would change ("would write …")."""
    result = DeployResult(host=ex.name, plan=plan)
    steps = Steps(ex, result.changes, plan)
    for d in (".gradientlab", NODE_DIR, ".gradientlab/autostart"):
        steps.dir(d)
    if plan:
        if ex.run("cloud-init status 2>/dev/null | grep -q running").ok:
            result.changes.append("would wait for cloud-init, still running")
    else:
        wait_for_cloud_init(ex, result.changes)
    facts = read_browser_facts(ex)
    try:
        choice = choose_browser(facts, settings.runner.chromium)
    except NoUsableBrowser as exc:
        raise RemoteError(f"{ex.name}: {exc}") from None
    # what only the host's owner can fix, said all at once before anything is installed
    systemd = has_systemd(ex)
    problems = []
    if not (python and python_has_playwright(ex, python)) and not python_has_playwright(
        ex, VENV_PYTHON
    ):
        problems.append(read_host_python(ex).problem)
    if systemd:
        problems.append(ensure_linger(ex, steps))
    found = [p for p in problems if p]
    if found:
        raise RemoteError(f"{ex.name}: " + "; and ".join(found))
    py = ensure_runtime(ex, python, steps)
    browser = choice.path or install_playwright_chromium(ex, py, steps)
    result.browser, result.browser_source = browser, choice.source
    result.host_os = facts.os.name
    chromium = chromium_version_on(ex, browser) if browser else None
    if chromium is not None and (not chromium.ok or "Chromium" not in chromium.stdout):
        raise RemoteError(
            f"{ex.name}: no working Chromium at {browser} ({choice.why}; exit "
            f"{chromium.exit_code}: {(chromium.stdout + chromium.stderr).strip()[-300:]}); "
            + (
                "its system libraries may be missing: run `python -m playwright install-deps "
                "chromium` as root (the cloud bootstrap does)"
                if choice.source == "playwright"
                else "install Debian's `chromium` (the bootstrap script does) or set "
                "runner.chromium in the fleet file"
            )
        )
    # decided before config.json is written: the runner's `start`/`stop` follow its supervisor
    result.supervisor = "systemd" if systemd else "runner"
    steps.dir(f"{NODE_DIR}/agent")
    code_changed = False
    for name, data in agent_files().items():
        changed = steps.file(f"{NODE_DIR}/{name}", data, 0o644)
        code_changed |= changed and name not in AGENT_STANDALONE
    for name in OLD_AGENT_FILES:
        removed = steps.remove(f"{NODE_DIR}/{name}")
        code_changed |= removed and f"agent/{name}" not in AGENT_STANDALONE
    config = json.dumps(
        settings.runner_config(result.supervisor, browser), indent=1, sort_keys=True
    ).encode()
    config_changed = steps.file(f"{NODE_DIR}/config.json", config, 0o600)
    if plan:
        ext = extension_plan(ex, settings, chromium.stdout if chromium else "")
    else:
        ext = _json_line(
            ex,
            f"{shlex.quote(py)} {NODE_DIR}/runner.py install-extension",
            "installing the extension",
        )
    result.extension_version = ext.get("version")
    result.extension_id = ext.get("extension_id")
    if ext.get("changed"):
        result.changes.append(
            f"would install extension {ext.get('version')} (now {ext.get('installed') or 'none'})"
            if plan
            else f"installed extension {ext.get('version')}"
        )
    needs_restart = code_changed or config_changed or bool(ext.get("changed"))

    runner = f"{shlex.quote(py)} {NODE_DIR}/runner.py"
    if systemd:
        steps.dir(".config/systemd/user", 0o755)
        unit_changed = steps.file(
            f".config/systemd/user/{UNIT_NAME}", systemd_unit(py).encode(), 0o644
        )
        if unit_changed and not plan:
            _check(ex, "systemctl --user daemon-reload", "reloading systemd")
        active = ex.run(f"systemctl --user is-active --quiet {UNIT_NAME}").ok
        if not active:
            # a runner started by hand would hold runner.lock and keep the unit's from running
            if not plan and _json_line(
                ex, f"{runner} stop", "stopping a runner outside systemd"
            ).get("stopped"):
                result.changes.append("stopped a runner running outside systemd")
            steps.run(
                f"systemctl --user enable --now {UNIT_NAME}",
                "starting the runner unit",
                "started the runner (systemd)",
            )
        elif needs_restart or unit_changed:
            steps.run(
                f"systemctl --user restart {UNIT_NAME}",
                "restarting the runner unit",
                "restarted the runner (systemd)",
            )
    else:
        steps.file(".gradientlab/autostart/gradientlab-node", autostart_script(py).encode(), 0o755)
        if plan:
            running = ex.run(f'kill -0 "$(cat {NODE_DIR}/runner.pid 2>/dev/null)" 2>/dev/null').ok
            if not running:
                result.changes.append("would have started the runner")
            elif needs_restart:
                result.changes.append("would have restarted the runner to apply the changes")
            return result
        if needs_restart and _json_line(ex, f"{runner} stop", "stopping the runner").get("stopped"):
            result.changes.append("stopped the runner to apply changes")
        started = _json_line(ex, f"{runner} start", "starting the runner")
        if started.get("started"):
            result.changes.append("started the runner")
        result.runner_pid = started.get("pid")
    return result


def extension_plan(ex: Executor, settings: NodeSettings, chromium_version: str) -> dict[str, Any]:
    """Whether the extension the source serves now differs from the one installed on the host:
    downloaded here (the host is not changed) and compared file by file, as the runner does."""
    current = f"{NODE_DIR}/extension/current"
    installed_digest = (ex.read_file(f"{current}/.gradientlab-sha256") or b"").decode().strip()
    installed_manifest = ex.read_file(f"{current}/manifest.json")
    installed = None
    if installed_manifest:
        with contextlib.suppress(ValueError):
            installed = str(json.loads(installed_manifest).get("version"))
    m = re.search(r"(\d+(?:\.\d+){1,3})", chromium_version)
    url = settings.extension_source.format(
        chromium_version=m.group(1) if m else "146.0.0.0", extension_id=settings.extension_id
    )
    try:
        data = httpx.get(url, timeout=60, follow_redirects=True).raise_for_status().content
        zip_bytes, _ = unpack_crx(data)
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            manifest, digest = archive_contents(archive)
    except (httpx.HTTPError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        return {"version": f"? (could not fetch {url}: {exc})", "changed": True,
                "installed": installed}  # fmt: skip
    return {
        "version": str(manifest.get("version")),
        "changed": digest != installed_digest,
        "installed": installed,
        "extension_id": settings.extension_id,
    }


def runner_command(python: str | None, command: str) -> str:
    py = python or VENV_PYTHON
    return f"{shlex.quote(py)} {NODE_DIR}/runner.py {command}"


# The health check's command: one JSON document from shell builtins and `cat`/`tail`/`sed`/`df`/
# `date`, no interpreter start-up (it runs on every host on every sweep, a Raspberry Pi included).
# POSIX sh (dash on Debian). The runner keeps status.json current (popup, PSS); this adds whether
# its processes live now, the event log's id and the host's own figures (load, memory, the disk
# the node lives on, its clock, cloud-init) — the latter also where no node is installed, so that
# "cloud-init still running" and "not deployed" differ. Every value is checked before it is
# printed: what cannot be read is null, never a hole in the JSON. `"events": [` comes last (a
# reader may cut an event line a crash left short there). It only reads: no file is written.
PROBE_SH = r"""
set -f
num() { case "$1" in ''|*[!0-9]*|0[0-9]*) echo null;; *) echo "$1";; esac; }
dec() { case "$1" in ''|.*|*.|*[!0-9.]*|*.*.*|0[0-9]*) echo null;; *) echo "$1";; esac; }
host() {
  l=; mt=; ma=; ci=null
  [ -r /proc/loadavg ] && read -r l x </proc/loadavg
  [ -r /proc/meminfo ] && while read -r k v x; do case "$k" in
    MemTotal:) mt=$v;; MemAvailable:) ma=$v;; esac; done </proc/meminfo
  set -- $(LC_ALL=C df -Pk . 2>/dev/null | sed -n 2p)
  c=$(date +%s.%N 2>/dev/null); [ "$(dec "$c")" = null ] && c=$(date +%s 2>/dev/null)
  if [ -e /var/lib/cloud/instance/boot-finished ]; then ci='"done"'
  elif [ -e /run/cloud-init ]; then ci='"running"'; fi
  printf '"host": {"load1": %s, "mem_total_kib": %s, "mem_available_kib": %s,'\
' "disk_total_kib": %s, "disk_free_kib": %s, "clock": %s, "cloud_init": %s}'\
 "$(dec "$l")" "$(num "$mt")" "$(num "$ma")" "$(num "$2")" "$(num "$4")" "$(dec "$c")" "$ci"
}
cd .gradientlab/node 2>/dev/null || {
  printf '{"probe_version": "sh2", "installed": false, "events_id": null, '; host; printf '}\n'
  exit 0; }
r=$(num "$(cat runner.pid 2>/dev/null)"); b=$(num "$(cat browser.pid 2>/dev/null)")
alive() { [ "$1" != null ] && kill -0 "$1" 2>/dev/null || { echo false; return; }
  # a killed process nobody has reaped yet (a zombie) answers kill -0 but is not alive
  st=; read -r st 2>/dev/null < "/proc/$1/stat"; st=${st##*) }; st=${st%% *}
  [ "$st" = Z ] && echo false || echo true; }
ra=$(alive "$r"); ba=false; [ "$ra" = true ] && ba=$(alive "$b")
[ -f config.json ] && inst=true || inst=false
e=; [ -r events.id ] && read -r e <events.id
case "$e" in ''|*[!0-9a-f]*) e=null;; *) e="\"$e\"";; esac
printf '{"probe_version": "sh2", "runner_alive": %s, "runner_pid": %s, "browser_alive": %s,'\
' "browser_pid": %s, "installed": %s, "events_id": %s, ' "$ra" "$r" "$ba" "$b" "$inst" "$e"
host
printf ', "status": '
if [ -s status.json ]; then cat status.json; else printf null; fi
printf ', "events": [\n'
[ -f events.jsonl ] && tail -n 200 events.jsonl | sed '$!s/$/,/'
printf ']}\n'
""".strip()
