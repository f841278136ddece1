"""Register GradientLab's block types with the Prefect server (once per server).

    python -m deployments.register_blocks

Then create blocks in the UI (Blocks → +) or in Python, for example:

    from deployments.blocks import AzureServicePrincipal
    AzureServicePrincipal(tenant_id=..., client_id=..., client_secret=...).save("azure-main")

and name them in the fleet file (`credentials_block: azure-main`)."""

from __future__ import annotations

from prefect.blocks.system import Secret
from prefect_gcp import GcpCredentials

from deployments.blocks import AzureServicePrincipal, FleetFile, OciCredentials


def main() -> None:
    for block in (OciCredentials, AzureServicePrincipal, GcpCredentials, Secret, FleetFile):
        block.register_type_and_schema()
        print(f"registered {block.get_block_type_slug()}")


if __name__ == "__main__":
    main()
