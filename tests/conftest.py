"""Shared test setup: the tests see what a fresh machine gets, the corpora shipped with the package (no
HARNESS_DATA_DIR, an empty cache), and never reach the network; plots render without a display."""

import atexit
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def git(repo, *args) -> str:
    """A git command in ``repo`` with a test identity; its output, stripped."""
    out = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()
# Set before any test or cell process starts, so that cells trained in subprocesses see the same.
os.environ.pop("HARNESS_DATA_DIR", None)
os.environ["HARNESS_CACHE_DIR"] = tempfile.mkdtemp(prefix="harness-test-cache-")
atexit.register(shutil.rmtree, os.environ["HARNESS_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("MPLBACKEND", "Agg")

_connect = socket.socket.connect


def _local_only_connect(self, address):
    """Connections to this machine only (the download tests' HTTP server, a local Ray instance): a test
    that would reach the network fails instead of depending on it."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            local = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False
        if not local:
            raise OSError(f"tests must not use the network (connect to {host})")
    return _connect(self, address)


socket.socket.connect = _local_only_connect

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
def one_thread():
    """Tiny models gain nothing from a second thread and lose much when the cores are busy. torch's
    setting is global to the process (run_cell applies cfg.threads to it): restore what it was."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
