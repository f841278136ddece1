"""From the fleet file to live objects: providers, SSH executors, node settings, API clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradientlab.config import (
    AzureSettings,
    Fleet,
    FleetFileError,
    GcpSettings,
    LocalSettings,
    OciSettings,
    SshSettings,
    resolve_secret,
)
from gradientlab.gradient.client import GradientClient, GradientEndpoints
from gradientlab.gradient.throttle import LearnedPace
from gradientlab.node.deploy import NodeSettings
from gradientlab.providers.base import HostRecord, Provider, ProviderError
from gradientlab.remote.executor import POOL, Executor, SshTarget, parse_host_key
from gradientlab.remote.keeper_client import KeeperExecutor
from gradientlab.remote.keys import load_operator_key
from gradientlab.remote.wire import usable_socket

BlockReader = Callable[[str], str] | None


CredentialsLoader = Callable[[str, str], Any]
"""(cloud kind, block name) -> that cloud SDK's credentials; the task layer reads Prefect blocks."""


def provider_for(fleet: Fleet, name: str, credentials: CredentialsLoader | None = None) -> Provider:
    spec = fleet.providers.get(name)
    if spec is None:
        raise FleetFileError(f"{fleet.source}: no provider named {name!r}")
    if isinstance(spec, LocalSettings):
        from gradientlab.providers.local import LocalProvider

        return LocalProvider(
            name=name, base_address=spec.base_address, ssh_port=spec.ssh_port, python=spec.python
        )
    if isinstance(spec, SshSettings):
        from gradientlab.providers.ssh import SshInventoryProvider

        return SshInventoryProvider(
            name, fleet.hosts, known_hosts=database_pins(), pkey=load_operator_key()
        )
    if credentials is None:
        raise ProviderError(
            f"provider {name!r} ({spec.kind}) needs its credentials block "
            f"{spec.credentials_block!r}; run it from a flow"
        )
    creds = credentials(spec.kind, spec.credentials_block)
    if isinstance(spec, OciSettings):
        from gradientlab.providers.oci import OciCloudProvider

        config, signer = creds
        return OciCloudProvider(name, spec, config=config, signer=signer, fleet_name=fleet.name)
    if isinstance(spec, GcpSettings):
        from gradientlab.providers.gcp import GcpCloudProvider

        return GcpCloudProvider(name, spec, creds, fleet_name=fleet.name)
    if isinstance(spec, AzureSettings):
        from gradientlab.providers.azure import AzureCloudProvider

        return AzureCloudProvider(name, spec, creds, fleet_name=fleet.name)
    raise ProviderError(f"provider {name!r}: unknown kind {spec.kind!r}")


def database_pins() -> Any:
    """The pinned host keys every worker reads (the database), with any pins this machine
    kept in its old known_hosts file moved in first."""
    import logging

    from gradientlab.store.pins import DbKnownHosts, migrate_file_pins

    pins = DbKnownHosts()
    moved = migrate_file_pins(pins.engine)
    for conflict in moved.conflicts:
        logging.getLogger(__name__).warning("host key pins: %s", conflict)
    return pins


def executor_for(record: HostRecord) -> Executor:
    """A kept-open, host-key-pinned SSH connection to the host: the connection keeper's when one
    answers on this machine (it outlives flow runs), else this process's pool.

    Raises HostKeyInvalid when no key is pinned or the pinned one is malformed."""
    parse_host_key(record.host_key, record.name)
    target = SshTarget(
        record.name, record.address, record.ssh_port, record.ssh_user, record.host_key
    )
    sock_path = usable_socket()
    if sock_path is not None:
        return KeeperExecutor(target, sock_path, lambda: POOL.get(target, load_operator_key()))
    return POOL.get(target, load_operator_key())


def node_settings(fleet: Fleet, read_block: BlockReader = None) -> NodeSettings:
    net = fleet.network
    return NodeSettings(
        email=fleet.account.email,
        password=resolve_secret(fleet.account.password, read_block),
        network=net,
        runner=fleet.runner,
        dashboard_url=net.dashboard_url,
        extension_source=net.extension_source,
        extension_id=net.extension_id,
    )


def gradient_client(
    fleet: Fleet,
    read_block: BlockReader = None,
    learned_pace: LearnedPace | None = None,
    bundle_key: str | None = None,
) -> GradientClient:
    """The API client: signs in with the fleet file's network.web_api_key when it sets one,
    else with `bundle_key`, the key deploy read from the deployed extension's bundle."""
    net = fleet.network
    key = net.web_api_key or bundle_key
    if not key:
        raise FleetFileError(
            f"{fleet.source}: no web API key to sign in to the API with: network.web_api_key "
            "is not set and no deploy has read the key from the extension's bundle yet; deploy "
            "a host first, or set network.web_api_key"
        )
    endpoints = GradientEndpoints(
        api_base=net.api_base,
        identity_base=net.identity_base,
        token_base=net.token_base,
        web_api_key=key,
    )
    return GradientClient(
        endpoints,
        fleet.account.email,
        resolve_secret(fleet.account.password, read_block),
        timeout=net.api_timeout_seconds,
        requests_per_second=net.requests_per_second,
        max_requests_per_second=net.max_requests_per_second,
        learned_pace=learned_pace,
    )
