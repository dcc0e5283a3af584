"""The results format (harness.results.run_folder): reading what is damaged says what and where, and the tables are
checked against the cell records, which are the source of truth (a row cut short, dropped or changed is
read from its record, and `compare`, `report` and `show` say so)."""

import io
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO
from harness import cli
from harness.spec.config import CellConfig
from harness.errors import HarnessError
from harness.report.loading import load_run
from harness.results.run_folder import RunDir, read_json_object, read_records
from harness.results.tables import read_checked_table, rebuild_tables, table_rows

MACHINE = {"hostname": "bench", "cpu_model": "Fixture CPU", "gpu_name": None, "python": "3.11.7",
           "torch": "2.13.0+cpu", "cuda": None, "cudnn": None}
SECS = [[1.00, 1.02, 0.99, 1.01], [1.03, 1.01, 1.02, 1.00], [0.98, 1.00, 0.99, 1.01],
        [1.01, 0.99, 1.00, 1.02], [1.02, 1.00, 1.01, 0.99]]


def make_run(folder, secs=SECS, cpu_model="Fixture CPU"):
    """A run folder as the runner writes it: one record per seed (cells/*.json), the tables rebuilt from
    them, run.json. Each seed's epochs take ``secs[seed]`` seconds after a warm-up epoch."""
    records = {}
    for seed, times in enumerate(secs):
        config = CellConfig(cell="rnn", layers=1, direction="uni", device="cpu", seed=seed, hidden=8,
                            epochs=len(times) + 1, threads=1)
        epoch_log = [{"epoch": i + 1, "train_ppl": 20.0 - i, "sec": sec, "tokens_per_sec": 1120 / sec,
                      "warmup": i == 0, "val_ppl": None, "causal_ppl": None}
                     for i, sec in enumerate([2.0, *times])]
        records[config.cell_id] = {
            "cell_id": config.cell_id, "axes": {"seed": seed}, "config": config.model_dump(mode="json"),
            "status": "ok", "reason": "", "cell": "rnn", "layers": 1, "direction": "uni", "device": "cpu",
            "seed": seed, "hidden": 8, "epochs": len(times) + 1, "train_ppl": 17.0, "sec_per_epoch": sorted(times)[2],
            "flops_per_sec": 1.0e9 * (seed + 1), "flops_utilization": 0.01 * (seed + 1),
            "cpu_model": cpu_model, "gpu_name": None, "hostname": "bench", "epoch_log": epoch_log,
            "samples": [{"prefix": "the", "text": f"the time {seed}"}], "total_sec": 9.5 + seed,
            **config.model_dump(mode="json", include={"precision", "threads", "corpus"}),
        }
    run_dir = RunDir(folder)
    run_dir.lock()
    for cell_id, record in records.items():
        (run_dir.cell_path(cell_id)).write_text(json.dumps(record))
    rebuild_tables(run_dir.path, records, list(records))
    run_dir.run_json.write_text(json.dumps({
        "suite": {"name": "fixture"}, "started": "2026-01-01T00:00:00+00:00", "machine": MACHINE,
        "git": {"commit": "0123456789", "dirty": False}, "cells": list(records),
        "calibration": {"cpu": {"flops_per_sec": 1.0e11}}}))
    return run_dir.path


def lines_of(path):
    return path.read_text().splitlines(keepends=True)


def compare(a, b, capsys):
    code = cli.main(["compare", str(a), str(b)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_importing_the_results_module_loads_no_torch():
    probe = "import sys, harness.results.run_folder; print(sorted(m for m in ('torch', 'scipy', 'seaborn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("content, message", [
    (None, "cannot read: no such file"),
    (b"{not json", "unreadable: invalid JSON at line 1"),
    (b"\xff\xfe{}", "unreadable: not UTF-8 text"),
    (b"[1, 2]", "expected a JSON object"),
])
def test_a_json_file_that_is_not_an_object_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(HarnessError) as err:
        read_json_object(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_damaged_records_are_named_not_skipped(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "cells" / "rnn-l1-uni-cpu-s1.json").write_text("{cut")
    (run / "cells" / "rnn-l1-uni-cpu-s2.json").write_text(json.dumps({"cell_id": "rnn-l1-uni-cpu-s2"}))
    records, damaged = read_records(run)
    assert set(records) == {"rnn-l1-uni-cpu-s0", "rnn-l1-uni-cpu-s3", "rnn-l1-uni-cpu-s4"}
    assert "rnn-l1-uni-cpu-s1.json: unreadable: invalid JSON" in damaged["rnn-l1-uni-cpu-s1"]
    assert "rnn-l1-uni-cpu-s2.json: not a cell record (no 'status')" in damaged["rnn-l1-uni-cpu-s2"]
    # The report and show say which files are damaged, rather than raising or calling the cells pending.
    notes = load_run(run).notes
    assert any("rnn-l1-uni-cpu-s1.json: unreadable" in n and "its row of cells.csv is used" in n for n in notes)
    assert cli.main(["show", str(run)]) == 0


def test_show_lists_a_damaged_record_as_damaged(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "cells" / "rnn-l1-uni-cpu-s1.json").write_text("{cut")
    assert cli.main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("rnn-l1-uni-cpu-s1"))
    assert "damaged" in row and "pending" not in out
    assert "!! " in out and "rnn-l1-uni-cpu-s1.json: unreadable" in out


