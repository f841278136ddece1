"""What every task shares: the fleet file, the database, secrets from Prefect blocks."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, cast

from prefect.blocks.system import Secret
from sqlalchemy import Engine

from gradientlab.config import Fleet, load_fleet
from gradientlab.gradient.errors import GradientError
from gradientlab.store.database import make_engine, migrate

# httpx logs each request URL at INFO; Firebase URLs carry the web API key as `?key=`.
logging.getLogger("httpx").setLevel(logging.WARNING)


def read_secret_block(name: str) -> str:
    block = cast(Secret[str], Secret.load(name))  # sync in a sync context
    return str(block.get())


def fleet_from(path: str) -> Fleet:
    return load_fleet(path)


@lru_cache(maxsize=4)
def _engine(url: str | None) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine


def engine() -> Engine:
    """One migrated engine per process (a served flow keeps its connection pool)."""
    from gradientlab.store.database import database_url

    return _engine(database_url())


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network hiccups, 5xx and 429; not bad credentials or a malformed answer."""
    try:
        state.result()
    except GradientError as exc:
        return exc.retryable
    except Exception:  # noqa: BLE001 - anything else is not a transient API fault
        return False
    return False
