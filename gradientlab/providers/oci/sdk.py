"""OCI's SDK, and nothing else: credentials, the three clients, paging, and OCI's answers read
into GradientLab's errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import oci
from oci._vendor.requests.exceptions import RequestException
from oci.circuit_breaker import NoCircuitBreakerStrategy
from oci.exceptions import ServiceError

from gradientlab.config import OciSettings
from gradientlab.providers.base import FLEET_TAG
from gradientlab.providers.errors import (
    Failure,
    ProviderAuthError,
    ProviderError,
    ProviderUnavailable,
    error_for,
)
from gradientlab.retry_after import retry_after_header

GONE = ("TERMINATING", "TERMINATED")


def credentials_from(
    config_file: str | None, profile: str = "DEFAULT", instance_principal: bool = False
) -> tuple[dict[str, Any] | None, object | None]:
    """`(config, signer)` for `OciCloudProvider`: an OCI config file profile, or, on an OCI
    instance in a dynamic group, the instance principal."""
    if instance_principal:
        try:
            signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
        except Exception as exc:  # the SDK raises a variety of HTTP and parsing errors here
            raise ProviderAuthError(
                "OCI instance principal sign-in failed; it works only on an OCI instance that a "
                f"dynamic group and a policy allow to manage instances: {exc}"
            ) from exc
        return None, signer
    location = config_file or oci.config.DEFAULT_LOCATION
    try:
        config = oci.config.from_file(location, profile)
        oci.config.validate_config(config)
    except oci.exceptions.ClientError as exc:
        raise ProviderAuthError(f"OCI config {location} [{profile}]: {exc}") from exc
    return config, None


class OciApi:
    """The compute, virtual network and identity clients of one provider, and calls through
    them that raise `ProviderError`s naming the provider, the step and what to do."""

    def __init__(
        self,
        name: str,
        settings: OciSettings,
        config: dict[str, Any] | None,
        signer: object | None,
    ) -> None:
        self.name = name
        self.settings = settings
        if config is None and signer is None:
            raise ProviderAuthError(
                f"{name}: no OCI credentials given; load them from the block "
                f"{settings.credentials_block!r} (see credentials_from)"
            )
        client_config = {**(config or {}), "region": settings.region}
        # Retries are ours (capacity across ADs, Prefect task retries); the SDK must not sleep.
        kwargs: dict[str, Any] = {
            "retry_strategy": oci.retry.NoneRetryStrategy(),
            "circuit_breaker_strategy": NoCircuitBreakerStrategy(),
        }
        if signer is not None:
            kwargs["signer"] = signer
        if settings.endpoint:
            kwargs["service_endpoint"] = settings.endpoint.rstrip("/")
        try:
            self.compute = oci.core.ComputeClient(client_config, **kwargs)
            self.network = oci.core.VirtualNetworkClient(client_config, **kwargs)
            self.identity = oci.identity.IdentityClient(client_config, **kwargs)
        except (oci.exceptions.ClientError, ValueError, OSError) as exc:
            raise ProviderAuthError(
                f"{name}: the OCI credentials from block {settings.credentials_block!r} are "
                f"unusable: {exc}"
            ) from exc
        self.tenancy_id: str = (
            client_config.get("tenancy")
            or getattr(signer, "tenancy_id", None)
            or settings.compartment_id
        )
        block = settings.credentials_block
        self.advice = {
            Failure.AUTH: f"Fix the credentials in block {block!r} (user, fingerprint, key, "
            "region).",
            Failure.RATE_LIMITED: "Try again later.",
            Failure.QUOTA: "Raise the service limit or compartment quota, or pick another shape.",
            Failure.NOT_FOUND: f"The resource is gone, or the policies of block {block!r} do "
            "not allow reading it.",
            Failure.UNAVAILABLE: "OCI failed on its side; retry later.",
        }

    @property
    def compartment(self) -> str:
        return self.settings.compartment_id

    def request(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ServiceError as exc:
            raise self.error(exc, doing) from exc
        except RequestException as exc:  # also the SDK's ConnectTimeout
            raise ProviderUnavailable(
                f"{self.name}: cannot reach OCI ({self.compute.base_client.endpoint}) while "
                f"{doing}: {exc}"
            ) from exc

    def call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.request(doing, fn, *args, **kwargs).data

    def list(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Every page of a list call (not `oci.pagination`: it retries with real sleeps)."""
        items: list[Any] = []
        while True:
            response = self.request(doing, fn, *args, **kwargs)
            items.extend(response.data)
            if not response.has_next_page:
                return items
            kwargs["page"] = response.next_page

    def error(self, exc: ServiceError, doing: str) -> ProviderError:
        status, code = exc.status, str(exc.code or "")
        text = f"{exc.message or ''}".strip()
        said = (
            f"{self.name}: OCI answered {status} {code} while {doing}: {text} "
            f"(opc-request-id {exc.request_id})"
        )
        return error_for(said, status, [code], text, self.advice, retry_after_header(exc.headers))

    def find_named(
        self, doing: str, fn: Callable[..., Any], name: str, fleet: str, **filters: Any
    ) -> Any | None:
        """The live resource of that display name that this fleet tagged, if any."""
        for item in self.list(doing, fn, self.compartment, display_name=name, **filters):
            if ours(item, fleet) and item.lifecycle_state not in GONE:
                return item
        return None


def ours(resource: Any, fleet: str) -> bool:
    return (getattr(resource, "freeform_tags", None) or {}).get(FLEET_TAG) == fleet
