"""The end of every benchmark: print its Markdown table, write its JSON record."""
from __future__ import annotations

import json


def finish(result: dict, table: list[str], output: str | None) -> int:
    """Print `table` (Markdown lines), write `result` to `output` (a JSON file) when given; returns 0."""
    print("\n" + "\n".join(table))
    if output:
        with open(output, "w") as file:
            json.dump(result, file, indent=1)
    return 0
