"""Bad output folders are refused up front: one line, exit 2, nothing trained or written."""

from pathlib import Path

import pytest

from harness.cli import main

from conftest import TINY


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def bad_outs(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    outs = [(str(a_file), "exists and is not a folder"), (str(a_file / "under"), "Not a directory"),
            ("", "an empty path names no folder")]
    if Path("/proc/self").is_dir():
        outs.append(("/proc/harness-results", "cannot write there"))
    return outs


def one_line_error(capsys, fragment):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert "Traceback" not in err


def test_run_refuses_a_bad_out_before_training(suite, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out, fragment in bad_outs(tmp_path):
        assert main(["run", str(suite), "--out", out, "--no-report"]) == 2, out
        one_line_error(capsys, fragment)
    assert not (tmp_path / "results").exists()  # `--out ""` is not the default folder


def test_the_check_of_a_good_out_leaves_no_folder_behind(tmp_path):
    from harness.results.atomic import writable_folder

    out = tmp_path / "new" / "deeper" / "run"
    assert writable_folder(out, "--out") == out
    assert not (tmp_path / "new").exists()


def test_run_refuses_an_empty_resume(suite, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(suite), "--resume", ""]) == 2
    one_line_error(capsys, "--resume '': an empty path")


def test_report_and_baseline_refuse_a_bad_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"  # never read: the output folder is checked first
    for out, fragment in bad_outs(tmp_path):
        assert main(["report", str(run_dir), "--out", out]) == 2, out
        one_line_error(capsys, fragment)
        assert main(["baseline", "save", str(run_dir), "--name", "x", "--root", out]) == 2, out
        one_line_error(capsys, fragment)


def test_compare_refuses_an_output_file_that_is_a_folder_or_one_of_its_inputs(tmp_path, capsys):
    from fixtures import make_run_folder

    run = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), devices=("cpu",))
    stored = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    cases = [("--json", tmp_path, "is a folder"), ("--json", run / "run.json", "would write over a file of the input"),
             ("--markdown", run / "cells.csv", "would write over a file of the input"),
             ("--json", "", "an empty path names no file"), ("--json", tmp_path / "a-file" / "x.json", "")]
    (tmp_path / "a-file").write_text("not a folder\n")
    for flag, path, fragment in cases:
        assert main(["compare", str(run), str(run), flag, str(path)]) == 2, (flag, path)
        one_line_error(capsys, fragment)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == stored  # nothing written over
    assert main(["compare", str(run), str(run), "--json", str(tmp_path / "out" / "c.json")]) == 2  # too few runs
    assert (tmp_path / "out" / "c.json").is_file()