def test_show_lists_the_stored_cells_of_a_folder_whose_run_json_is_lost(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "run.json").unlink()
    assert cli.main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{run}: suite unknown, run.json missing")
    assert "5 ok" in out and "pending" not in out
    # A folder with neither run.json nor records is no run folder.
    (tmp_path / "empty" / "cells").mkdir(parents=True)
    assert cli.main(["show", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'empty'}: not a run folder (no run.json)"


def test_intact_tables_are_read_as_they_are(tmp_path):
    run = make_run(tmp_path / "run")
    records, _ = read_records(run)
    for name in ("cells.csv", "epochs.csv", "samples.csv"):
        frame, notes = read_checked_table(run, name, records)
        assert notes == []
        pd.testing.assert_frame_equal(frame, pd.read_csv(run / name))
    assert load_run(run).notes == []


def test_a_cells_row_cut_mid_line_is_read_from_its_record(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    intact = compare(a, b, capsys)
    lines = lines_of(b / "cells.csv")
    (b / "cells.csv").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a crash mid-write
    code, out, _ = compare(a, b, capsys)
    assert code == intact[0] == 0
    assert f"!! {b / 'cells.csv'}: 1 cell(s) with a row cut short (rnn-l1-uni-cpu-s4): read from cells/*.json" in out
    assert " 5/5 " in out and "DIFFERENT" not in out
    # The report uses the record's values, not the padded row, and says so.
    data = load_run(b)
    cut = data.cells.set_index("cell_id").loc["rnn-l1-uni-cpu-s4"]
    assert cut["flops_utilization"] == pytest.approx(0.05) and cut["cpu_model"] == "Fixture CPU"
    assert len(data.cells) == 5
    assert any("cells.csv: 1 cell(s) with a row cut short" in note for note in data.notes)


def test_a_dropped_cells_row_is_named_and_the_cell_compared(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    lines = lines_of(b / "cells.csv")
    (b / "cells.csv").write_text("".join(lines[:3] + lines[4:]))  # seed 2's row is gone
    code, out, _ = compare(a, b, capsys)
    assert code == 0 and " 5/5 " in out
    assert f"!! {b / 'cells.csv'}: 1 cell(s) missing (rnn-l1-uni-cpu-s2): read from cells/*.json only" in out
    assert any("1 cell(s) missing (rnn-l1-uni-cpu-s2)" in note for note in load_run(b).notes)


def test_a_truncated_cells_csv_is_not_blamed_on_different_machines(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    text = (b / "cells.csv").read_text()
    (b / "cells.csv").write_text(text[: len(text) // 2])
    code, out, err = compare(a, b, capsys)
    assert code == 0, err
    assert "different machines" not in out + err and "DIFFERENT" not in out
    assert "missing" in out and "read from cells/*.json" in out and " 5/5 " in out


def test_a_changed_cells_value_is_read_from_the_record(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    cells = pd.read_csv(b / "cells.csv")
    cells.loc[cells["seed"] == 3, "cpu_model"] = "Another CPU"
    cells.to_csv(b / "cells.csv", index=False)
    code, out, _ = compare(a, b, capsys)
    assert code == 0 and "DIFFERENT" not in out
    assert "1 cell(s) whose rows differ from their record (rnn-l1-uni-cpu-s3)" in out


def test_epochs_rows_cut_or_dropped_are_read_from_the_records(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    _, intact, _ = compare(a, b, capsys)
    lines = lines_of(b / "epochs.csv")
    (b / "epochs.csv").write_text("".join(lines[:7] + lines[8:-1]) + lines[-1][:25])  # one dropped, the last cut
    code, out, _ = compare(a, b, capsys)
    assert code == 0
    assert "epochs.csv: 1 cell(s) with a row cut short (rnn-l1-uni-cpu-s4)" in out
    assert "epochs.csv: 1 cell(s) whose rows differ from their record (rnn-l1-uni-cpu-s1)" in out
    table = [line for line in out.splitlines() if line.startswith("rnn-l1-uni-cpu")]
    assert table == [line for line in intact.splitlines() if line.startswith("rnn-l1-uni-cpu")]
    data = load_run(b)
    assert len(data.epochs) == 25 and sorted(data.epochs.groupby("cell_id").size()) == [5] * 5


def test_without_records_a_row_cut_short_is_left_out_and_named(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    for path in (b / "cells").iterdir():
        path.unlink()
    lines = lines_of(b / "cells.csv")
    (b / "cells.csv").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    code, out, _ = compare(a, b, capsys)
    assert "cells.csv: 1 row(s) cut short with no cell record to restore them (rnn-l1-uni-cpu-s4): left out" in out
    assert " 5/4 " in out and "DIFFERENT" not in out
    assert code == 2  # 5 against 4 runs cannot reach p < 0.01: nothing decided, rather than a padded row used


def test_table_rows_are_what_the_checked_reader_expects(tmp_path):
    run = make_run(tmp_path / "run")
    records, _ = read_records(run)
    row, epochs, samples = table_rows("rnn-l1-uni-cpu-s0", records["rnn-l1-uni-cpu-s0"])
    assert row["cell_id"] == "rnn-l1-uni-cpu-s0" and len(epochs) == 5 and samples[0]["text"] == "the time 0"


def test_a_last_line_cut_inside_a_quoted_value_is_restored_from_its_record(tmp_path):
    run = make_run(tmp_path / "run")
    records, _ = read_records(run)
    path = run / "cells" / "rnn-l1-uni-cpu-s4.json"
    path.write_text(json.dumps({**records["rnn-l1-uni-cpu-s4"], "sample": 'the "time", traveller'}))
    records, _ = read_records(run)
    rebuild_tables(run, records, sorted(records))
    text = (run / "cells.csv").read_text()
    (run / "cells.csv").write_text(text[: text.index('"the ""time') + 8])  # pandas: EOF inside string
    with pytest.raises(HarnessError, match="unreadable CSV"):
        read_checked_table(run, "cells.csv", {})  # nothing to restore it from: as before
    cells, notes = read_checked_table(run, "cells.csv", records, text=True)
    assert notes == [f"{run / 'cells.csv'}: 1 cell(s) with a row cut short (rnn-l1-uni-cpu-s4): read from cells/*.json"]
    assert len(cells) == 5 and cells.set_index("cell_id").loc["rnn-l1-uni-cpu-s4", "sample"] == 'the "time", traveller'


def test_a_table_rewritten_by_pandas_still_matches_its_records(tmp_path):
    run = make_run(tmp_path / "run")
    for path in (run / "cells").glob("*.json"):  # a number-like string, as a digest may be
        path.write_text(json.dumps({**json.loads(path.read_text()), "config_hash": "000123456789"}))
    records, _ = read_records(run)
    rebuild_tables(run, records, sorted(records))
    pd.read_csv(run / "cells.csv").to_csv(run / "cells.csv", index=False)  # "000123456789" becomes 123456789
    assert "000123456789" not in (run / "cells.csv").read_text()
    assert read_checked_table(run, "cells.csv", records)[1] == []


@pytest.mark.parametrize("damage, fragment", [
    (lambda run: run["suite"].pop("name"), "the suite has no name"),
    (lambda run: run.update(cells=5), "cells = 5: expected a list"),
    (lambda run: run.update(cells="abc"), "cells = 'abc': expected a list"),
    (lambda run: run.update(cells=[{"a": 1}]), "'cells' holds something other than cell ids"),
    (lambda run: run.update(machine=[1]), "machine = [1]: expected an object"),
])
def test_a_run_json_of_the_wrong_shape_is_one_line_exit_2_for_every_reader(tmp_path, capsys, damage, fragment):
    from harness.cli import main
    from fixtures import make_run_folder

    run_dir = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), devices=("cpu",), seeds=(0,))
    run = json.loads((run_dir / "run.json").read_text())
    damage(run)
    (run_dir / "run.json").write_text(json.dumps(run))
    for argv in (["show", str(run_dir)], ["report", str(run_dir), "--out", str(tmp_path / "report")],
                 ["compare", str(run_dir), str(run_dir)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, (argv, err)


def test_a_cell_record_with_a_reason_that_is_not_text_is_damaged(tmp_path):
    from harness.results.run_folder import check_record

    assert check_record({"status": "failed", "reason": 5}) == "'reason' is not text"
    assert check_record({"status": "failed", "reason": "out of memory"}) is None


def test_a_repaired_row_of_a_table_written_before_a_column_existed_keeps_the_tables_columns(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    for run in (a, b):  # cells.csv as an older harness wrote it: without select_tokens
        frame = pd.read_csv(run / "cells.csv", dtype=str, keep_default_na=False)
        frame.drop(columns=["select_tokens"]).to_csv(run / "cells.csv", index=False)
    lines = lines_of(b / "cells.csv")
    (b / "cells.csv").write_text("".join(lines[:-1]) + lines[-1].replace(",ok,", ",zzz,", 1))  # one value changed
    code, out, err = compare(a, b, capsys)
    assert code == 0 and " 5/5 " in out, err  # the other cells are not blamed for a column they never had
    assert "1 cell(s) whose rows differ from their record (rnn-l1-uni-cpu-s4): read from cells/*.json" in out
    records, _ = read_records(b)
    frame, _ = read_checked_table(b, "cells.csv", records, text=True)
    assert "select_tokens" not in frame and list(frame["status"]) == ["ok"] * 5


def test_a_large_table_is_stored_compressed_and_read_as_the_plain_one(tmp_path, monkeypatch):
    import gzip

    from harness.results import tables

    run = make_run(tmp_path / "run")
    records, _ = read_records(run)
    plain = {name: read_checked_table(run, name, records)[0] for name in tables.TABLES}
    text = (run / "epochs.csv").read_bytes()
    sizes = {name: (run / name).stat().st_size for name in tables.TABLES}
    monkeypatch.setattr(tables, "COMPRESS_ABOVE", len(text) - 1)
    rebuild_tables(run, records, list(records))
    for name, size in sizes.items():  # those above the size compressed, the others plain
        assert (run / name).exists() == (size < len(text)) and (run / f"{name}.gz").exists() == (size >= len(text))
    assert gzip.decompress((run / "epochs.csv.gz").read_bytes()) == text
    for name in tables.TABLES:
        frame, notes = read_checked_table(run, name, records)
        assert notes == []
        pd.testing.assert_frame_equal(frame, plain[name])
    assert load_run(run).notes == [] and len(load_run(run).epochs) == 25
    # Rebuilt again below the size, the table is plain once more and the compressed one gone.
    monkeypatch.setattr(tables, "COMPRESS_ABOVE", len(text) + 1)
    rebuild_tables(run, records, list(records))
    assert (run / "epochs.csv").read_bytes() == text and not (run / "epochs.csv.gz").exists()


def test_a_cell_stored_beside_a_compressed_table_rebuilds_it(tmp_path, monkeypatch):
    import gzip

    from harness.results import tables

    run = make_run(tmp_path / "run", secs=SECS[:4])
    monkeypatch.setattr(tables, "COMPRESS_ABOVE", 200)
    records, _ = read_records(run)
    rebuild_tables(run, records, list(records))
    assert (run / "epochs.csv.gz").exists()
    full = make_run(tmp_path / "full")  # the same run with a fifth seed
    last = sorted(read_records(full)[0].items())[-1]
    (run / "cells" / f"{last[0]}.json").write_text(json.dumps(last[1]))
    assert not tables.append_tables(run, *last)  # no plain epochs.csv to append to: rebuilt instead
    rebuild_tables(run, read_records(run)[0], None)
    epochs = pd.read_csv(io.BytesIO(gzip.decompress((run / "epochs.csv.gz").read_bytes())))
    assert sorted(epochs.groupby("cell_id").size()) == [5] * 5


def test_a_cell_that_would_grow_a_plain_table_past_the_size_rebuilds_it_compressed(tmp_path, monkeypatch):
    # A run stopped before its end (SIGUSR1, Ctrl-C) is not rebuilt at the end: its tables must not have grown
    # past the size by appends.
    from harness.results import tables

    run = make_run(tmp_path / "run", secs=SECS[:4])
    records, _ = read_records(run)
    rebuild_tables(run, records, list(records))
    full = make_run(tmp_path / "full")  # the same run with a fifth seed
    last = sorted(read_records(full)[0].items())[-1]
    size = (run / "epochs.csv").stat().st_size
    monkeypatch.setattr(tables, "COMPRESS_ABOVE", size + 10)  # one more cell's epochs cross it
    assert not tables.append_tables(run, *last) and (run / "epochs.csv").stat().st_size == size  # nothing written
    monkeypatch.setattr(tables, "COMPRESS_ABOVE", size * 2)
    assert tables.append_tables(run, *last)


def test_a_damaged_compressed_table_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    from harness.results import tables

    run = make_run(tmp_path / "run")
    monkeypatch.setattr(tables, "COMPRESS_ABOVE", 200)
    rebuild_tables(run, read_records(run)[0], None)
    packed = run / "epochs.csv.gz"
    packed.write_bytes(packed.read_bytes()[:40])
    assert cli.main(["report", str(run), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {packed}: unreadable CSV") and "\n" not in err
