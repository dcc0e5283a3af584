"""The grid runner end to end on CPU: outcomes, crash safety, resume, locking."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd

from harness.results.run_folder import RunDir

from conftest import REPO, TINY


def harness(*args, cwd, timeout=240):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def write_suite(tmp_path, body: str, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(TINY) + textwrap.dedent(body))
    return path


def test_smoke_suite_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = harness("run", REPO / "suites" / "smoke.yaml", "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 7 and cells["cell_id"].is_unique
    cuda = cells[cells["device"] == "cuda"]
    assert list(cuda["status"]) == ["skipped"] and "CUDA" in cuda["reason"].iloc[0]
    cpu = cells[cells["device"] == "cpu"]
    assert set(cpu["status"]) == {"ok"}
    assert set(zip(cpu["cell"], cpu["direction"])) == {(c, d) for c in ("rnn", "gru", "lstm") for d in ("uni", "bi")}
    assert (cpu["sec_per_epoch"] > 0).all() and (cpu["params"] > 0).all() and (cpu["train_ppl"] > 1).all()
    epochs = pd.read_csv(out / "epochs.csv")
    assert len(epochs) == 6 * 3 and epochs.groupby("cell_id")["epoch"].apply(list).map(lambda e: e == [1, 2, 3]).all()
    assert epochs.loc[epochs["epoch"] == 1, "warmup"].all() and not epochs.loc[epochs["epoch"] > 1, "warmup"].any()
    samples = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert len(samples) == 6 * 2 and all(t.startswith(p) for t, p in zip(samples["text"], samples["prefix"]))
    info = json.loads((out / "run.json").read_text())
    assert info["finished"] and info["suite"]["name"] == "smoke" and info["machine"]["torch"]
    # Every runtime dependency's version, beside python and torch.
    packages = info["machine"]["packages"]
    assert {"numpy", "pandas", "scipy", "pydantic", "matplotlib"} <= set(packages)
    assert all(packages[name] for name in ("numpy", "pandas", "scipy"))
    assert info["git"].keys() == {"commit", "dirty"} and info["command"][:3] == ["python", "-m", "harness"]
    assert len(info["corpus_sha256"]) == 1 and len(info["corpus_sha256"][0]) == 64
    # The no-learning baselines of the held-out text, ordered as they must be.
    baselines = info["baselines"]
    assert baselines["uniform"] > baselines["unigram"] > baselines["bigram"] > 1
    assert all((out / "logs" / f"{c}.log").exists() for c in cells["cell_id"])
    show = harness("show", out, cwd=tmp_path)
    assert show.returncode == 0 and "6 ok, 1 skipped" in show.stdout


def test_problem_cells_are_recorded_and_the_grid_goes_on(tmp_path):
    suite = write_suite(tmp_path, """
        matrix: {cell: [rnn, lstm]}
        include:
          - {cell: gru, lr: 1.0e+30}
          - {cell: gru, timeout: 0.5, epochs: 100000000}  # cannot finish in time, however fast the machine
          - {cell: gru, corpus: /nonexistent/corpus.txt}
    """)
    out = tmp_path / "run"
    proc = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    cells = pd.read_csv(out / "cells.csv").set_index("cell_id")
    status = cells["status"].to_dict()
    assert status["rnn-l1-uni-cpu-s0-corpusgutenberg-35-epochs2-lr1.0-timeout120.0"] == "ok"
    assert status["lstm-l1-uni-cpu-s0-corpusgutenberg-35-epochs2-lr1.0-timeout120.0"] == "ok"
    diverged = cells.loc["gru-l1-uni-cpu-s0-corpusgutenberg-35-epochs2-lr1e+30-timeout120.0"]
    assert diverged["status"] == "diverged" and "epoch" in diverged["reason"] and diverged["epochs_done"] >= 1
    timed_out = cells.loc["gru-l1-uni-cpu-s0-corpusgutenberg-35-epochs100000000-lr1.0-timeout0.5"]
    assert timed_out["status"] == "timeout" and "0.5" in timed_out["reason"]
    failed = cells.loc["gru-l1-uni-cpu-s0-corpusnonexistentcorpus.txt-epochs2-lr1.0-timeout120.0"]
    assert failed["status"] == "failed" and failed["reason"].startswith("exit code 2: error: corpus '/nonexistent")
    epochs = pd.read_csv(out / "epochs.csv")
    assert (epochs["cell_id"] == diverged.name).sum() == diverged["epochs_done"]


def test_retrain_trains_timed_out_cells_again_on_request_only(tmp_path):
    suite = write_suite(tmp_path, """
        matrix: {cell: [rnn]}
        include:
          - {cell: gru, timeout: 0.5, epochs: 100000000}  # times out again when trained again
          - {cell: lstm, lr: 1.0e+30}
    """)
    out = tmp_path / "run"
    assert harness("run", suite, "--out", out, "--no-report", cwd=tmp_path).returncode == 1
    records = {p.stem.split("-")[0]: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    assert {c: r["status"] for c, r in records.items()} == {"rnn": "ok", "gru": "timeout", "lstm": "diverged"}
    show = harness("show", out, cwd=tmp_path).stdout
    assert f"python -m harness run {suite} --resume {out} --retrain timeout" in show, show
    plain = harness("run", suite, "--resume", out, "--no-report", cwd=tmp_path)
    assert "3 of 3 cells already stored" in plain.stderr and "again" not in plain.stderr, plain.stderr
    retrain = harness("run", suite, "--resume", out, "--retrain", "timeout", "--no-report", cwd=tmp_path)
    assert retrain.returncode == 1, retrain.stderr
    assert "2 of 3 cells already stored; training the 1 timed-out ones again" in retrain.stderr, retrain.stderr
    after = {p.stem.split("-")[0]: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    info = json.loads((out / "run.json").read_text())
    # Trained again in the third part (the record names the part it ran in); the others kept as they were.
    assert after["gru"]["status"] == "timeout" and after["gru"]["run"]["part"]["command"] == info["resumes"][1]["command"]
    assert after["rnn"] == records["rnn"] and after["lstm"] == records["lstm"]
    assert len(pd.read_csv(out / "cells.csv")) == 3
    both = harness("run", suite, "--resume", out, "--retrain", "diverged,timeout", "--no-report", cwd=tmp_path)
    assert "1 of 3 cells already stored; training the 2 timed-out or diverged ones again" in both.stderr, both.stderr
    bad = harness("run", suite, "--resume", out, "--retrain", "failed", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --retrain 'failed': 'failed' is not one of timeout, diverged (failed cells are always trained again)"]


def test_sigkill_then_resume_trains_each_cell_exactly_once(tmp_path):
    # The last cell cannot finish, so the kill lands while a cell is in flight however fast or slow the
    # machine (its process dies with the runner); the resume then completes the other two.
    suite = write_suite(tmp_path, "matrix: {cell: [rnn, gru]}\ninclude:\n  - {cell: lstm, epochs: 100000000}\n")
    out = tmp_path / "run"
    runner = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--out", str(out), "--no-report"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "cells").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    stored = {p.stem for p in (out / "cells").glob("*.json")}
    assert 1 <= len(stored) <= 2 and not any(s.startswith("lstm") for s in stored)
    # Whatever is on disk is whole: tables parse and hold only finished cells.
    if (out / "cells.csv").exists():
        assert set(pd.read_csv(out / "cells.csv")["cell_id"]) <= stored
    proc = harness("run", suite, "--resume", out, "--only", "cell=rnn,gru", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(stored)} of 2 cells already stored" in proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert "--resume" not in info["command"] and "--resume" in info["resumes"][0]["command"]
    cells = pd.read_csv(out / "cells.csv")
    assert sorted(cells["cell_id"]) == sorted(f"{c}-l1-uni-cpu-s0-epochs2" for c in ("rnn", "gru"))
    epochs = pd.read_csv(out / "epochs.csv")
    assert len(epochs) == 2 * 2 and not epochs.duplicated(["cell_id", "epoch"]).any()
    # Running again changes nothing: no duplicates, no retraining.
    again = harness("run", suite, "--out", out, "--only", "cell=rnn,gru", "--no-report", cwd=tmp_path)
    assert again.returncode == 0 and "2 of 2 cells already stored" in again.stderr
    assert len(pd.read_csv(out / "cells.csv")) == 2


def test_sigusr1_lets_the_cell_in_flight_finish_and_starts_no_other(tmp_path):
    suite = write_suite(tmp_path, "matrix: {cell: [rnn, gru, lstm]}\n")
    out = tmp_path / "run"
    log = tmp_path / "runner.log"
    with open(log, "w") as stderr:
        runner = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--out", str(out),
                                   "--no-report"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    # A cell's log is opened as it starts: the signal lands while the first cell (rnn) trains.
    deadline = time.monotonic() + 120
    while not list((out / "logs").glob("*.log")) and time.monotonic() < deadline and runner.poll() is None:
        time.sleep(0.05)
    assert runner.poll() is None and list((out / "logs").glob("*.log")), "no cell started: " + log.read_text()
    os.kill(runner.pid, signal.SIGUSR1)
    assert runner.wait(timeout=120) == 130, log.read_text()
    message = log.read_text()
    assert "SIGUSR1: finishing the cells in flight" in message
    assert f"stopped after the cells in flight; 2 cells not trained; finished cells are stored in {out}" in message
    cells = pd.read_csv(out / "cells.csv")
    assert list(cells["cell_id"]) == ["rnn-l1-uni-cpu-s0"] and list(cells["status"]) == ["ok"]
    assert {p.stem for p in (out / "cells").glob("*.json")} == {"rnn-l1-uni-cpu-s0"}
    proc = harness("run", suite, "--resume", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0 and "1 of 3 cells already stored" in proc.stderr, proc.stderr
    assert sorted(pd.read_csv(out / "cells.csv")["cell_id"]) == sorted(
        f"{c}-l1-uni-cpu-s0" for c in ("rnn", "gru", "lstm"))


def test_a_drain_asked_during_the_set_up_trains_nothing(tmp_path):
    import threading

    import pytest

    from harness.grid.runner import HarnessDrained, run_suite
    from harness.spec.suite import expand, load_suite

    suite = load_suite(write_suite(tmp_path, "matrix: {cell: [rnn, gru]}\n"))
    drain = threading.Event()
    drain.set()
    with pytest.raises(HarnessDrained, match="2 cells not trained"):
        run_suite(suite, expand(suite), tmp_path / "run", ["test"], calibrate=False, drain=drain)
    assert not list((tmp_path / "run" / "cells").glob("*.json")) and (tmp_path / "run" / "run.json").exists()


def test_resume_refuses_a_changed_suite_and_a_second_writer(tmp_path):
    suite = write_suite(tmp_path, "matrix: {cell: [rnn]}\n")
    out = tmp_path / "run"
    assert harness("run", suite, "--out", out, "--no-report", cwd=tmp_path).returncode == 0
    before = (out / "cells.csv").read_bytes()
    changed = harness("run", suite, "--out", out, "--set", "train.epochs=3", cwd=tmp_path)
    assert changed.returncode == 2 and "the suite's cells changed (train.epochs 2 -> 3)" in changed.stderr
    assert changed.stderr.count("\n") == 1
    assert (out / "cells.csv").read_bytes() == before
    holder = RunDir(out)
    holder.lock()
    second = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert second.returncode == 2 and "another run is writing" in second.stderr
    assert (out / "cells.csv").read_bytes() == before


def test_dry_run_lists_cells_with_estimates(tmp_path):
    proc = harness("run", REPO / "suites" / "full.yaml", "--dry-run", "--only", "cell=lstm", "--only", "seed=0",
                   cwd=tmp_path)
    assert proc.returncode == 0
    assert "16 cells" in proc.stdout and "estimate" in proc.stdout
    assert not (tmp_path / "results").exists()


def test_bad_inputs_to_cell_and_show_are_one_line_exit_2(tmp_path, capsys):
    from harness.cli import main

    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{oops")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("[]")
    for argv, fragment in [
        (["cell", "--config-json", str(tmp_path / "missing.json")], "cannot read"),
        (["cell", "--config-json", str(tmp_path / "broken.json")], "invalid JSON at line 1"),
        (["cell", "--config-json", str(tmp_path / "list.json")], "expected a JSON object"),
        (["show", str(run)], "not a run description"),
        (["show", str(tmp_path / "nowhere")], "not a run folder"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, err


def test_cell_json_is_strict_json_for_a_diverged_cell(tmp_path):
    proc = harness("cell", "--hidden", 8, "--layers", 1, "--epochs", 2, "--max-tokens", 1500, "--val-tokens", 200,
                   "--lr", "1e30", "--json", cwd=tmp_path)
    assert proc.returncode == 1  # diverged is a problem outcome

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    record = json.loads(proc.stdout, parse_constant=reject)
    assert record["status"] == "diverged" and record["train_ppl"] is None


def test_a_reader_that_goes_away_stops_show_quietly(tmp_path):
    from fixtures import make_run_folder

    run_dir = make_run_folder(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "show", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.close()  # as `| head -0` would: the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_the_recorded_command_names_paths_inside_a_repository_relative_to_it(tmp_path):
    from harness.grid.runner import portable_command

    (tmp_path / "repo" / ".git").mkdir(parents=True)
    out = tmp_path / "repo" / "results" / "study"
    elsewhere = tmp_path / "scratch"
    assert portable_command(["python", "-m", "harness", "run", "suites/s.yaml", "--out", str(out),
                             f"--resume={out}", "--timings", str(elsewhere), "--set", "train.lr=0.5"]) == [
        "python", "-m", "harness", "run", "suites/s.yaml", "--out", "results/study", "--resume=results/study",
        "--timings", str(elsewhere), "--set", "train.lr=0.5"]


def test_a_run_on_two_training_texts_records_the_baselines_of_each(tmp_path):
    suite = write_suite(tmp_path, """
        matrix: {cell: [gru], train_text: [first, book]}
    """)
    out = tmp_path / "run"
    proc = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "run.json").read_text())
    first, (book,) = info["baselines"], info["text_baselines"]
    assert book["train_text"] == "book" and book["max_tokens"] == 1500 and book["val_tokens"] == 200
    # Scored on the same held-out characters; the book's n-gram models know far more text.
    assert book["baselines"]["tokens"] == first["tokens"] == 200
    assert book["baselines"]["6-gram"] < first["6-gram"]
