"""Print the lowest version pyproject.toml allows of each runtime dependency, as pip requirements
(`name==floor`), for CI's second environment: the floors are tested, not hoped for. torch stays at the
version CI pins (its CPU build); a dependency without a floor is an error, since its floor could not be tested."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PINNED_ELSEWHERE = {"torch"}


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    out = []
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        if name in PINNED_ELSEWHERE:
            continue
        floor = re.search(r">=\s*([0-9][^,;\s]*)", requirement)
        if not floor:
            sys.exit(f"pyproject.toml: {requirement!r} has no floor (>=) to test")
        out.append(f"{name}=={floor.group(1)}")
    return out


if __name__ == "__main__":
    print("\n".join(floors(Path(__file__).resolve().parent.parent / "pyproject.toml")))
