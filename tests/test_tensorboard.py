"""`run --tensorboard DIR`: per-epoch perplexities and seconds as TensorBoard scalars, one TensorBoard run per cell."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from harness.errors import HarnessError
from harness.grid.tensorboard import TensorBoardLog

from conftest import TINY

pytest.importorskip("tensorboard")  # the optional extra: pip install -e '.[tensorboard]'
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_epochs_become_scalars_by_epoch_and_evaluations_only_where_they_ran(tmp_path):
    log = TensorBoardLog(tmp_path / "tb")
    log.epoch("lstm-l1-uni-cpu-s0", {"epoch": 1, "train_ppl": 20.0, "sec": 0.5, "tokens_per_sec": 2000.0,
                                     "val_ppl": None, "causal_ppl": None})
    # written at once, so that TensorBoard shows it while the cell still trains
    assert scalars(tmp_path / "tb" / "lstm-l1-uni-cpu-s0")["perplexity/train"] == [(1, 20.0)]
    record = {"epoch_log": [
        {"epoch": 1, "train_ppl": 20.0, "sec": 0.5, "tokens_per_sec": 2000.0},  # seen live: not logged twice
        {"epoch": 2, "train_ppl": 12.0, "sec": 0.25, "tokens_per_sec": 4000.0, "val_ppl": 15.0,
         "causal_ppl": 16.0},
        {"epoch": 3, "train_ppl": float("inf"), "sec": 0.25, "tokens_per_sec": 4000.0},  # diverged: no point
    ]}
    log.finish("lstm-l1-uni-cpu-s0", record)
    log.close()
    got = scalars(tmp_path / "tb" / "lstm-l1-uni-cpu-s0")
    assert got["perplexity/train"] == [(1, 20.0), (2, 12.0)]
    assert got["perplexity/heldout_teacher_forced"] == [(2, 15.0)]
    assert got["perplexity/heldout_causal"] == [(2, 16.0)]
    assert got["seconds_per_epoch"] == [(1, 0.5), (2, 0.25), (3, 0.25)]
    assert [step for step, _ in got["tokens_per_sec"]] == [1, 2, 3]


def test_without_tensorboard_installed_the_flag_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were absent
    with pytest.raises(HarnessError, match=r"pip install -e '\.\[tensorboard\]'"):
        TensorBoardLog(tmp_path / "tb")


def test_run_logs_every_cell_under_the_results_folder_name(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(textwrap.dedent(TINY) + "matrix: {cell: [rnn, gru]}\n")
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(suite), "--out", str(tmp_path / "run-a"),
                           "--no-report", "--tensorboard", str(tmp_path / "tb")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    runs = sorted(p.name for p in (tmp_path / "tb" / "run-a").iterdir())
    assert runs == ["gru-l1-uni-cpu-s0", "rnn-l1-uni-cpu-s0"]
    for cell in runs:
        got = scalars(tmp_path / "tb" / "run-a" / cell)
        assert [step for step, _ in got["perplexity/train"]] == [1, 2]
        assert all(value > 0 for _, value in got["seconds_per_epoch"])


def test_a_cell_logged_again_supersedes_what_an_earlier_process_logged(tmp_path):
    def row(epoch, ppl):
        return {"epoch": epoch, "train_ppl": ppl, "sec": 0.5, "tokens_per_sec": 2000.0}

    cell = "gru-l1-uni-cpu-s0"
    stopped = TensorBoardLog(tmp_path / "tb")  # a run stopped after epoch 3
    for epoch in (1, 2, 3):
        stopped.epoch(cell, row(epoch, 30.0 - epoch))
    stopped.close()
    resumed = TensorBoardLog(tmp_path / "tb")  # resumed from a checkpoint: the saved epochs come again first
    for epoch in (1, 2, 3, 4):
        resumed.epoch(cell, row(epoch, 30.0 - epoch))
    resumed.close()
    assert scalars(tmp_path / "tb" / cell)["perplexity/train"] == [(1, 29.0), (2, 28.0), (3, 27.0), (4, 26.0)]
    again = TensorBoardLog(tmp_path / "tb")  # trained again from the start: only the new numbers show
    for epoch in (1, 2):
        again.epoch(cell, row(epoch, 40.0 - epoch))
    again.close()
    assert scalars(tmp_path / "tb" / cell)["perplexity/train"] == [(1, 39.0), (2, 38.0)]
