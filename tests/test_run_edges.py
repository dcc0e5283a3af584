"""The runner and `run` command at their edges: what a careless edit, an odd setting or a killed process
leaves behind."""

import subprocess
import sys

import pandas as pd

from conftest import TINY



def harness(*args, cwd):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def write_suite(tmp_path, extra: str = "", name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(TINY + extra)
    return path


def test_val_tokens_0_runs_without_held_out_evaluation(tmp_path):
    suite = write_suite(tmp_path)
    out = tmp_path / "run"
    proc = harness("run", suite, "--set", "data.val_tokens=0", "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cells = pd.read_csv(out / "cells.csv")
    assert list(cells["status"]) == ["ok"] and cells["val_ppl"].isna().all() and cells["causal_ppl"].isna().all()
    assert pd.read_csv(out / "epochs.csv")["val_ppl"].isna().all()
