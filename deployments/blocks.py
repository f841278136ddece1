"""Credentials as Prefect blocks: secrets live in Prefect, never in files or on command lines.

Google Cloud uses prefect-gcp's own `GcpCredentials`; OCI and Azure get blocks here with
`SecretStr` fields. `python -m deployments.register_blocks` registers their types."""

from __future__ import annotations

from typing import Any, cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class OciCredentials(Block):
    """Oracle Cloud API key (config-file style) or instance-principal auth."""

    _block_type_name = "GradientLab OCI Credentials"
    _block_type_slug = "gradientlab-oci-credentials"

    instance_principal: bool = Field(False, description="Use the VM's instance principal")
    config_file: str | None = Field(
        None, description="An OCI config file on the worker (~/.oci/config) instead of fields"
    )
    profile: str = Field("DEFAULT", description="The config file's profile")
    user: str | None = Field(None, description="User OCID")
    tenancy: str | None = Field(None, description="Tenancy OCID")
    fingerprint: str | None = Field(None, description="API key fingerprint")
    region: str | None = Field(None, description="Home region, e.g. us-ashburn-1")
    private_key: SecretStr | None = Field(None, description="API signing key (PEM)")

    def sdk_credentials(self) -> tuple[dict[str, Any] | None, Any]:
        """(config, signer) as the OCI SDK takes them."""
        from gradientlab.providers.oci import credentials_from

        if self.instance_principal or self.config_file:
            return credentials_from(self.config_file, self.profile, self.instance_principal)
        missing = [
            f
            for f in ("user", "tenancy", "fingerprint", "region", "private_key")
            if getattr(self, f) is None
        ]
        if missing:
            raise ValueError(f"OCI credentials block is missing {', '.join(missing)}")
        assert self.private_key is not None
        config = {
            "user": self.user,
            "tenancy": self.tenancy,
            "fingerprint": self.fingerprint,
            "region": self.region,
            "key_content": self.private_key.get_secret_value(),
        }
        return config, None


class AzureServicePrincipal(Block):
    """An Azure app registration (service principal) with a client secret."""

    _block_type_name = "GradientLab Azure Service Principal"
    _block_type_slug = "gradientlab-azure-service-principal"

    tenant_id: str
    client_id: str
    client_secret: SecretStr

    def sdk_credentials(self) -> Any:
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(
            self.tenant_id, self.client_id, self.client_secret.get_secret_value()
        )


class FleetFile(Block):
    """The fleet file, kept in Prefect so that every worker reads the same one.

    It holds no secret (passwords are `{env: ...}` or `{secret_block: ...}` references), so it
    is plain text. Deployments name it as `fleet_path: block:NAME`."""

    _block_type_name = "GradientLab Fleet File"
    _block_type_slug = "gradientlab-fleet-file"

    text: str = Field(description="The fleet file's YAML, as `gradientlab check` accepts it")
    source: str = Field("", description="Where it was read from when it was saved")


def load_cloud_credentials(kind: str, block_name: str) -> Any:
    """What `gradientlab.inventory.provider_for` needs for a cloud, from its block."""
    # Block.load is sync in a sync context; the casts tell the type checker so
    if kind == "oci":
        return cast(OciCredentials, OciCredentials.load(block_name)).sdk_credentials()
    if kind == "azure":
        block = cast(AzureServicePrincipal, AzureServicePrincipal.load(block_name))
        return block.sdk_credentials()
    if kind == "gcp":
        from prefect_gcp import GcpCredentials

        return GcpCredentials.load(block_name).get_credentials_from_service_account()
    raise ValueError(f"no credentials block type for {kind!r}")
