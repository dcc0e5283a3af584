"""Writes that the machine refuses (a full disk, a read-only or forbidden folder, a name too long): one line
naming the path, exit 2, no traceback, nothing half-written; and cells whose ids are too long for a file
name."""

import errno
import json
import os
import textwrap
from pathlib import Path

import pytest

from harness import cli
from harness.errors import HarnessError, WriteError
from harness.results import atomic
from harness.results.atomic import write_json_atomic, write_text_atomic
from harness.results.run_folder import CHECKPOINTS, RunDir, cell_file_name, read_records

from conftest import REPO, TINY

REFUSED = [errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EROFS, errno.ENOTDIR, errno.EACCES]


def refuse_replace(monkeypatch, under: Path, code: int = errno.ENOSPC):
    """os.replace fails with ``code`` for every file it would put under ``under``, as on a full disk: the
    last step of an atomic write, after the data was written to the temporary file."""
    real = os.replace
    under = Path(under).resolve()

    def replace(src, dst, *args, **kwargs):
        if under == Path(dst).resolve() or under in Path(dst).resolve().parents:
            raise OSError(code, os.strerror(code))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "replace", replace)


def stray_files(folder: Path) -> list[Path]:
    """What an interrupted write would leave: temporary files of atomic writes."""
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp")]


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


# --- the mechanism -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", REFUSED, ids=[errno.errorcode[c] for c in REFUSED])
def test_a_refused_write_is_one_line_and_leaves_the_file_as_it_was(tmp_path, monkeypatch, code):
    path = tmp_path / "out" / "cells.csv"
    write_text_atomic(path, "old\n")
    refuse_replace(monkeypatch, tmp_path / "out", code)
    with pytest.raises(WriteError) as error:
        write_text_atomic(path, "new\n")
    message = str(error.value)
    assert isinstance(error.value, HarnessError) and isinstance(error.value, OSError)
    assert error.value.errno == code and "\n" not in message and "[Errno" not in message
    assert message == f"cannot write {path}: {os.strerror(code)} (nothing was left half-written)"
    assert path.read_text() == "old\n" and not stray_files(tmp_path)


