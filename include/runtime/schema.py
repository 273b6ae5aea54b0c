"""Idempotent migrations: every file under include/sql/<dialect>/migrations, in name order."""
from __future__ import annotations

import logging

from include.runtime.database import SQL_ROOT, Database

log = logging.getLogger(__name__)


def migrate(db: Database) -> list[str]:
    """Apply all migrations of the database's dialect; safe to run any number of times."""
    applied = []
    for path in sorted((SQL_ROOT / db.dialect / "migrations").glob("*.sql")):
        with db.conn.cursor() as cur:
            cur.execute(path.read_text())
        db.conn.commit()
        applied.append(path.name)
    log.info("schema up to date (%s): %s", db.dialect, ", ".join(applied))
    return applied
