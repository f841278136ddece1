"""Azure credentials from prefect-azure's block on a real Prefect server: a service principal
or DefaultAzureCredential, the secret kept secret, and the blocks of GradientLab's old Azure
type either copied into the new type by `register_blocks` or refused with what to run."""

from __future__ import annotations

import uuid
from typing import cast

import pytest
from prefect.blocks.core import Block
from prefect_azure import AzureContainerInstanceCredentials
from pydantic import SecretStr

from deployments.blocks import LEGACY_AZURE_SLUG, load_cloud_credentials


class OldAzureServicePrincipal(Block):
    """The block type GradientLab defined before it used prefect-azure's, as servers hold it."""

    _block_type_name = "GradientLab Azure Service Principal"
    _block_type_slug = LEGACY_AZURE_SLUG

    tenant_id: str
    client_id: str
    client_secret: SecretStr


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_service_principal_block_gives_a_client_secret_credential(prefect_server: None) -> None:
    name = _name("azure-sp")
    AzureContainerInstanceCredentials(
        tenant_id="tenant-1", client_id="client-1", client_secret="s3cret-value"
    ).save(name)
    assert "s3cret-value" not in repr(AzureContainerInstanceCredentials.load(name))
    credential = load_cloud_credentials("azure", name)
    assert type(credential).__name__ == "ClientSecretCredential"
    assert (credential._tenant_id, credential._client_id) == ("tenant-1", "client-1")
    assert callable(credential.get_token)  # a TokenCredential, as the management SDKs take


def test_an_empty_block_uses_default_azure_credential(prefect_server: None) -> None:
    """On an Azure worker with a managed identity, or with AZURE_* in the worker's env file."""
    name = _name("azure-default")
    AzureContainerInstanceCredentials().save(name)
    assert type(load_cloud_credentials("azure", name)).__name__ == "DefaultAzureCredential"


def test_a_missing_block_names_the_type_to_create(prefect_server: None) -> None:
    with pytest.raises(ValueError, match="no 'Azure Container Instance Credentials' block named"):
        load_cloud_credentials("azure", _name("nowhere"))


def test_old_blocks_are_refused_with_the_fix_then_copied_by_register_blocks(
    prefect_server: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from deployments.register_blocks import main

    old, taken = _name("azure-old"), _name("azure-taken")
    OldAzureServicePrincipal(tenant_id="t-old", client_id="c-old", client_secret="old-pw").save(old)
    OldAzureServicePrincipal(tenant_id="t-x", client_id="c-x", client_secret="x-pw").save(taken)
    AzureContainerInstanceCredentials(tenant_id="t-new", client_id="c-new", client_secret="n").save(
        taken
    )
    with pytest.raises(ValueError) as refused:
        load_cloud_credentials("azure", old)
    assert f"{LEGACY_AZURE_SLUG!r} block" in str(refused.value)
    assert "'Azure Container Instance Credentials'" in str(refused.value)
    assert "python -m deployments.register_blocks" in str(refused.value)

    main()
    out = capsys.readouterr().out
    assert "registered azure-container-instance-credentials" in out
    assert (
        f"copied Azure block {old!r}" in out
        and f"prefect block delete {LEGACY_AZURE_SLUG}/{old}" in out
    )
    assert f"kept 'Azure Container Instance Credentials' block {taken!r}" in out
    assert "old-pw" not in out and "x-pw" not in out
    credential = load_cloud_credentials("azure", old)
    assert (credential._tenant_id, credential._client_id) == ("t-old", "c-old")
    copied = cast(AzureContainerInstanceCredentials, AzureContainerInstanceCredentials.load(old))
    assert copied.client_secret is not None and copied.client_secret.get_secret_value() == "old-pw"
    # a name already taken in the new type was not overwritten
    assert load_cloud_credentials("azure", taken)._client_id == "c-new"

    main()  # again: nothing new to copy, nothing overwritten
    again = capsys.readouterr().out
    assert (
        "copied Azure block" not in again
        and f"kept 'Azure Container Instance Credentials' block {old!r}" in again
    )
