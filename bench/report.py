"""What every benchmark's ``main`` ends with: the figures as JSON, or its table."""

from __future__ import annotations

import sys
from typing import Any, Callable

import orjson

__all__ = ["emit"]


def emit(result: dict[str, Any], as_json: bool, print_table: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    if as_json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(result)
    return result
