"""The Gradient client's whole-request deadline, against a real HTTP server on loopback that
trickles its answer."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest


def test_a_trickling_answer_ends_at_the_whole_requests_deadline() -> None:
    """Each byte arrives within the per-phase timeout, the whole answer never does: the
    client gives up at its total deadline instead of waiting for the last byte."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from gradientlab.gradient.client import request_within

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            for _ in range(200):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.01)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client() as http:
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            with pytest.raises(httpx.ReadTimeout, match="no complete answer within 0.5 s"):
                request_within(http, "GET", url, 0.5)
            whole = request_within(http, "GET", url, 60)
            assert whole.content == b" " * 200  # a patient deadline reads it all
    finally:
        server.shutdown()
