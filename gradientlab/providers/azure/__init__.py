"""Azure: `sdk` (clients, retry policy, errors), `network` (the fleet's resource group, NSG and
VNet), `host` (one host's IP, NIC and VM), `pricing` (free-offer rules) and `provider` (the
`Provider` itself)."""

from gradientlab.providers.azure.provider import AzureCloudProvider

__all__ = ["AzureCloudProvider"]
