"""The fleet file: the Gradient account, the network's addresses, providers and hosts.

A bad file fails with `FleetFileError`, which names the file, the line and the field."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REAL_EXTENSION_ID = "caacbgbklghmpodbdafajbgdnegacfmo"
REAL_EXTENSION_SOURCE = (
    "https://clients2.google.com/service/update2/crx?response=redirect"
    "&prodversion={chromium_version}&acceptformat=crx2,crx3&x=id%3D{extension_id}%26uc"
)
HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class FleetFileError(ValueError):
    """The fleet file is missing, is not YAML, or a field is wrong; the message says where."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """Where a secret lives: an environment variable or a Prefect Secret block. Never inline."""

    env: str | None = None
    secret_block: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.secret_block is None):
            raise ValueError("give exactly one of `env` or `secret_block`")
        return self

    def describe(self) -> str:
        return f"env:{self.env}" if self.env else f"secret_block:{self.secret_block}"


class AccountSettings(Strict):
    email: str
    password: SecretRef
    name: str | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if "@" not in v:
            raise ValueError("not an email address")
        return v

    @field_validator("password", mode="before")
    @classmethod
    def _no_inline_password(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError(
                "passwords are never written in the fleet file; use {env: VAR} or "
                "{secret_block: NAME}"
            )
        return v


class NetworkSettings(Strict):
    """Every address of the network. Defaults are the real Gradient network."""

    api_base: str = "https://api.gradient.network/api"
    identity_base: str = "https://identitytoolkit.googleapis.com"
    token_base: str = "https://securetoken.googleapis.com"
    dashboard_url: str = "https://app.gradient.network/"
    # The dashboard's Firebase web API key: deploy reads it from the deployed extension's bundle,
    # so leave it unset; a value here overrides what the bundle carries.
    web_api_key: str | None = None
    extension_id: str = REAL_EXTENSION_ID
    extension_source: str = REAL_EXTENSION_SOURCE
    stun_server: str = "stun.l.google.com:19302"
    api_timeout_seconds: float = Field(default=30, gt=0)  # each API call, start to end
    # Pace of API requests from one flow run, all its tasks together. Nobody publishes
    # Gradient's limit, so by default the client finds it: it speeds up while nothing is
    # refused, backs off on a 429, and keeps what it learned in the database for the next run,
    # never faster than max_requests_per_second. A fixed requests_per_second (for a known
    # limit) turns the search off. 429s are obeyed either way.
    requests_per_second: float | None = Field(default=None, gt=0)
    max_requests_per_second: float = Field(default=100, gt=0)
    api_concurrency: int = Field(default=8, ge=1, le=32)  # requests in flight at once
    node_page_size: int = Field(default=100, ge=1, le=1000)  # nodes per /sentrynode/list page

    @field_validator("api_base", "identity_base", "token_base", "dashboard_url", "extension_source")
    @classmethod
    def _https(cls, v: str) -> str:
        return _endpoint(v)

    @field_validator("web_api_key")
    @classmethod
    def _not_a_placeholder(cls, v: str | None) -> str | None:
        from gradientlab.gradient.webkey import is_placeholder

        if v is not None and is_placeholder(v):
            raise ValueError(
                f"{v!r} is a placeholder, not a key; remove the line: deploy reads the key "
                "from the deployed extension's bundle (set it only to override that)"
            )
        return v


def _endpoint(v: str) -> str:
    """An address of the network: https, or plain http only to this machine or a private
    address (a local sandbox). The account's password and tokens travel on these."""
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{v!r} is not an http(s) address")
    if parts.scheme == "https":
        return v
    host = parts.hostname
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        local = host == "localhost"
    else:
        local = ip.is_loopback or ip.is_private or ip.is_link_local
    if not local:
        raise ValueError(
            f"plain http to {host} is refused: the account's password and tokens would cross "
            "the network unencrypted; use https (http only reaches a sandbox on this machine "
            "or a private address)"
        )
    return v


Port = Annotated[int, Field(ge=1, le=65535)]


def _not_root(v: str | None) -> str | None:
    if v == "root":
        raise ValueError(
            "root is refused as the SSH user: GradientLab runs each node as an unprivileged "
            "user; give that user (with GradientLab's sudo rule where it provisions)"
        )
    return v


