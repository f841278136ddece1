"""Azure's management SDKs, and nothing else: the three clients (with our retry policy and the
loopback-only plain-HTTP switch for stand-ins), long-running operations, and ARM's answers read
into GradientLab's errors."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import RetryPolicy, SansIOHTTPPolicy
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource import ResourceManagementClient

from gradientlab.config import AzureSettings
from gradientlab.providers import errors
from gradientlab.providers.errors import Failure, classify
from gradientlab.retry_after import retry_after_header

T = TypeVar("T")
LRO_TIMEOUT_SECONDS = 900  # a create, delete or power operation; then the caller reruns


class _PlainHttpToLoopback(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Lets the bearer policy send its token over http://, installed only for loopback stand-ins."""

    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context.options["enforce_https"] = False


class _TransientRetry(RetryPolicy):  # type: ignore[type-arg]
    """The SDK's retries for 5xx and dropped connections, sleeping through our own `sleep`.

    A 429 is not retried here: it goes back to the caller as `ProviderRateLimited`, whose task
    retries after `retry_after` instead of holding a worker inside the SDK."""

    def __init__(self, pause: Callable[[float], None], **kwargs: Any) -> None:
        kwargs.setdefault("retry_total", 3)
        super().__init__(**kwargs)
        self._pause = pause

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        if response.http_response.status_code == 429:
            return False
        return bool(super().is_retry(settings, response))

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        delay = self.get_retry_after(response) if response is not None else None
        self._pause(delay if delay is not None else self.get_backoff_time(settings))


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error_codes(err: HttpResponseError) -> list[str]:
    codes: list[str] = []
    pending = [err.error] if err.error is not None else []
    while pending:
        item = pending.pop()
        code = getattr(item, "code", None)
        if code:
            codes.append(str(code))
        pending.extend(getattr(item, "details", None) or [])
    return codes


def error_message(err: HttpResponseError) -> str:
    if err.error is not None and err.error.message:
        return str(err.error.message)
    return str(err.message or err.reason or "no message")


def _status_codes_message(err: AzureError) -> tuple[int | None, list[str], str]:
    if isinstance(err, HttpResponseError):
        return err.status_code, error_codes(err), error_message(err)
    return None, [], str(err)


def is_not_found(err: AzureError) -> bool:
    if isinstance(err, ResourceNotFoundError):
        return True
    if not isinstance(err, HttpResponseError):
        return False
    status, codes, message = _status_codes_message(err)
    return classify(status, codes, message) is Failure.NOT_FOUND


def finish(poller: Any) -> Any:
    """Wait for a long-running operation, but not forever: a rerun picks it up again."""
    poller.wait(timeout=LRO_TIMEOUT_SECONDS)
    if not poller.done():
        raise errors.ProviderUnavailable(
            f"azure: an operation is still not done after {LRO_TIMEOUT_SECONDS // 60} minutes "
            f"(status {poller.status()}); rerun to pick it up"
        )
    return poller.result()


class ArmApi:
    """The resource, network and compute clients of one provider, and calls through them that
    raise `ProviderError`s naming the provider, the host, the step and what to try."""

    def __init__(
        self,
        name: str,
        settings: AzureSettings,
        credential: TokenCredential,
        sleep: Callable[[float], None],
        polling_interval: float,
    ) -> None:
        self.name = name
        self.settings = settings
        self.rg = settings.resource_group
        options: dict[str, Any] = {"polling_interval": polling_interval}
        if settings.endpoint:
            options["base_url"] = settings.endpoint.rstrip("/")
            if settings.endpoint.lower().startswith("http://"):
                if not _is_loopback(settings.endpoint):
                    raise errors.ProviderError(
                        f"azure provider {name}: endpoint {settings.endpoint} is plain HTTP and "
                        "would send the bearer token in clear; only a loopback stand-in may use "
                        "http://"
                    )
                options["per_call_policies"] = [_PlainHttpToLoopback()]

        def client(cls: Callable[..., T]) -> T:
            # each client gets its own retry policy: a policy instance belongs to one pipeline
            return cls(
                credential,
                settings.subscription_id,
                retry_policy=_TransientRetry(sleep),
                **options,
            )

        self.resources = client(ResourceManagementClient)
        self.network = client(NetworkManagementClient)
        self.compute = client(ComputeManagementClient)
        block = settings.credentials_block
        self.advice = {
            Failure.RATE_LIMITED: "Azure throttled the request; retry later.",
            Failure.AUTH: f"Fix the credentials in block {block!r}: the identity needs "
            f"Contributor on subscription {settings.subscription_id} or resource group "
            f"{self.rg}.",
            Failure.CAPACITY: f"Azure has no {settings.vm_size} capacity in "
            f"{settings.location} now; retry later or choose another location or vm_size.",
            Failure.QUOTA: "Raise the quota (portal: Subscriptions > Usage + quotas) or choose a "
            "smaller vm_size or another location.",
            Failure.UNAVAILABLE: "Azure failed on its side; retry later.",
        }

    def fail(self, err: AzureError, host: str | None, step: str) -> errors.ProviderError:
        """The ProviderError an operator can act on: which host, which step, what to try."""
        where = f"azure provider {self.name}" + (f", host {host}" if host else "")
        block = self.settings.credentials_block
        if isinstance(err, ClientAuthenticationError) and err.response is None:
            return errors.ProviderAuthError(
                f"{where}: {step}: no token from the credentials in block {block!r}: {err}. "
                "Check the tenant, client id and secret stored there."
            )
        if isinstance(err, ServiceRequestError):
            endpoint = self.settings.endpoint or "https://management.azure.com"
            return errors.ProviderUnavailable(f"{where}: {step}: cannot reach {endpoint}: {err}")
        if not isinstance(err, HttpResponseError):
            return errors.ProviderError(f"{where}: {step}: {err}")
        status, codes, message = _status_codes_message(err)
        said = f"{where}: {step}: {codes[0] if codes else status}: {message}"
        headers = getattr(err.response, "headers", None)
        return errors.error_for(
            said, status, codes, message, self.advice, retry_after_header(headers)
        )

    def call(self, host: str | None, step: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except AzureError as err:
            raise self.fail(err, host, step) from err

    def find(self, host: str | None, step: str, fn: Callable[[], T]) -> T | None:
        """A read that answers None when the resource (or its resource group) does not exist."""
        try:
            return fn()
        except AzureError as err:
            if is_not_found(err):
                return None
            raise self.fail(err, host, step) from err

    def delete(self, host: str, step: str, begin: Callable[[str, str], Any], name: str) -> None:
        """Delete and wait; a resource that is already gone counts as deleted."""
        try:
            finish(begin(self.rg, name))
        except AzureError as err:
            if not is_not_found(err):
                raise self.fail(err, host, step) from err
