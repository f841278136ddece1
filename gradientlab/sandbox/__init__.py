"""The local simulated Gradient network: API, Firebase stand-ins, dashboard login page,
extension download and a sandbox extension with the real one's observable surface.

Start it from Python::

    from gradientlab.sandbox import SandboxConfig, SandboxServer
    server = SandboxServer(SandboxConfig(speed=60))
    base_url = server.start()   # http://127.0.0.1:PORT
    ...
    server.stop()

or from a shell: ``python -m gradientlab.sandbox --port 8765 --config sandbox.yaml``.
"""

from .crx import build_crx, build_extension_zip, write_extension
from .extension_id import SANDBOX_EXTENSION_ID
from .network import Fault, SandboxAccount, SandboxConfig, SandboxNetwork
from .server import SandboxServer

__all__ = [
    "SANDBOX_EXTENSION_ID",
    "Fault",
    "SandboxAccount",
    "SandboxConfig",
    "SandboxNetwork",
    "SandboxServer",
    "build_crx",
    "build_extension_zip",
    "write_extension",
]
