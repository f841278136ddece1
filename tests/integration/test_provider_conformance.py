"""Every provider passes the same checks: `local` and `ssh` against real sshd hosts, the three
clouds through their real SDKs against the stand-ins (the second half of this file).

`local` creates its hosts; `ssh` adopts hosts the operator already has (here: sshd hosts made on
loopback beforehand, described in an inventory fleet file with their keys pinned by `trust`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.auth.credentials import AnonymousCredentials

from gradientlab.config import (
    AzureSettings,
    Fleet,
    GcpSettings,
    HostSettings,
    OciSettings,
    parse_fleet,
)
from gradientlab.inventory import executor_for, provider_for
from gradientlab.providers.azure import AzureCloudProvider
from gradientlab.providers.base import (
    FLEET_TAG,
    HOST_TAG,
    CapacityError,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    QuotaError,
)
from gradientlab.providers.bootstrap import HostKeyPair
from gradientlab.providers.gcp import GcpCloudProvider
from gradientlab.providers.local import LocalProvider
from gradientlab.providers.oci import OciCloudProvider
from gradientlab.providers.ssh import KnownHosts, trust
from gradientlab.remote.executor import POOL, fingerprint
from gradientlab.remote.keys import operator_public_key
from tests.standins.azure_api import AzureStandIn, FakeCredential
from tests.standins.gcp_api import ComputeStandIn
from tests.standins.oci_api import STANDIN_CONFIG, OciStandIn, StandInSigner

ACCOUNT = "account: {email: a@b.c, password: {env: UNUSED}}\n"


@dataclass
class Case:
    fleet: Fleet
    provider: Provider
    host: str
    creates_machines: bool


def _prefix(base_address: str, last: int) -> str:
    return base_address.rsplit(".", 1)[0] + f".{last}"


@pytest.fixture(scope="module")
def existing_host(base_address: str, database_url: str) -> Iterator[Any]:
    """A machine the operator already has: an sshd on loopback GradientLab did not adopt yet.
    Its pins live in the session's database (`database_url`), as every worker reads them."""
    maker = LocalProvider(name="preexisting", base_address=_prefix(base_address, 230))
    spec = parse_fleet(
        ACCOUNT + "providers: {preexisting: {kind: local}}\n"
        "hosts: [{name: homebox, provider: preexisting}]\n"
    ).hosts[0]
    record = maker.create(spec, operator_public_key())
    yield record
    maker.terminate("homebox")


def inventory_fleet(record: Any, tmp: Path) -> tuple[Fleet, Path]:
    text = (
        ACCOUNT
        + "providers: {home: {kind: ssh}}\n"
        + "hosts:\n"
        + f"  - {{name: homebox, provider: home, address: {record.address},"
        + f" port: {record.ssh_port}, user: {record.ssh_user}}}\n"
    )
    path = tmp / "inventory.yaml"
    path.write_text(text)
    return parse_fleet(text, str(path)), path


@pytest.fixture(scope="module", params=["local", "ssh"])
def case(
    request: pytest.FixtureRequest, base_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Case]:
    if request.param == "local":
        fleet = parse_fleet(
            ACCOUNT + f"providers: {{local: {{kind: local, base_address: "
            f"{_prefix(base_address, 220)}}}}}\nhosts: [{{name: conform, provider: local}}]\n"
        )
        yield Case(fleet, provider_for(fleet, "local"), "conform", creates_machines=True)
        provider_for(fleet, "local").terminate("conform")
    else:
        record = request.getfixturevalue("existing_host")
        fleet, _ = inventory_fleet(record, tmp_path_factory.mktemp("inv"))
        # pinned once, explicitly, after comparing the fingerprint with the host's own
        trust(fleet.hosts[0], fingerprint(record.host_key))
        yield Case(fleet, provider_for(fleet, "home"), "homebox", creates_machines=False)
    POOL.close_all()


def test_conformance_real_host_create_pins_the_host_key_and_is_idempotent(case: Case) -> None:
    spec = case.fleet.host(case.host)
    first = case.provider.create(spec, operator_public_key())
    second = case.provider.create(spec, operator_public_key())
    assert first.host_key.startswith("ssh-ed25519 ")
    assert (second.address, second.ssh_port, second.host_key) == (
        first.address,
        first.ssh_port,
        first.host_key,
    )
    assert first.state == "running"


