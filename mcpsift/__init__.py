"""mcpsift: audit and anomaly detection for Model Context Protocol servers and gateways.

Importing this package is light: no ClickHouse, faust, scikit-learn or FastAPI.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