class LocalSettings(Strict):
    kind: Literal["local"]
    # The interpreter local hosts run the node runner with; empty means the provider's own runtime.
    python: str | None = None
    base_address: str = "127.0.0.10"
    ssh_port: Port = 2222


class SshSettings(Strict):
    """Hosts the operator already has (home servers, a Raspberry Pi, a VPS), listed in `hosts`."""

    kind: Literal["ssh"]


def _cidr(v: str) -> str:
    try:
        net = ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise ValueError(f"{v!r} is not an address range like 203.0.113.0/24") from None
    if net.prefixlen == 0:
        raise ValueError("SSH open to the whole internet (/0) is refused; give your own range")
    return str(net)


class CloudSettings(Strict):
    credentials_block: str  # the Prefect block holding this cloud's credentials
    operator_cidr: str  # the only range SSH is allowed from
    ssh_user: str = "gradientlab"
    endpoint: str | None = None  # a stand-in API (tests); the cloud's own when empty

    @field_validator("operator_cidr")
    @classmethod
    def _operator_cidr(cls, v: str) -> str:
        return _cidr(v)

    @field_validator("ssh_user")
    @classmethod
    def _ssh_user(cls, v: str) -> str | None:
        return _not_root(v)


class OciSettings(CloudSettings):
    kind: Literal["oci"]
    compartment_id: str
    region: str = "us-ashburn-1"
    shape: str = "VM.Standard.E2.1.Micro"  # Always Free; or VM.Standard.A1.Flex
    ocpus: float | None = None  # A1.Flex only
    memory_gbs: float | None = None  # A1.Flex only
    vcn_cidr: str = "10.42.0.0/16"
    subnet_cidr: str = "10.42.1.0/24"
    # OCI offers no Debian image: deploy installs Playwright's Chromium there (Ubuntu's is a snap)
    image_os: str = "Canonical Ubuntu"
    image_os_version: str = "24.04"


class GcpSettings(CloudSettings):
    kind: Literal["gcp"]
    project: str
    zone: str = "us-central1-a"  # e2-micro is free in us-west1, us-central1 and us-east1
    machine_type: str = "e2-micro"
    # Debian: its chromium is a real package (Ubuntu's is a snap the node cannot use)
    image_project: str = "debian-cloud"
    image_family: str = "debian-12"
    network: str = "default"


class AzureImageSettings(Strict):
    # Debian 12: its chromium is a real package (Ubuntu's is a snap the node cannot use)
    publisher: str = "Debian"
    offer: str = "debian-12"
    sku: str = "12-gen2"
    version: str = "latest"


class AzureSettings(CloudSettings):
    kind: Literal["azure"]
    subscription_id: str
    location: str = "eastus"
    resource_group: str = "gradientlab"  # one per fleet
    vm_size: str = "Standard_B1s"
    image: AzureImageSettings = AzureImageSettings()


ProviderSettings = Annotated[
    LocalSettings | SshSettings | OciSettings | GcpSettings | AzureSettings,
    Field(discriminator="kind"),
]


class HostSettings(Strict):
    name: str
    provider: str
    address: str | None = None
    port: Port | None = None
    user: str | None = None
    key: SecretRef | None = None  # the operator's private key for ssh-inventory hosts
    host_key: str | None = None  # pinned "<type> <base64>"
    region: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not HOST_NAME.match(v):
            raise ValueError("host names are lowercase letters, digits and dashes, up to 31 long")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        return _not_root(v)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ipaddress.ip_address(v)
        except ValueError:
            if not re.match(r"^[A-Za-z0-9.-]+$", v):
                raise ValueError("not an IP address or host name") from None
        return v


class RunnerSettings(Strict):
    # how often every runner reads its popup, and checks its browser: zero would be a busy loop
    # on every host
    status_interval_seconds: float = Field(default=60, ge=5)
    browser_check_seconds: float = Field(default=2, ge=0.5)
    # None: deploy reads each host's OS and picks Debian's chromium or Playwright's build
    chromium: str | None = None


class BudgetSettings(Strict):
    """How often each recovery rung may run on one host per hour (then the host is quarantined)."""

    restart_browser: int = Field(default=6, ge=0)  # 0: never take this rung
    login: int = Field(default=4, ge=0)
    restart_runner: int = Field(default=4, ge=0)
    deploy: int = Field(default=2, ge=0)
    reboot_host: int = Field(default=2, ge=0)
    reprovision: int = Field(default=1, ge=0)


