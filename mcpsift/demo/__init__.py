"""``mcpsift demo``: labelled MCP traffic, scoring the detectors on it, streaming it into a server.

* :func:`~mcpsift.demo.generate.generate` writes a working day of labelled events;
* :func:`~mcpsift.demo.evaluate.evaluate` runs the detectors over them and scores the alerts;
* :func:`~mcpsift.demo.run.run` streams them into a running ``mcpsift serve``.

Only the standard library, the core dependencies and the detectors are
needed; nothing here imports FastAPI, ClickHouse or an HTTP client library.
"""

from __future__ import annotations

__all__ = ["generate", "evaluate", "run"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # lazily, so `import mcpsift.demo` stays cheap
    if name == "generate":
        from .generate import generate

        return generate
    if name == "evaluate":
        from .evaluate import evaluate

        return evaluate
    if name == "run":
        from .run import run

        return run
    raise AttributeError(name)