def test_conformance_real_host_get_list_and_public_ip_agree(case: Case) -> None:
    record = case.provider.get(case.host)
    assert record is not None
    assert case.host in [r.name for r in case.provider.list()]
    assert case.provider.public_ip(case.host) == record.address
    assert case.provider.get("no-such-host") is None


def test_conformance_real_host_runs_commands_over_the_pinned_connection(case: Case) -> None:
    record = case.provider.get(case.host)
    assert record is not None
    result = executor_for(record).run("echo ok; id -un")
    assert result.ok
    assert result.stdout.split() == ["ok", record.ssh_user]


def test_conformance_real_host_reboot_keeps_the_key_or_says_what_is_needed(case: Case) -> None:
    before = case.provider.get(case.host)
    assert before is not None
    try:
        after = case.provider.reboot(case.host)
    except ProviderError as exc:
        # an inventory host's user may not reboot it: the error says how to allow it
        assert not case.creates_machines
        assert "sudo" in str(exc)
        return
    assert after.host_key == before.host_key
    POOL.close_all()
    assert executor_for(after).run("true").ok


def test_conformance_real_host_terminate_removes_only_what_gradientlab_created(case: Case) -> None:
    if not case.creates_machines:
        with pytest.raises(ProviderError, match="does not delete hosts you already have"):
            case.provider.terminate(case.host)
        assert case.provider.get(case.host) is not None
        return
    case.provider.terminate(case.host)
    assert case.provider.get(case.host) is None
    assert case.host not in [r.name for r in case.provider.list()]
    case.provider.terminate(case.host)  # terminating twice is not an error


def test_ssh_inventory_refuses_a_host_without_a_pinned_key(
    existing_host: Any, tmp_path: Path
) -> None:
    fleet, _ = inventory_fleet(existing_host, tmp_path)
    provider = provider_for(fleet, "home")
    provider.known_hosts = KnownHosts(tmp_path / "empty_known_hosts")  # type: ignore[attr-defined]
    with pytest.raises(ProviderError, match="gradientlab hosts trust homebox"):
        provider.create(fleet.hosts[0], operator_public_key())
    with pytest.raises(ProviderError, match="cannot create machines you do not have"):
        provider.create(
            parse_fleet(
                ACCOUNT + "providers: {home: {kind: ssh}}\nhosts: [{name: other,"
                " provider: home, address: 127.0.0.1, user: x}]\n"
            ).hosts[0],
            operator_public_key(),
        )


def test_hosts_trust_refuses_a_wrong_fingerprint(existing_host: Any, tmp_path: Path) -> None:
    _, path = inventory_fleet(existing_host, tmp_path)
    wrong = "SHA256:" + "A" * 43
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradientlab.cli.main",
            "hosts",
            "trust",
            "homebox",
            "--fleet",
            str(path),
            "--fingerprint",
            wrong,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert fingerprint(existing_host.host_key) in proc.stdout  # it shows what the host offers
    assert "nothing recorded" in proc.stderr


# ---------------------------------------------------------------- all five providers, one suite
#
# `local` and `ssh` on real sshd hosts; `oci`, `gcp` and `azure` through the real SDKs against
# their stand-ins. Every test id names the provider.

