"""Shared test setup: corpora come from HARNESS_DATA_DIR (../shared/data beside the repository by default),
never from the network; plots render without a display."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_default_data = REPO.parent / "shared" / "data"
if not os.environ.get("HARNESS_DATA_DIR") and _default_data.is_dir():
    os.environ["HARNESS_DATA_DIR"] = str(_default_data)
os.environ.setdefault("MPLBACKEND", "Agg")

# A suite whose cells train in seconds: the defaults of the runner and executor tests.
TINY = """
    name: tiny
    data: {max_tokens: 1500, val_tokens: 200}
    model: {layers: 1, hidden: 8}
    train: {epochs: 2}
    eval: {every: 0, sample_chars: 5}
    run: {threads: 1, timeout: 120}
"""


@pytest.fixture
def data_dir() -> Path:
    value = os.environ.get("HARNESS_DATA_DIR")
    if not value or not (Path(value) / "pg35.txt").is_file():
        pytest.skip("HARNESS_DATA_DIR with pg35.txt is needed")
    return Path(value)
