"""Create or update the schema of the order and results databases (idempotent)."""
from __future__ import annotations

import logging

from include.runtime.config import RESULTS_CONN_ID, SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.schema import migrate


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    for conn_id in dict.fromkeys((SOURCE_CONN_ID, RESULTS_CONN_ID)):
        with Database(conn_id) as db:
            print(conn_id, migrate(db))


if __name__ == "__main__":
    main()
