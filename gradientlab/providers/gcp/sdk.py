"""Compute Engine's SDK, and nothing else: the clients, Google's errors read into GradientLab's,
and waiting on operations."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exc
from google.auth.credentials import Credentials
from google.cloud import compute_v1

from gradientlab.config import GcpSettings
from gradientlab.providers import errors
from gradientlab.providers.errors import Failure
from gradientlab.providers.gcp.pricing import FREE_REGIONS
from gradientlab.retry_after import retry_after_header

OPERATION_TIMEOUT_SECONDS = 900.0
_GCE_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")


def gce_name(*parts: str) -> str:
    """A valid Compute Engine name (RFC 1035, at most 63) from the parts; odd ones get a hash."""
    name = "-".join(parts)
    if _GCE_NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    stem = re.sub(r"[^-a-z0-9]", "-", name.lower())[: 63 - 9].strip("-")
    if not stem[:1].isalpha():
        stem = "gl-" + stem
    return f"{stem}-{digest}"


def short(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def codes_of(exc: gexc.GoogleAPICallError) -> set[str]:
    codes = {str(e.get("reason", "")) for e in exc.errors if isinstance(e, dict)}
    if exc.reason:
        codes.add(exc.reason)
    return {c for c in codes if c}


class ComputeApi:
    """The Compute Engine clients of one provider (one project, one zone)."""

    def __init__(
        self,
        name: str,
        settings: GcpSettings,
        credentials: Credentials,
        sleep: Callable[[float], None],
        poll_seconds: float,
    ) -> None:
        self.settings = settings
        self.project = settings.project
        self.zone = settings.zone
        self.who = f"gcp provider {name!r} (project {self.project}, zone {self.zone})"
        self.sleep = sleep
        self.poll_seconds = poll_seconds
        options = ClientOptions(api_endpoint=settings.endpoint) if settings.endpoint else None
        common: dict[str, Any] = {
            "credentials": credentials,
            "transport": "rest",
            "client_options": options,
        }
        self.instances = compute_v1.InstancesClient(**common)
        self.firewalls = compute_v1.FirewallsClient(**common)
        self.images = compute_v1.ImagesClient(**common)
        self.zone_operations = compute_v1.ZoneOperationsClient(**common)
        self.global_operations = compute_v1.GlobalOperationsClient(**common)
        block = settings.credentials_block
        self.advice = {
            Failure.CAPACITY: f"The zone has no {settings.machine_type} capacity now; rerun "
            f"later or set another zone in {', '.join(FREE_REGIONS)} for this provider.",
            Failure.QUOTA: "The project's quota does not allow it; raise the quota (IAM & "
            "Admin > Quotas) or remove a VM.",
            Failure.RATE_LIMITED: "Compute Engine throttled the request; rerun in a minute.",
            Failure.AUTH: f"Google refused the credentials from block {block!r}; give its "
            "service account the Compute Instance Admin (v1) and Compute Security Admin roles "
            f"on {self.project}.",
            Failure.UNAVAILABLE: "Compute Engine failed on its side; rerun later.",
        }

    @contextmanager
    def api(self, action: str) -> Iterator[None]:
        """Whatever Google raises inside becomes a `ProviderError` saying what and where."""
        try:
            yield
        except gexc.GoogleAPICallError as exc:
            headers = getattr(exc.response, "headers", None)
            raise self.error(
                action, exc.code, codes_of(exc), exc.message, retry_after_header(headers)
            ) from exc
        except (auth_exc.RefreshError, auth_exc.DefaultCredentialsError) as exc:
            raise errors.ProviderAuthError(
                f"{self.who}: {action}: the credentials from block "
                f"{self.settings.credentials_block!r} do not work ({exc}); "
                "save a valid service-account key in that GcpCredentials block"
            ) from exc
        except (requests.RequestException, auth_exc.TransportError) as exc:
            where = self.settings.endpoint or "compute.googleapis.com"
            raise errors.ProviderUnavailable(
                f"{self.who}: {action}: could not reach {where} ({exc}); check the network"
            ) from exc

    def error(
        self,
        action: str,
        status: int | None,
        codes: set[str],
        message: str,
        retry_after: float | None = None,
    ) -> errors.ProviderError:
        detail = f"{message} [{', '.join(sorted(codes))}]" if codes else message
        said = f"{self.who}: {action}: {detail}"
        return errors.error_for(said, status, codes, message, self.advice, retry_after)

    def operation_error(self, op: compute_v1.Operation, action: str) -> errors.ProviderError:
        codes = {e.code for e in op.error.errors if e.code}
        message = "; ".join(e.message for e in op.error.errors if e.message)
        return self.error(
            action, op.http_error_status_code or None, codes, message or op.http_error_message
        )

    def wait(self, op: compute_v1.Operation, action: str) -> compute_v1.Operation:
        """Wait for an operation to finish (long polls on the server, then a pause); no raise."""
        deadline = time.monotonic() + OPERATION_TIMEOUT_SECONDS
        while op.status != compute_v1.Operation.Status.DONE:
            if time.monotonic() > deadline:
                raise errors.ProviderUnavailable(
                    f"{self.who}: {action}: operation {op.name} is still not done after "
                    f"{OPERATION_TIMEOUT_SECONDS / 60:.0f} minutes; rerun to pick it up"
                )
            with self.api(action):
                if op.zone:
                    waited = self.zone_operations.wait(
                        project=self.project, zone=short(op.zone), operation=op.name
                    )
                else:
                    waited = self.global_operations.wait(project=self.project, operation=op.name)
            if waited.status != compute_v1.Operation.Status.DONE:
                self.sleep(self.poll_seconds)
            op = waited
        return op

    def run(self, op: compute_v1.Operation, action: str) -> compute_v1.Operation:
        """Wait for the operation and raise what it failed with."""
        op = self.wait(op, action)
        if op.error.errors:
            raise self.operation_error(op, action)
        return op