class HealthSettings(Strict):
    interval_seconds: int = Field(default=300, ge=10)
    recovery_wait_seconds: float = Field(default=60, gt=0)
    # a rung that touches the host (reboot, re-provision) needs the fault seen on this many
    # consecutive sweeps, or for this long, first
    confirm_sweeps: int = Field(default=2, ge=1)
    confirm_seconds: float = Field(default=900, gt=0)
    budgets: BudgetSettings = BudgetSettings()
    backoff_seconds: float = Field(default=60, ge=0)  # doubles after each attempt of a rung
    max_reboot_share: float = Field(default=0.2, gt=0, le=1)  # of the fleet, per sweep
    reprovision: bool = False  # re-create a lost cloud VM as the last rung
    # the network is "degraded" when this share of the checked nodes is Disconnected at once
    network_down_share: float = Field(default=0.6, gt=0, le=1)
    network_down_min_nodes: int = Field(default=2, ge=1)
    disk_free_min_mib: int = Field(default=256, ge=0)
    memory_available_min_mib: int = Field(default=64, ge=0)
    crash_loop_starts: int = Field(default=3, ge=2)  # runner starts within crash_loop_seconds
    crash_loop_seconds: float = Field(default=600, gt=0)
    probe_timeout_seconds: float = Field(default=20, gt=0)
    # a browser whose popup the runner has not read for this long (on the host's clock) is hung
    popup_stale_seconds: float = Field(default=300, gt=0)
    # a sweep of more hosts than this is split into shards of at most this many, each a flow
    # run of the `health-shard` deployment that any worker in the pool may pick up
    shard_hosts: int = Field(default=2500, ge=1)
    # the control plane's own faults: when at least this share (and this many) of the checked
    # hosts fail at TCP, banner or login in one sweep, or the connection keeper fails, it is one
    # fleet-wide incident ("cannot reach the fleet from <worker>"): no host is touched for it
    breaker_share: float = Field(default=0.5, gt=0, le=1)
    breaker_min_hosts: int = Field(default=2, ge=1)
    # host-touching actions (reboot, re-provision) across the whole fleet per rolling hour;
    # unset: the per-sweep brake's number (max_reboot_share of the fleet, at least one)
    host_actions_per_hour: int | None = Field(default=None, ge=1)
    # login attempts across the whole fleet per rolling hour (a changed password must not lock
    # the account with a thousand runners retrying)
    logins_per_hour: int = Field(default=10, ge=1)
    # a sweep checks hosts for at most this long; hosts not checked by then are "not checked"
    sweep_deadline_seconds: float = Field(default=240, gt=0)


class ScheduleSettings(Strict):
    # how often each flow runs; zero or negative would schedule runs back to back
    health_seconds: int = Field(default=300, ge=10)
    rewards_seconds: int = Field(default=3600, ge=10)
    poc_taps_seconds: int = Field(default=3600, ge=10)
    # asks the Web Store which extension version is current
    check_updates_seconds: int = Field(default=86400, ge=10)
    # the daily report: artifacts, and a notification if configured
    report_seconds: int = Field(default=86400, ge=10)
    # rolls up, then prunes raw samples past retention
    prune_history_seconds: int = Field(default=86400, ge=10)


class RetentionSettings(Strict):
    """How long raw health samples are kept; their daily rollups are kept for ever."""

    raw_samples_days: int = Field(default=90, ge=1)


