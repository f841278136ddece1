"""Oracle Cloud: `sdk` (the SDK and its errors), `network` (the fleet's VCN and firewall),
`launch` (images, availability domains, retry tokens), `pricing` (Always Free rules) and
`provider` (the `Provider` itself)."""

from gradientlab.providers.base import DATA_CENTRE_WARNING as UNSUPPORTED_WARNING
from gradientlab.providers.oci.pricing import hourly_cost
from gradientlab.providers.oci.provider import OciCloudProvider
from gradientlab.providers.oci.sdk import credentials_from

__all__ = ["UNSUPPORTED_WARNING", "OciCloudProvider", "credentials_from", "hourly_cost"]