CLOUDS = ["oci", "gcp", "azure"]
Settings = TypeVar("Settings", OciSettings, GcpSettings, AzureSettings)
OPERATOR_KEY = HostKeyPair.generate().public + " operator@laptop"
OCI_COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaaconformance"
GCP_PROJECT, GCP_ZONE = "conformance-project", "us-central1-a"
GCP_INSTANCES = f"/compute/v1/projects/{GCP_PROJECT}/zones/{GCP_ZONE}/instances"
AZURE_SUB, AZURE_RG = "00000000-aaaa-bbbb-cccc-000000000010", "gl-conformance"
# What each cloud answers when it refuses a create: (status, code, message) per failure.
REFUSALS: dict[str, dict[str, tuple[int, str, str]]] = {
    "oci": {
        "auth": (401, "NotAuthenticated", "The required information was not provided."),
        "throttled": (429, "TooManyRequests", "Too many requests for the tenancy"),
        "capacity": (500, "InternalError", "Out of host capacity."),
        "quota": (400, "LimitExceeded", "standard-e2-micro-count"),
    },
    "gcp": {
        "auth": (401, "authError", "Request had invalid authentication credentials."),
        "throttled": (429, "rateLimitExceeded", "Rate Limit Exceeded"),
        "capacity": (503, "ZONE_RESOURCE_POOL_EXHAUSTED", "The zone does not have enough"),
        "quota": (403, "quotaExceeded", "Quota 'CPUS' exceeded."),
    },
    "azure": {
        "auth": (401, "InvalidAuthenticationToken", "The access token is invalid."),
        "throttled": (429, "TooManyRequests", "The request is being throttled."),
        "capacity": (409, "AllocationFailed", "Allocation failed."),
        "quota": (409, "QuotaExceeded", "Operation results in exceeding quota limits."),
    },
}
EXPECTED: dict[str, type[ProviderError]] = {
    "auth": ProviderAuthError,
    "throttled": ProviderRateLimited,
    "capacity": CapacityError,
    "quota": QuotaError,
}


@dataclass
class Subject:
    """One provider under the suite, with what the suite needs to know of its world."""

    provider: Provider
    spec: HostSettings
    machines: Callable[[], int]  # how many machines the world holds for the host
    foreign_alive: Callable[[], bool]  # something GradientLab did not make (or may not delete)
    vanish: Callable[[], Provider]  # the host disappears behind the provider's back
    refuse: Callable[[str, dict[str, str]], None] | None = None  # the next create is refused
    crash: Callable[[], None] | None = None  # the next create fails after it has started
    later: Callable[[], None] = lambda: None  # the fault has passed


def _spec(name: str, provider: str) -> HostSettings:
    return HostSettings(name=name, provider=provider)


def _settings(model: type[Settings], kind: str, url: str, **fields: Any) -> Settings:
    """A cloud's settings in the fleet file, its endpoint the stand-in."""
    common = {"credentials_block": f"{kind}-conformance", "operator_cidr": "203.0.113.0/24"}
    return model.model_validate({"kind": kind, **common, "endpoint": url, **fields})


def _oci() -> Iterator[Subject]:
    api = OciStandIn(OCI_COMPARTMENT).start()
    settings = _settings(OciSettings, "oci", api.url, compartment_id=OCI_COMPARTMENT)
    provider = OciCloudProvider(
        "oci",
        settings,
        config=dict(STANDIN_CONFIG),
        signer=StandInSigner(),
        fleet_name="conformance",
        sleep=lambda _: None,
        poll_seconds=0.01,
        capacity_passes=1,
    )
    foreign = api.add_instance("gradientlab-conformance-conform", {FLEET_TAG: "another"})

    def alive(host: str) -> list[dict[str, Any]]:
        return [
            i
            for i in api.instances.values()
            if i["freeformTags"].get(HOST_TAG) == host
            and i["freeformTags"].get(FLEET_TAG) == "conformance"
            and i["lifecycleState"] not in ("TERMINATING", "TERMINATED")
        ]

    def vanish() -> Provider:
        for instance in alive("conform"):
            del api.instances[instance["id"]]
        return provider

    def refuse(kind: str, headers: dict[str, str]) -> None:
        status, code, message = REFUSALS["oci"][kind]
        api.fail("POST", "/instances", status, code, message, headers=headers, times=None)

    def crash() -> None:  # the launch goes through; reading the new instance fails once
        api.fail("GET", r"/instances/[^/]+", 500, "InternalServerError", "try later")

    yield Subject(
        provider,
        _spec("conform", "oci"),
        lambda: len(alive("conform")),
        lambda: api.instances[foreign["id"]]["lifecycleState"] == "RUNNING",
        vanish,
        refuse,
        crash,
        api.faults.clear,
    )
    api.stop()