class Fleet(Strict):
    name: str = "gradientlab"  # tags every cloud resource GradientLab creates for this fleet
    account: AccountSettings
    network: NetworkSettings = NetworkSettings()
    providers: dict[str, ProviderSettings]
    hosts: list[HostSettings] = []
    runner: RunnerSettings = RunnerSettings()
    health: HealthSettings = HealthSettings()
    schedules: ScheduleSettings = ScheduleSettings()
    retention: RetentionSettings = RetentionSettings()
    source: str = "<memory>"

    @field_validator("name")
    @classmethod
    def _fleet_name(cls, v: str) -> str:
        if not HOST_NAME.match(v):
            raise ValueError("fleet names are lowercase letters, digits and dashes, up to 31 long")
        return v

    @model_validator(mode="after")
    def _references(self) -> Fleet:
        seen: set[str] = set()
        for i, host in enumerate(self.hosts):
            if host.name in seen:
                raise _AtPath(("hosts", i, "name"), f"host name {host.name!r} is used twice")
            seen.add(host.name)
            if host.provider not in self.providers:
                raise _AtPath(
                    ("hosts", i, "provider"),
                    f"unknown provider {host.provider!r}; declared: {sorted(self.providers)}",
                )
            kind = self.providers[host.provider].kind
            if kind == "ssh" and (host.address is None or host.user is None):
                raise _AtPath(("hosts", i), "ssh inventory hosts need `address` and `user`")
        return self

    def host(self, name: str) -> HostSettings:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"{self.source}: no host named {name!r}")


class _AtPath(ValueError):
    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the YAML node at `loc`, or of its nearest existing parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(
                (
                    (k, v)
                    for k, v in node.value
                    if isinstance(k, yaml.ScalarNode) and k.value == part
                ),
                None,
            )
            if pair is None:
                if _kind_of(node) == part:
                    continue  # pydantic names the union member by its `kind` tag
                # the field is missing: point at the mapping that should hold it
                return line
            key, node = pair
            # the key's own line: a block value starts on the line after it
            line = key.start_mark.line + 1
            if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
                line = node.start_mark.line + 1
            continue
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            continue  # pydantic adds union tags (e.g. the discriminator) that YAML does not have
        line = node.start_mark.line + 1
    return line


def _duplicate_keys(node: yaml.Node | None, source: str) -> list[str]:
    """YAML keeps the last of two equal keys silently; a fleet file must not."""
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                line = k.start_mark.line + 1
                if k.value in seen:
                    problems.append(
                        f"{source}:{line}: {k.value}: given twice (first at line {seen[k.value]})"
                    )
                else:
                    seen[k.value] = line
            problems.extend(_duplicate_keys(v, source))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems.extend(_duplicate_keys(item, source))
    return problems


def parse_fleet(text: str, source: str = "<memory>") -> Fleet:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise FleetFileError(f"{where}: not valid YAML: {exc}") from None
    duplicates = _duplicate_keys(root, source)
    if duplicates:
        raise FleetFileError("\n".join(duplicates))
    if not isinstance(data, dict):
        raise FleetFileError(f"{source}:1: the fleet file must be a mapping with `account`, ...")
    data["source"] = source
    try:
        return Fleet.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            ctx_error = err.get("ctx", {}).get("error")
            if isinstance(ctx_error, _AtPath):
                loc = loc + ctx_error.loc
                message = str(ctx_error)
            else:
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    loc = loc + ("kind",)
            field = _field_name(data, loc)
            problems.append(f"{source}:{_line_of(root, loc)}: {field}: {message}")
        raise FleetFileError("\n".join(problems)) from None


def _kind_of(node: yaml.MappingNode) -> str | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == "kind" and isinstance(v, yaml.ScalarNode):
            return str(v.value)
    return None


def _field_name(data: Any, loc: tuple[str | int, ...]) -> str:
    """`hosts[1].address`, leaving out pydantic's union tags."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            data = data[part] if isinstance(data, list) and part < len(data) else None
            continue
        if isinstance(data, dict) and part not in data and data.get("kind") == part:
            continue
        out += f".{part}" if out else str(part)
        data = data.get(part) if isinstance(data, dict) else None
    return out or "(top level)"


def load_fleet(path: str | os.PathLike[str]) -> Fleet:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FleetFileError(f"{p}: no such fleet file") from None
    return parse_fleet(text, str(p))


def resolve_secret(ref: SecretRef, read_block: Callable[[str], str] | None = None) -> str:
    """Read a secret from where the fleet file says it lives. Never logged.

    `read_block` loads a Prefect Secret block by name; the task layer supplies it so that this
    package stays free of Prefect."""
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise FleetFileError(f"secret env:{ref.env} is not set in this environment")
        return value
    assert ref.secret_block is not None
    if read_block is None:
        raise FleetFileError(
            f"secret secret_block:{ref.secret_block} needs Prefect; run this from a flow"
        )
    return read_block(ref.secret_block)
