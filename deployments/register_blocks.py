"""Register GradientLab's block types with the Prefect server (once per server, and after an
upgrade), and copy blocks of a type GradientLab no longer reads into the type it reads now.

    python -m deployments.register_blocks

Then create blocks in the UI (Blocks → +) or in Python, for example:

    from prefect_azure import AzureContainerInstanceCredentials
    AzureContainerInstanceCredentials(
        tenant_id=..., client_id=..., client_secret=...
    ).save("azure-main")

and name them in the fleet file (`credentials_block: azure-main`)."""

from __future__ import annotations

from prefect.blocks.system import Secret
from prefect_gcp import GcpCredentials

from deployments.blocks import AzureCredentials, FleetFile, OciCredentials, migrate_azure_blocks


def main() -> None:
    for block in (OciCredentials, AzureCredentials, GcpCredentials, Secret, FleetFile):
        block.register_type_and_schema()
        print(f"registered {block.get_block_type_slug()}")
    for line in migrate_azure_blocks():
        print(line)


if __name__ == "__main__":
    main()