def _gcp() -> Iterator[Subject]:
    standin = ComputeStandIn().start()
    settings = _settings(GcpSettings, "gcp", standin.url, project=GCP_PROJECT, zone=GCP_ZONE)
    provider = GcpCloudProvider(
        "gcp", settings, AnonymousCredentials(), fleet_name="conformance", sleep=lambda _: None
    )
    standin.put_instance(
        GCP_PROJECT, GCP_ZONE, {"name": "someone-elses-vm", "labels": {FLEET_TAG: "another"}}
    )
    key = (GCP_PROJECT, GCP_ZONE, "gradientlab-conformance-conform")

    def vanish() -> Provider:
        standin.instances.pop(key, None)
        return provider

    def refuse(kind: str, headers: dict[str, str]) -> None:
        status, code, message = REFUSALS["gcp"][kind]
        if kind == "capacity":  # Google says it in the insert's operation
            standin.fail_next_insert(code, message, http_status=status)
        else:
            standin.fail("POST", f"^{GCP_INSTANCES}$", status, code, message, headers=headers)

    def crash() -> None:  # the insert's operation fails and leaves a half-made instance
        standin.fail_next_insert("INTERNAL_ERROR", "internal error", leave_instance=True)

    def later() -> None:
        standin.faults.clear()
        # Compute Engine answers a known request id with its old operation; the driver takes
        # a failed one older than its STALE_OPERATION (2 minutes) for a past run's
        standin.age_operations(timedelta(minutes=5))

    yield Subject(
        provider,
        _spec("conform", "gcp"),
        lambda: int(key in standin.instances),
        lambda: (GCP_PROJECT, GCP_ZONE, "someone-elses-vm") in standin.instances,
        vanish,
        refuse,
        crash,
        later,
    )
    standin.stop()


def _azure() -> Iterator[Subject]:
    arm = AzureStandIn(AZURE_SUB).start()
    settings = _settings(
        AzureSettings, "azure", arm.url, subscription_id=AZURE_SUB, resource_group=AZURE_RG
    )
    provider = AzureCloudProvider(
        "azure",
        settings,
        FakeCredential(),
        fleet_name="conformance",
        sleep=lambda _: None,
        polling_interval=0,
    )
    vm_kind = "Microsoft.Compute/virtualMachines"
    ours = arm.resource_id(AZURE_RG, vm_kind, "gradientlab-conformance-conform")
    foreign = arm.resource_id(AZURE_RG, vm_kind, "someone-elses-vm")
    arm.seed(arm.rg_id(AZURE_RG), {"name": AZURE_RG, "location": "eastus", "tags": {}})
    arm.seed(
        foreign,
        {"name": "someone-elses-vm", "location": "eastus", "tags": {}, "properties": {}},
    )

    def vanish() -> Provider:
        arm.forget(ours)
        return provider

    def refuse(kind: str, headers: dict[str, str]) -> None:
        status, code, message = REFUSALS["azure"][kind]
        arm.fail("PUT", "/virtualmachines/", status, code, message, headers=headers)

    def crash() -> None:  # ARM accepts the VM, then its provisioning fails
        arm.fail("PUT", "/virtualmachines/", 200, "InternalExecutionError", in_operation=True)

    yield Subject(
        provider,
        _spec("conform", "azure"),
        lambda: int(arm.has(ours)),
        lambda: arm.has(foreign),
        vanish,
        refuse,
        crash,
        arm.faults.clear,
    )
    arm.stop()


