"""Generated sections of a markdown file (docs/RESULTS.md): the text between two marker lines, replaced whole, so
the page holds what a results file says and the prose around it stays."""
from __future__ import annotations

from pathlib import Path

from utils.atomic_file import write_atomic


def replace_section(path: str | Path, begin: str, end: str, text: str) -> None:
    """Put `text` between the markers `begin` and `end` of the file `path` (written atomically); ValueError
    naming the file when it lacks either marker."""
    target = Path(path)
    old = target.read_text()
    if begin not in old or end not in old:
        raise ValueError(f"{target} has no {begin} ... {end} section to replace")
    head, rest = old.split(begin, 1)
    new = head + begin + "\n" + text + end + rest.split(end, 1)[1]
    write_atomic(target, lambda file: file.write(new.encode()))
