"""FastAPI: ingest endpoints and read endpoints. Needs ``mcpsift[all]``."""
