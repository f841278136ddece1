"""The extension update check over HTTP: the sandbox answering as the Web Store, and a service
that does not answer."""

from __future__ import annotations

import pytest

from gradientlab.config import NetworkSettings
from gradientlab.sandbox import SandboxConfig, SandboxServer
from gradientlab.webstore import UpdateCheckFailed, published_version


def test_the_sandbox_answers_as_the_store_and_publishes_releases() -> None:
    with SandboxServer(SandboxConfig(), stun_port=0) as server:
        network = NetworkSettings(
            extension_source=server.crx_url(), extension_id=server.extension_id
        )
        assert published_version(network).version == "0.1.0"
        server.publish("0.2.0")
        assert published_version(network).version == "0.2.0"
        wrong = NetworkSettings(extension_source=server.crx_url(), extension_id="b" * 32)
        with pytest.raises(UpdateCheckFailed, match="HTTP 404"):
            published_version(wrong)


def test_a_service_that_does_not_answer_is_named() -> None:
    network = NetworkSettings(extension_source="http://127.0.0.1:9/service/update2/crx?x=1")
    with pytest.raises(UpdateCheckFailed, match="did not answer"):
        published_version(network, timeout=2)
