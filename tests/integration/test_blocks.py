"""Credential blocks on a real Prefect server: registered, saved, loaded, secrets kept secret."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def test_block_types_register_and_round_trip(
    prefect_server: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from deployments.blocks import OciCredentials, load_cloud_credentials
    from deployments.register_blocks import main

    main()
    assert "registered gradientlab-oci-credentials" in capsys.readouterr().out

    # a real key made for this test: none is kept in the repository
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    OciCredentials(
        user="ocid1.user..u",
        tenancy="ocid1.tenancy..t",
        fingerprint="aa:bb",
        region="eu-frankfurt-1",
        private_key=pem,
    ).save("oci-roundtrip", overwrite=True)
    loaded = OciCredentials.load("oci-roundtrip")
    assert pem not in repr(loaded)  # a SecretStr shows as ********
    config, signer = load_cloud_credentials("oci", "oci-roundtrip")
    assert signer is None
    assert config["key_content"] == pem
    assert config["region"] == "eu-frankfurt-1"

    OciCredentials(user="u").save("oci-incomplete", overwrite=True)
    with pytest.raises(ValueError, match="missing tenancy, fingerprint, region, private_key"):
        load_cloud_credentials("oci", "oci-incomplete")
