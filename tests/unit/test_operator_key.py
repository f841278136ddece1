"""The operator's SSH key from a reader (a Prefect Secret block on workers), in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gradientlab.remote import keys


@pytest.fixture(autouse=True)
def _file_key_again(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(keys.KEY_BLOCK_ENV, raising=False)
    yield
    keys.read_operator_key_with(None)


def _key_text() -> str:
    from deployments.ssh_key import new_private_key

    return new_private_key()


def test_a_key_from_a_reader_is_used_in_memory_and_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path))
    text = _key_text()
    calls: list[int] = []

    def reader() -> str:
        calls.append(1)
        return text

    keys.read_operator_key_with(reader)
    first = keys.load_operator_key()
    assert keys.load_operator_key() is first
    assert calls == [1]
    assert keys.operator_public_key() == keys.public_key_line(first)
    assert keys.operator_public_key().startswith("ssh-ed25519 ")
    assert not (tmp_path / "keys").exists(), "a key file was written"


def test_a_configured_block_never_falls_back_on_a_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path))
    monkeypatch.setenv(keys.KEY_BLOCK_ENV, "fleet-key")
    with pytest.raises(keys.OperatorKeyUnavailable, match="GRADIENTLAB_SSH_KEY_BLOCK=fleet-key"):
        keys.load_operator_key()
    assert not (tmp_path / "keys").exists()


def test_a_bad_key_is_named_without_its_text() -> None:
    secret = "not-a-key-" + "x" * 40
    keys.read_operator_key_with(lambda: secret)
    with pytest.raises(keys.OperatorKeyUnavailable) as info:
        keys.load_operator_key()
    assert "not an unencrypted Ed25519, ECDSA or RSA private key" in str(info.value)
    assert secret not in str(info.value)


def test_without_a_reader_the_key_file_is_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path))
    key = keys.load_operator_key()
    assert (tmp_path / "keys" / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert keys.operator_public_key().split()[1] == key.get_base64()


def test_callers_at_once_all_read_the_one_whole_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hosts created at once each ask for the public key while the first call makes it: none
    reads a half-written file (an empty authorized_keys refuses GradientLab's key)."""
    from concurrent.futures import ThreadPoolExecutor

    for attempt in range(20):
        monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path / str(attempt)))
        with ThreadPoolExecutor(8) as pool:
            lines = list(pool.map(lambda _: keys.operator_public_key(), range(8)))
        key = keys.load_operator_key()
        assert set(lines) == {keys.public_key_line(key)}, lines
        assert sorted(p.name for p in (tmp_path / str(attempt) / "keys").iterdir()) == [
            ".lock",
            "id_ed25519",
            "id_ed25519.pub",
        ]


def test_a_missing_public_key_is_derived_never_a_new_private_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path))
    key = keys.load_operator_key()
    private = tmp_path / "keys" / "id_ed25519"
    before = private.read_bytes()
    (tmp_path / "keys" / "id_ed25519.pub").unlink()
    assert keys.operator_public_key() == keys.public_key_line(key)
    assert private.read_bytes() == before
    assert keys.load_operator_key().get_base64() == key.get_base64()


def test_a_missing_private_key_is_refused_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path))
    keys.load_operator_key()
    public = tmp_path / "keys" / "id_ed25519.pub"
    trusted = public.read_text()
    (tmp_path / "keys" / "id_ed25519").unlink()
    with pytest.raises(keys.OperatorKeyMissing) as info:
        keys.load_operator_key()
    assert "restore id_ed25519 from your backup" in str(info.value)
    assert str(public) in str(info.value)
    assert public.read_text() == trusted
    assert not (tmp_path / "keys" / "id_ed25519").exists()