def test_real_refusals_name_the_path(tmp_path):
    """Without any stand-in: a name over the file system's limit, a folder that is a file."""
    long_name = tmp_path / ("x" * 300 + ".json")
    with pytest.raises(WriteError, match=f"cannot write {long_name}: File name too long"):
        write_json_atomic(long_name, {})
    (tmp_path / "plain").write_text("")
    with pytest.raises(WriteError, match="plain/run.json: Not a directory"):
        write_json_atomic(tmp_path / "plain" / "run.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_other_os_errors_are_not_dressed_as_input_errors(tmp_path, monkeypatch):
    refuse_replace(monkeypatch, tmp_path, errno.EIO)  # a failing disk is not the user's to fix with a path
    with pytest.raises(OSError) as error:
        write_text_atomic(tmp_path / "a.txt", "x")
    assert not isinstance(error.value, HarnessError) and error.value.errno == errno.EIO


def test_the_command_line_turns_a_stray_refused_write_into_one_line(monkeypatch, capsys):
    """The last line of defence, for a write that does not go through results.atomic."""
    from harness.commands import list as list_command

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/figure.png")

    monkeypatch.setattr(list_command, "main", full_disk)
    assert cli.main(["list", str(REPO / "suites" / "smoke.yaml")]) == 2
    assert capsys.readouterr().err == "error: /data/out/figure.png: No space left on device\n"

    def broken(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(list_command, "main", broken)
    with pytest.raises(OSError):  # a bug or a failing disk keeps its traceback
        cli.main(["list", str(REPO / "suites" / "smoke.yaml")])


# --- item: a full disk in `harness run` and `harness report` ------------------------------------------


def test_run_on_a_full_disk_stops_with_one_line(tmp_path, monkeypatch, capsys):
    """The cell trains; storing its record finds the disk full."""
    out = tmp_path / "run"
    refuse_replace(monkeypatch, out / "cells")
    code = cli.main(["run", str(REPO / "suites" / "smoke.yaml"), "--only", "cell=rnn", "--only", "direction=uni",
                     "--set", "train.epochs=1", "--set", "run.threads=1", "--out", str(out), "--no-report"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (f"error: cannot write {out / 'cells' / 'rnn-l1-uni-cpu-s0.json'}: No space left on device "
                        "(nothing was left half-written)")
    assert not stray_files(out) and list((out / "cells").iterdir()) == []
    json.loads((out / "run.json").read_text())  # what was written before is whole


def test_report_on_a_full_disk_stops_with_one_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    refuse_replace(monkeypatch, out)
    code = cli.main(["report", str(REPO / "results" / "example"), "--out", str(out)])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert str(out) in lines[0] and "No space left on device" in lines[0]
    assert not stray_files(tmp_path)
    assert not (out / "index.md").exists() and not (out / "index.html").exists()


# --- item: cell ids too long for a file name ---------------------------------------------------------


def test_cell_file_names_stay_short_and_distinct():
    short = "lstm-l2-bi-cpu-s0-precisionbf16"
    assert cell_file_name(short) == short  # the names every existing run folder uses
    long_a, long_b = "gru-l1-uni-cpu-s0-prefixes" + "a" * 300, "gru-l1-uni-cpu-s0-prefixes" + "a" * 299 + "b"
    name = cell_file_name(long_a)
    assert len(name) == 80 + 1 + 12 and name.startswith(long_a[:80])
    assert cell_file_name(long_b) != name and cell_file_name(long_a) == name


def test_records_are_read_by_their_cell_id(tmp_path):
    """A long id's record is read under its id, not its file's name; a record without the field, or one
    whose field names another file (a copied record), keeps its file's name, as before."""
    long_id = "rnn-l1-uni-cpu-s0-prefixes" + "q" * 200
    cells = tmp_path / "cells"
    cells.mkdir()
    for name, record in [(cell_file_name(long_id), {"status": "ok", "cell_id": long_id}),
                         ("gru-l1-uni-cpu-s0", {"status": "ok", "cell_id": "gru-l1-uni-cpu-s0"}),
                         ("old-record", {"status": "ok"}),
                         ("copied", {"status": "ok", "cell_id": "lstm-l1-uni-cpu-s0"})]:
        (cells / f"{name}.json").write_text(json.dumps(record))
    records, damaged = read_records(tmp_path)
    assert sorted(records) == sorted([long_id, "gru-l1-uni-cpu-s0", "old-record", "copied"]) and not damaged


def test_a_checkpoint_is_listed_under_its_cell_id(tmp_path):
    long_id = "rnn-l1-uni-cpu-s0-prefixes" + "q" * 200
    run_dir = RunDir(tmp_path)
    write_json_atomic(run_dir.run_json, {"suite": {"name": "t"}, "cells": [long_id]})
    path = run_dir.checkpoint_path(long_id)
    assert path.parent == tmp_path / CHECKPOINTS and len(path.name) < 100
    path.parent.mkdir()
    path.write_bytes(b"")
    write_json_atomic(path.with_suffix(".json"), {"epoch": 1})
    assert run_dir.checkpoints() == {long_id: {"epoch": 1}}


def test_a_run_with_a_300_character_matrix_value(tmp_path, capsys):
    suite = tmp_path / "long.yaml"
    suite.write_text(textwrap.dedent(TINY) + f"matrix: {{prefixes: [['{'a' * 300}'], ['b']]}}\n")
    out = tmp_path / "run"
    assert cli.main(["run", str(suite), "--set", "train.epochs=1", "--out", str(out), "--no-report"]) == 0
    contents = RunDir(out).read()
    long_id = next(c for c in contents.records if len(c) > 300)
    assert long_id.endswith("prefixes" + "a" * 300) and len(contents.records) == 2 and not contents.damaged
    assert contents.records[long_id]["status"] == "ok" and not contents.notes
    assert all(len(p.name) < 110 for p in out.rglob("*"))
    assert (out / "logs" / f"{cell_file_name(long_id)}.log").exists()
    capsys.readouterr()
    assert cli.main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert long_id in shown and "2 ok" in shown and "pending" not in shown
