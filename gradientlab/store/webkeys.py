"""The web API key deploy read from a deployed extension's bundle (table extension_web_keys,
sql/014), so that every worker's API client can sign in without the operator looking it up."""

from __future__ import annotations

from sqlalchemy import Engine, text


def record_web_key(
    engine: Engine, extension_id: str, key: str, version: str | None, host: str
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO extension_web_keys"
                " (extension_id, web_api_key, extension_version, read_from_host, read_at)"
                " VALUES (:id, :key, :version, :host, now())"
                " ON CONFLICT (extension_id) DO UPDATE SET web_api_key = EXCLUDED.web_api_key,"
                " extension_version = EXCLUDED.extension_version,"
                " read_from_host = EXCLUDED.read_from_host, read_at = now()"
            ),
            {"id": extension_id, "key": key, "version": version, "host": host},
        )


def bundle_web_key(engine: Engine, extension_id: str) -> str | None:
    """The key read from the extension `extension_id`'s bundle, or None when no deploy has."""
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT web_api_key FROM extension_web_keys WHERE extension_id = :id"),
            {"id": extension_id},
        ).scalar_one_or_none()
    return str(value) if value is not None else None
