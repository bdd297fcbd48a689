"""Replaces a generated block of the README: the text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` (the tools that measure something write their tables there)."""

from __future__ import annotations

import sys


def replace_block(path: str, name: str, text: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(path) as f:
        whole = f.read()
    if begin not in whole or end not in whole:
        sys.exit(f"{path} has no {begin} ... {end} markers")
    head, rest = whole.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{head}{begin}\n{text}\n{end}{tail}")
    print(f"updated {path}", file=sys.stderr)
