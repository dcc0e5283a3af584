"""Flags on a run's timings: the machine's calibrated speed moving, wide epoch-time spread, a busy machine."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from harness.cli import main as cli
from harness.analysis.timing_trust import distinct_reasons, flagged_cells, timing_warnings
from harness.report.build import build_report

from fixtures import CALIBRATION, CPU_FLOPS_PER_SEC, make_run_folder


@pytest.fixture
def run(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("lstm",), layers=(1,), directions=("uni",), devices=("cpu",),
                              seeds=(0, 1))
    return run_dir, json.loads((run_dir / "run.json").read_text()), pd.read_csv(run_dir / "cells.csv")


def _with_end_rate(info: dict, rate: float) -> dict:
    info = copy.deepcopy(info)
    info["calibration_end"] = copy.deepcopy(CALIBRATION)
    info["calibration_end"]["cpu"]["flops_per_sec"] = rate
    return info


def test_a_quiet_run_is_not_flagged(run):
    _, info, cells = run
    assert timing_warnings(_with_end_rate(info, CPU_FLOPS_PER_SEC * 0.97), cells) == []
    assert timing_warnings(info, None) == [] and timing_warnings({}, cells.iloc[0:0]) == []


def test_a_calibration_that_moves_by_30_percent_between_start_and_end_is_flagged(run):
    _, info, cells = run
    warnings = timing_warnings(_with_end_rate(info, CPU_FLOPS_PER_SEC * 0.7), cells)
    assert len(warnings) == 1
    assert "machine speed moved" in warnings[0] and "30% below" in warnings[0] and "unreliable" in warnings[0]
    assert "10 GFLOP/s at the start, 7 GFLOP/s at the end" in warnings[0]
    # faster at the end is as much a change as slower
    assert len(timing_warnings(_with_end_rate(info, CPU_FLOPS_PER_SEC * 1.3), cells)) == 1


def test_a_resumed_part_on_a_slower_machine_is_flagged(run):
    _, info, cells = run
    info["resumes"] = [{"started": "2025-01-02T00:00:00+00:00",
                        "calibration": {"cpu": {**CALIBRATION["cpu"], "flops_per_sec": CPU_FLOPS_PER_SEC / 2}}}]
    assert "at the resume 1" in timing_warnings(info, cells)[0]


def test_a_part_resumed_on_another_kind_of_machine_is_not_a_machine_that_slowed(run):
    _, info, cells = run
    slower = {"cpu": {**CALIBRATION["cpu"], "flops_per_sec": CPU_FLOPS_PER_SEC / 2}}
    other = {**info["machine"], "cpu_model": "Another CPU"}
    info["resumes"] = [{"started": "2025-01-02T00:00:00+00:00", "machine": other, "calibration": slower}]
    info["calibration_end"] = slower  # on the machine of the last part
    assert not any("speed moved" in w for w in timing_warnings(info, cells))
    info["calibration_end"] = CALIBRATION  # that machine itself sped up by a factor of two
    assert "on Another CPU calibrated at" in timing_warnings(info, cells)[0]


def test_wide_epoch_spread_busy_machine_and_steal_are_flagged(run):
    _, info, cells = run
    cells = cells.copy()
    cells.loc[0, "sec_per_epoch_iqr"] = cells.loc[0, "sec_per_epoch"] * 0.5
    cells["load_start"], cells["load_end"], cells["cpu_steal"] = [1.0, 3.1], [1.2, 2.0], [0.0, 0.12]
    warnings = timing_warnings(info, cells)
    assert len(warnings) == 3, warnings
    assert "1 of 2 cells" in warnings[0] and "50%" in warnings[0] and "lstm-l1-uni-cpu-s0" in warnings[0]
    assert "busy during 1 of 2 cells" in warnings[1] and "3.1 on 2 CPUs" in warnings[1]
    assert "steal up to 12%" in warnings[2] and "not judged" not in warnings[1]
    # A cell that names its node (a Ray worker) is not judged by the driver's CPU count: the count says so.
    cells["node"] = ["", "worker-1"]
    cells["load_start"] = [3.1, 3.1]
    busy = [w for w in timing_warnings(info, cells) if "busy" in w]
    assert len(busy) == 1 and "busy during 1 of 1 cells" in busy[0]
    assert busy[0].endswith("; the other cell names the node it ran on and is not judged here")


def test_cells_that_did_not_finish_are_not_judged(run):
    _, info, cells = run
    cells = cells.copy()
    cells["status"] = ["failed", "ok"]
    cells.loc[0, "sec_per_epoch_iqr"] = cells.loc[0, "sec_per_epoch"] * 5
    assert timing_warnings(info, cells) == []


def test_show_flags_a_run_whose_machine_speed_moved(run, capsys):
    run_dir, info, _ = run
    assert cli(["show", str(run_dir)]) == 0
    assert "!!" not in capsys.readouterr().out
    (run_dir / "run.json").write_text(json.dumps(_with_end_rate(info, CPU_FLOPS_PER_SEC * 0.7)))
    assert cli(["show", str(run_dir)]) == 0
    flagged = [line for line in capsys.readouterr().out.splitlines() if line.startswith("!! ")]
    assert len(flagged) == 1 and "machine speed moved" in flagged[0]


def test_cells_flagged_for_overlapping_reasons_say_each_reason_once(tmp_path):
    # Reported: "load average above 2.5; load average above 2.5": one cell busy and spread, one only busy,
    # and their joined reasons said together.
    info = {"machine": {"cpu_count": 2}}
    cells = pd.DataFrame({"cell_id": ["a", "b", "b", "c"], "status": ["ok"] * 4,
                          "sec_per_epoch": [1.0, 1.0, 1.0, 1.0], "sec_per_epoch_iqr": [0.5, 0.0, 0.0, 0.0],
                          "load_start": [3.0, 3.0, 3.0, 1.0], "load_end": [1.0, 1.0, 1.0, 1.0]})
    flagged = flagged_cells(info, cells)
    # A cell listed twice (b) is flagged once for each reason.
    assert flagged == {"a": "epoch-time spread above 20% of the median; load average above 2.5",
                       "b": "load average above 2.5"}
    assert distinct_reasons(flagged.values()) == ["epoch-time spread above 20% of the median",
                                                  "load average above 2.5"]
    assert distinct_reasons(["x; y", "y", "z; x"]) == ["x", "y", "z"]  # in the order first met

    run_dir = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), devices=("cpu",), seeds=(0, 1),
                              claims=["bidirectional_slow"])
    table = pd.read_csv(run_dir / "cells.csv")
    table["load_start"], table["load_end"] = 1.0, 1.0
    for cell, spread in (("rnn-l1-uni-cpu-s0", 0.5), ("rnn-l1-uni-cpu-s1", None), ("rnn-l1-bi-cpu-s0", 0.5)):
        path = run_dir / "cells" / f"{cell}.json"
        record = json.loads(path.read_text())
        record["load_start"], record["load_end"] = 3.0, 1.0
        if spread:
            record["sec_per_epoch_iqr"] = record["sec_per_epoch"] * spread
        path.write_text(json.dumps(record))
        row = table.index[table["cell_id"] == cell][0]
        table.loc[row, ["load_start", "sec_per_epoch_iqr"]] = 3.0, record["sec_per_epoch_iqr"]
    table.to_csv(run_dir / "cells.csv", index=False)
    markdown = (build_report(run_dir, tmp_path / "report") / "index.md").read_text()
    said = [line for line in markdown.splitlines() if "unreliable" in line and "load average above 2.5" in line]
    assert said and all(line.count("load average above 2.5") == 1 for line in said), said
    assert any("(epoch-time spread above 20% of the median; load average above 2.5)" in line for line in said)