@pytest.fixture(params=["local", "ssh", *CLOUDS])
def subject(request: pytest.FixtureRequest, base_address: str, tmp_path: Path) -> Iterator[Subject]:
    kind = request.param
    if kind == "local":
        address = _prefix(base_address, 240)
        provider = LocalProvider(name="local", base_address=address)
        other = request.getfixturevalue("existing_host")  # another provider's host

        def vanish() -> Provider:  # another process removed it: this object still remembers
            LocalProvider(name="local", base_address=address).terminate("conform5")
            return provider

        yield Subject(
            provider,
            _spec("conform5", "local"),
            lambda: sum(r.name == "conform5" for r in provider.list()),
            lambda: executor_for(other).run("true").ok,
            vanish,
        )
        provider.terminate("conform5")
    elif kind == "ssh":
        record = request.getfixturevalue("existing_host")
        fleet, _ = inventory_fleet(record, tmp_path)
        trust(fleet.hosts[0], fingerprint(record.host_key))
        inventory = provider_for(fleet, "home")
        empty = parse_fleet(ACCOUNT + "providers: {home: {kind: ssh}}\nhosts: []\n")
        yield Subject(
            inventory,
            fleet.hosts[0],
            lambda: 1,  # the machine is the operator's: there is exactly the one
            lambda: executor_for(record).run("true").ok,
            lambda: provider_for(empty, "home"),  # the host left the inventory
        )
    else:
        yield from {"oci": _oci, "gcp": _gcp, "azure": _azure}[kind]()
    POOL.close_all()


def test_conformance_create_twice_gives_one_host(subject: Subject) -> None:
    first = subject.provider.create(subject.spec, operator_public_key())
    second = subject.provider.create(subject.spec, operator_public_key())
    assert (second.name, second.address, second.host_key, second.provider_ref) == (
        first.name,
        first.address,
        first.host_key,
        first.provider_ref,
    )
    assert first.host_key.startswith("ssh-ed25519 ") and first.state == "running"
    assert [r.name for r in subject.provider.list()].count(subject.spec.name) == 1
    assert subject.machines() == 1


def test_conformance_terminate_removes_only_what_gradientlab_made(subject: Subject) -> None:
    subject.provider.create(subject.spec, operator_public_key())
    name = subject.spec.name
    if subject.provider.kind == "ssh":  # the operator's own machine: never GradientLab's
        with pytest.raises(ProviderError, match="does not delete hosts you already have"):
            subject.provider.terminate(name)
        assert subject.provider.get(name) is not None
    else:
        subject.provider.terminate(name)
        assert subject.provider.get(name) is None
        assert name not in [r.name for r in subject.provider.list()]
        assert subject.machines() == 0
        subject.provider.terminate(name)  # terminating twice is not an error
    assert subject.foreign_alive()


def test_conformance_a_vanished_host_is_none_and_not_found(subject: Subject) -> None:
    subject.provider.create(subject.spec, operator_public_key())
    after = subject.vanish()
    name = subject.spec.name
    assert after.get(name) is None
    assert name not in [r.name for r in after.list()]
    with pytest.raises(ProviderNotFound) as caught:
        after.reboot(name)
    assert name in str(caught.value) and not caught.value.retryable


@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("subject", CLOUDS, indirect=True)
def test_conformance_a_refused_create_maps_to_its_error_then_a_rerun_finishes(
    subject: Subject, kind: str
) -> None:
    assert subject.refuse is not None
    subject.refuse(kind, {"Retry-After": "7"} if kind == "throttled" else {})
    with pytest.raises(ProviderError) as caught:
        subject.provider.create(subject.spec, OPERATOR_KEY)
    error = caught.value
    assert type(error) is EXPECTED[kind], f"{type(error).__name__}: {error}"
    assert error.retryable is (kind in ("throttled", "capacity"))
    if isinstance(error, ProviderRateLimited):
        assert error.retry_after == 7.0
    assert subject.machines() == 0  # nothing half-made is left behind
    subject.later()
    record = subject.provider.create(subject.spec, OPERATOR_KEY)  # the cloud agrees again
    assert record.state == "running" and subject.machines() == 1


@pytest.mark.parametrize("subject", CLOUDS, indirect=True)
def test_conformance_a_rerun_after_a_failed_create_finishes_the_job(subject: Subject) -> None:
    assert subject.crash is not None
    subject.crash()
    with pytest.raises(ProviderError):
        subject.provider.create(subject.spec, OPERATOR_KEY)
    subject.later()
    record = subject.provider.create(subject.spec, OPERATOR_KEY)
    assert record.state == "running" and record.host_key.startswith("ssh-ed25519 ")
    assert subject.machines() == 1
    assert [r.name for r in subject.provider.list()] == [subject.spec.name]
