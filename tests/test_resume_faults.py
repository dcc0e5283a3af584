"""Resuming and re-running into a run folder, at the faults a user met: a text edited between the parts, hints
that dropped the run's flags, a lost run.json, SIGINT in a background job, a folder deleted under its writer,
and what a run prints when it resumes or stops as asked."""

import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time

from harness.cell.corpus import resolve_corpus
from harness.grid.runner import OpenRun, start_progress
from harness.results.run_folder import RunDir
from harness.spec.suite import expand, load_suite

from conftest import TINY

PROG = "python -m harness"  # how the runs below are called, as run.json records it


def harness(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def run_printed(command: str, cwd):
    """Run a command as the harness printed it (``python -m harness ...``) with this interpreter."""
    words = shlex.split(command)
    assert words[:3] == PROG.split(), command
    return harness(*words[3:], cwd=cwd)


def write_suite(tmp_path, body: str = "", name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(TINY) + textwrap.dedent(body))
    return path


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def start_runner(*args, cwd, log, **popen):
    with open(log, "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "harness", *map(str, args)], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=stderr, **popen)


def wait_for_a_cell(runner, out, log):
    """Until the first cell's process started (its log is opened as it starts)."""
    deadline = time.monotonic() + 120
    while not list((out / "logs").glob("*.log")) and time.monotonic() < deadline and runner.poll() is None:
        time.sleep(0.05)
    assert runner.poll() is None and list((out / "logs").glob("*.log")), "no cell started: " + log.read_text()


def test_a_run_into_a_folder_of_another_text_is_refused_naming_the_file(tmp_path):
    """Fault 2: the cells of one selection trained, the corpus file edited, the rest run into the same folder."""
    text = tmp_path / "x.txt"
    shutil.copyfile(resolve_corpus("gutenberg-35"), text)
    suite = write_suite(tmp_path, "matrix: {direction: [uni, bi]}\n")
    out = tmp_path / "M"
    first = harness("run", suite, "--set", f"data.corpus={text}", "--only", "direction=uni", "--out", out,
                    "--no-report", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with open(text, "a") as extra:
        extra.write("\nA line added after the first part had trained.\n")
    before = snapshot(out)
    again = harness("run", suite, "--set", f"data.corpus={text}", "--out", out, "--no-report", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith("error: ") and f"corpus file {text} changed" in again.stderr, again.stderr
    assert snapshot(out) == before  # nothing written
    resumed = harness("run", suite, "--set", f"data.corpus={text}", "--resume", out, "--no-report", cwd=tmp_path)
    assert resumed.returncode == 2 and f"corpus file {text} changed" in resumed.stderr, resumed.stderr


def test_the_retrain_hint_works_as_printed_and_takes_a_new_timeout(tmp_path):
    """Fault 7: the hint keeps the run's --set flags; a raised run.timeout is what --retrain timeout is for."""
    suite = write_suite(tmp_path, "matrix: {cell: [rnn]}\n")
    out = tmp_path / "T"
    first = harness("run", suite, "--set", "run.timeout=2", "--set", "train.epochs=100000000", "--out", out,
                    "--no-report", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    show = harness("show", out, cwd=tmp_path).stdout
    hint = show.split("to train them again: ", 1)[1].splitlines()[0]
    assert hint == shlex.join([*PROG.split(), "run", str(suite), "--resume", str(out), "--retrain", "timeout",
                               "--set", "run.timeout=2", "--set", "train.epochs=100000000", "--no-report"]), show
    as_printed = run_printed(hint, cwd=tmp_path)
    assert as_printed.returncode == 1, as_printed.stderr
    assert "0 of 1 cells already stored; training the 1 timed-out ones again" in as_printed.stderr
    raised = run_printed(hint.replace("run.timeout=2", "run.timeout=3"), cwd=tmp_path)
    assert raised.returncode == 1 and "training the 1 timed-out ones again" in raised.stderr, raised.stderr
    (record,) = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert record["status"] == "timeout" and record["config"]["timeout"] == 3
    assert json.loads((out / "run.json").read_text())["suite"]["defaults"]["timeout"] == 3
    # Without --retrain timeout a new timeout would leave the timed-out cells as they were: refused, saying so.
    plain = harness("run", suite, "--set", "run.timeout=4", "--set", "train.epochs=100000000", "--resume", out,
                    cwd=tmp_path)
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1, plain.stderr
    assert "(run.timeout 3 -> 4)" in plain.stderr and "taken with --retrain timeout" in plain.stderr


def test_resume_dir_recovers_what_out_dir_recovers(tmp_path):
    """Fault 8: a folder whose run.json is lost is continued by --resume DIR as by --out DIR."""
    suite = write_suite(tmp_path, "matrix: {cell: [rnn]}\n")
    out = tmp_path / "lost"
    assert harness("run", suite, "--out", out, "--no-report", cwd=tmp_path).returncode == 0
    (out / "run.json").unlink()
    resumed = harness("run", suite, "--resume", out, "--no-report", cwd=tmp_path)
    assert resumed.returncode == 0 and "1 of 1 cells already stored" in resumed.stderr, resumed.stderr
    assert json.loads((out / "run.json").read_text())["recovered"]["records"] == 1
    # Stopped while it calibrated: the folder and its lock made, run.json not yet written.
    early = tmp_path / "early"
    (early / "cells").mkdir(parents=True)
    (early / ".lock").write_text("pid 1")
    started = harness("run", suite, "--resume", early, "--no-report", cwd=tmp_path)
    assert started.returncode == 0 and len(list((early / "cells").glob("*.json"))) == 1, started.stderr
    (tmp_path / "empty").mkdir()
    for folder in ("empty", "absent"):
        refused = harness("run", suite, "--resume", tmp_path / folder, cwd=tmp_path)
        assert refused.returncode == 2 and "not a run folder" in refused.stderr, refused.stderr


def test_sigint_stops_a_run_started_with_sigint_ignored(tmp_path):
    """Fault 10a: a shell starts background jobs with SIGINT ignored; the run still stops on it, resumably."""
    suite = write_suite(tmp_path, "matrix: {cell: [rnn, gru]}\n")
    out, log = tmp_path / "bg", tmp_path / "runner.log"
    runner = start_runner("run", suite, "--set", "train.epochs=100000000", "--out", out, "--no-report",
                          cwd=tmp_path, log=log, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for_a_cell(runner, out, log)
        os.kill(runner.pid, signal.SIGINT)
        code = runner.wait(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    message = log.read_text()
    assert code == 130, message
    command = shlex.join([*PROG.split(), "run", str(suite), "--resume", str(out), "--set", "train.epochs=100000000",
                          "--no-report"])
    assert message.strip().splitlines()[-1].endswith(f"continue with --resume {out}: {command}"), message
    assert json.loads((out / "run.json").read_text())["cells"] and not list((out / "cells").glob("*.json"))
    assert harness("show", out, cwd=tmp_path).returncode == 0


def test_a_second_writer_is_refused_after_the_folder_is_deleted(tmp_path):
    """Fault 10b: the lock survives the folder's deletion under its writer."""
    suite = write_suite(tmp_path, "matrix: {cell: [rnn]}\n")
    out = tmp_path / "gone"
    holder = RunDir(out)
    holder.lock()
    shutil.rmtree(out)
    second = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"{out}: another run is writing into this folder (pid {os.getpid()})" in second.stderr
    assert not out.exists()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_resuming_line_is_printed_before_the_progress_bar(tmp_path):
    suite = load_suite(write_suite(tmp_path, "matrix: {cell: [rnn, gru]}\n"))
    cells = expand(suite)
    run = OpenRun(RunDir(tmp_path / "run"), {}, True, "", set(), {cells[0].cell_id: {"status": "ok"}}, set(),
                  cells[1:])
    stream = Terminal()
    progress = start_progress(suite, cells, run, "local", stream)
    progress.close()
    # The bar redraws its line with a carriage return: the lines before it must be whole ones.
    shown = stream.getvalue()
    assert shown.startswith(f"resuming {tmp_path / 'run'}: 1 of 2 cells already stored\n"), shown
    assert "\r" not in shown.split("\n", 2)[0] + shown.split("\n", 2)[1]


def test_a_requested_stop_is_no_error_and_prints_the_resume_command(tmp_path):
    suite = write_suite(tmp_path, "matrix: {cell: [rnn, gru]}\n")
    out, log = tmp_path / "drained", tmp_path / "runner.log"
    runner = start_runner("run", suite, "--only", "cell=rnn,gru", "--out", out, "--no-report", cwd=tmp_path, log=log)
    try:
        wait_for_a_cell(runner, out, log)
        os.kill(runner.pid, signal.SIGUSR1)
        code = runner.wait(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    last = log.read_text().strip().splitlines()[-1]
    assert code == 130, log.read_text()
    command = shlex.join([*PROG.split(), "run", str(suite), "--resume", str(out), "--only", "cell=rnn,gru",
                          "--no-report"])
    assert last == (f"as asked, stopped after the cells in flight; 1 cell not trained; finished cells are stored "
                    f"in {out}; continue with: {command}"), last
    resumed = run_printed(command, cwd=tmp_path)
    assert resumed.returncode == 0 and "1 of 2 cells already stored" in resumed.stderr, resumed.stderr
