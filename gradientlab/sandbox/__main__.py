"""``python -m gradientlab.sandbox [--port 8765] [--stun-port 3478] [--config sandbox.yaml]
[--speed 60]``

Runs the sandbox network on 127.0.0.1 until SIGTERM or Ctrl-C; prints the base URL first.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from .network import SandboxConfig
from .server import SandboxServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gradientlab.sandbox", description="Run the local sandbox Gradient network."
    )
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0 = any free)")
    parser.add_argument(
        "--stun-port", type=int, default=3478, help="STUN port on 127.0.0.1/127.0.0.2 (0 = any)"
    )
    parser.add_argument("--config", help="YAML file with SandboxConfig fields")
    parser.add_argument("--speed", type=float, help="override the config's speed factor")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = SandboxConfig.from_yaml(args.config) if args.config else SandboxConfig()
    if args.speed is not None:
        config = config.model_copy(update={"speed": args.speed})
        SandboxConfig.model_validate(config.model_dump())

    server = SandboxServer(config, port=args.port, stun_port=args.stun_port)
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    url = server.start()
    print(url, flush=True)
    info = server.describe()
    print(
        f"dashboard {info['dashboard']}  extension id {info['extensionId']}  "
        f"api key {info['apiKey']}  stun {info['stun']}",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not done.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
