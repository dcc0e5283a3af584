"""Where a report is written and what it may replace: only its own files, never half of them, beside its run."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from harness import cli
from harness.errors import HarnessError
from harness.report import build, publish
from harness.report.build import build_report
from harness.report.publish import MARKER, default_out_dir, owned_files

from fixtures import make_run_folder

ROOT = Path(__file__).resolve().parent.parent
COMMITTED_REPORTS = ("example", "full-cpu", "full-cpu-timing", "sensitivity")


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and all(f in err for f in fragments), err
    return err


@pytest.fixture
def run_dir(tmp_path):
    return make_run_folder(tmp_path, cells=("rnn",), devices=("cpu",), seeds=(0, 1), claims=["depth_helps"])


def test_a_folder_holding_other_files_is_refused_and_left_as_it_was(run_dir, tmp_path, capsys):
    # As reported: mkdir -p p/figures; echo x > p/figures/mine.svg; echo "# draft" > p/index.md
    p = tmp_path / "p"
    (p / "figures").mkdir(parents=True)
    (p / "figures" / "mine.svg").write_text("x\n")
    (p / "index.md").write_text("# draft\n")
    assert cli.main(["report", str(run_dir), "--out", str(p)]) == 2
    one_line_error(capsys, str(p), "figures/mine.svg", "holds files no report wrote")
    assert contents(p) == {"figures/mine.svg": b"x\n", "index.md": b"# draft\n"}
    assert sorted(q.name for q in p.iterdir()) == ["figures", "index.md"]  # no staging folder left


def test_rendering_again_replaces_only_the_reports_own_files(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["report", str(run_dir), "--out", str(out)]) == 0
    listed = set((out / MARKER).read_text().splitlines())
    assert {"index.md", "index.html", "figures/forest_0.png"} <= listed
    assert listed == set(contents(out)) - {MARKER}
    (out / "figures" / "mine.svg").write_text("mine\n")
    (out / "notes.md").write_text("# my notes\n")
    # The user's files beside the report stay whatever the report draws; a figure it no longer draws goes.
    run = json.loads((run_dir / "run.json").read_text())
    run["suite"]["claims"] = ["bidirectional_slow", "depth_helps"]
    (run_dir / "run.json").write_text(json.dumps(run))
    assert cli.main(["report", str(run_dir), "--out", str(out)]) == 0
    files = contents(out)
    assert files["figures/mine.svg"] == b"mine\n" and files["notes.md"] == b"# my notes\n"
    assert {"figures/forest_0.png", "figures/forest_1.png"} <= set(files)
    run["suite"]["claims"] = ["depth_helps"]
    (run_dir / "run.json").write_text(json.dumps(run))
    assert cli.main(["report", str(run_dir), "--out", str(out)]) == 0
    files = contents(out)
    assert "figures/forest_1.png" not in files and files["figures/mine.svg"] == b"mine\n" and "notes.md" in files
    assert set((out / MARKER).read_text().splitlines()) == set(files) - {MARKER, "figures/mine.svg", "notes.md"}


def test_a_file_the_report_did_not_write_is_not_replaced_by_a_new_figure(run_dir, tmp_path, capsys):
    out = build_report(run_dir, tmp_path / "out")
    assert not (out / "figures" / "forest_1.png").exists()
    (out / "figures" / "forest_1.png").write_bytes(b"the user's own\n")
    before = contents(out)
    run = json.loads((run_dir / "run.json").read_text())
    run["suite"]["claims"] = ["depth_helps", "bidirectional_slow"]
    (run_dir / "run.json").write_text(json.dumps(run))
    assert cli.main(["report", str(run_dir), "--out", str(out)]) == 2
    one_line_error(capsys, "figures/forest_1.png", "not written by a report")
    assert contents(out) == before


def test_a_report_folder_from_before_the_marker_is_the_reports_own(run_dir, tmp_path):
    out = build_report(run_dir, tmp_path / "out")
    (out / MARKER).unlink()
    assert owned_files(out) == set(contents(out))
    build_report(run_dir, out)
    assert (out / MARKER).is_file()
    # The committed reports re-render in place: each holds nothing but what a report writes.
    for name in COMMITTED_REPORTS:
        folder = ROOT / "report" / name
        assert owned_files(folder) == set(contents(folder)) - {MARKER}, name
    # A draft index.md beside report figures is not a report.
    (out / MARKER).unlink()
    (out / "index.md").write_text("# draft\n")
    with pytest.raises(Exception, match="holds files no report wrote"):
        owned_files(out)


def test_a_failed_write_is_one_line_and_the_report_there_stays_whole(run_dir, tmp_path, capsys, monkeypatch):
    out = build_report(run_dir, tmp_path / "out")
    before = contents(out)
    real = build.write_text_atomic

    def failing(path, text):
        if Path(path).name == "index.html":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(build, "write_text_atomic", failing)
    assert cli.main(["report", str(run_dir), "--out", str(out)]) == 2
    err = one_line_error(capsys, "No space left on device", str(out / "index.html"))
    assert ".report-" not in err  # the staging folder is not the user's to know
    assert contents(out) == before and sorted(q.name for q in out.iterdir()) == [MARKER, "figures", "index.html",
                                                                                 "index.md"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENAMETOOLONG, errno.ENOTDIR])
def test_each_failure_of_the_file_system_names_the_reports_path(tmp_path, code):
    out, stage = tmp_path / "out", tmp_path / "out" / ".report-x"
    with pytest.raises(HarnessError) as caught, publish.report_writes(out, stage):
        raise OSError(code, os.strerror(code), str(stage / "figures" / "forest_0.png"))
    assert str(caught.value) == f"report folder {out}: cannot write {out / 'figures' / 'forest_0.png'}: " \
                                f"{os.strerror(code)}"
    # A failure to read the run (outside the report's folder) is not a failed write, nor another error.
    for error in (OSError(code, "x", str(tmp_path / "run" / "cells.csv")), OSError(errno.EIO, "x", str(out))):
        with pytest.raises(OSError) as kept, publish.report_writes(out, stage):
            raise error
        assert kept.value is error


def test_a_full_disk_while_publishing_leaves_the_earlier_report_and_a_new_folder_nothing(run_dir, tmp_path, capsys,
                                                                                         monkeypatch):
    out = build_report(run_dir, tmp_path / "out")
    before = contents(out)

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write cut short names no file

    monkeypatch.setattr(publish, "write_text_atomic", full)
    assert cli.main(["report", str(run_dir), "--out", str(out)]) == 2
    one_line_error(capsys, "No space left on device", str(out))
    assert contents(out) == before
    fresh = tmp_path / "new" / "report"
    assert cli.main(["report", str(run_dir), "--out", str(fresh)]) == 2
    one_line_error(capsys, "No space left on device")
    assert not (tmp_path / "new").exists()


def test_a_runs_report_goes_beside_its_results_folder(tmp_path, monkeypatch):
    # `harness run --out /tmp/x/run` renders into default_out_dir(run folder): beside it, not in ./report/.
    assert default_out_dir(tmp_path / "x" / "run") == tmp_path / "x" / "run-report"
    assert default_out_dir(tmp_path / "results" / "quick-1") == tmp_path / "report" / "quick-1"
    monkeypatch.chdir(tmp_path)
    assert default_out_dir("results/quick-20250101-000000/") == Path("report/quick-20250101-000000")
    assert default_out_dir("x/run") == Path("x/run-report")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert default_out_dir("../x/run") == tmp_path / "x" / "run-report"
