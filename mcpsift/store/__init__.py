"""The ClickHouse store (schema, migrations, every query). Needs ``mcpsift[all]``."""

from .store import Store, StoreError, event_row, open_store

__all__ = ["Store", "StoreError", "event_row", "open_store"]
