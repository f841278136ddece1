"""Credentials as Prefect blocks: secrets live in Prefect, never in files or on command lines.

Google Cloud uses prefect-gcp's own `GcpCredentials` and Azure prefect-azure's
`AzureContainerInstanceCredentials` (a service principal, or `DefaultAzureCredential` when its
fields are empty); OCI gets a block here with `SecretStr` fields.
`python -m deployments.register_blocks` registers their types."""

from __future__ import annotations

from typing import Any, cast

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect_azure import AzureContainerInstanceCredentials
from pydantic import Field, SecretStr

# prefect-azure's block for Azure Resource Manager: the one whose credential is a synchronous
# azure-identity `TokenCredential`, as the management SDKs take it
AzureCredentials = AzureContainerInstanceCredentials
# the type GradientLab's own Azure block had before; its documents are copied by register_blocks
LEGACY_AZURE_SLUG = "gradientlab-azure-service-principal"


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
        return azure_token_credential(load_azure_credentials(block_name))
    if kind == "gcp":
        from prefect_gcp import GcpCredentials

        return GcpCredentials.load(block_name).get_credentials_from_service_account()
    raise ValueError(f"no credentials block type for {kind!r}")


def azure_type_name() -> str:
    return str(AzureCredentials.get_block_type_name())


def load_azure_credentials(block_name: str) -> AzureContainerInstanceCredentials:
    """prefect-azure's block `block_name`, or a `ValueError` saying what to do: when only a
    block of GradientLab's old Azure type has that name, how to copy it into the new type."""
    try:
        return cast(AzureContainerInstanceCredentials, AzureCredentials.load(block_name))
    except ValueError:
        if legacy_azure_block(block_name) is not None:
            raise ValueError(
                f"Azure credentials block {block_name!r} is a {LEGACY_AZURE_SLUG!r} block, a "
                f"type GradientLab no longer reads: Azure credentials are prefect-azure's "
                f"{azure_type_name()!r} blocks now. Run `python -m deployments.register_blocks`,"
                f" which copies it into one named {block_name!r} (docs/clouds.md)"
            ) from None
        raise ValueError(
            f"no {azure_type_name()!r} block named {block_name!r} (the fleet file's "
            "credentials_block): create it as docs/clouds.md says (Azure, step 2)"
        ) from None


def azure_token_credential(block: AzureContainerInstanceCredentials) -> Any:
    """The azure-identity credential prefect-azure's own clients use: `ClientSecretCredential`
    from the service principal's three fields, `DefaultAzureCredential` (managed identity,
    environment, CLI) when none is set; `credential_kwargs` passed to either."""
    return block._create_credential()


def legacy_azure_block(block_name: str) -> dict[str, Any] | None:
    """The fields of the old-type Azure block `block_name` (its secret included), or None."""
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(
                block_name, LEGACY_AZURE_SLUG, include_secrets=True
            )
        except ObjectNotFound:
            return None
    return dict(document.data)


def migrate_azure_blocks() -> list[str]:
    """Copy every block of GradientLab's old Azure type into prefect-azure's type under the
    same name (a name already taken there is left alone); returns what it did, in words. The
    old documents stay until the operator deletes them: older workers may still read them."""
    with get_client(sync_client=True) as client:
        try:
            documents = client.read_block_documents_by_type(LEGACY_AZURE_SLUG, include_secrets=True)
        except PrefectHTTPStatusError as exc:  # that type was never registered here
            if exc.response.status_code == 404:
                return []
            raise
    said = []
    for document in documents:
        name = str(document.name)
        try:
            AzureCredentials.load(name)
        except ValueError:
            data = document.data
            AzureCredentials(
                tenant_id=data["tenant_id"],
                client_id=data["client_id"],
                client_secret=data["client_secret"],
            ).save(name)
            said.append(
                f"copied Azure block {name!r} ({LEGACY_AZURE_SLUG}) into {azure_type_name()!r};"
                f" once no worker runs an older GradientLab: "
                f"prefect block delete {LEGACY_AZURE_SLUG}/{name}"
            )
        else:
            said.append(
                f"kept {azure_type_name()!r} block {name!r}: it exists; the old "
                f"{LEGACY_AZURE_SLUG}/{name} was not copied over it"
            )
    return said
