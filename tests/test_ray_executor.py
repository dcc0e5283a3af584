"""The Ray executor: placement decisions on literal clusters, then real runs on a local Ray instance
(2 CPUs, no dashboard) started once for this file. Skipped as a whole without Ray; what the command line
says without Ray is tested in test_executor_choice.py."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import psutil
import pytest

# A test cluster listens and advertises on loopback only (Ray otherwise picks the machine's address);
# Ray reads this when it is first imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")

from harness import cli  # noqa: E402
from harness.spec.config import CellConfig  # noqa: E402
from harness.host.machine import cpu_model  # noqa: E402
from harness.grid.ray_executor import (  # noqa: E402
    Node, RayExecutor, checkpoint_for, choose_node, cluster_nodes, resource_request, submission_order,
    unservable_reason)
from harness.results.run_folder import RunDir  # noqa: E402
from harness.grid.runner import run_suite  # noqa: E402
from harness.results.tables import node_label  # noqa: E402
from harness.spec.suite import GridCell, expand, load_suite  # noqa: E402

from conftest import REPO, TINY  # noqa: E402


def grid_cell(**keys) -> GridCell:
    config = CellConfig(**keys)
    return GridCell(config.cell_id, config, {})


BIG = Node("n-big", "big", cpus=16)
SMALL = Node("n-small", "small", cpus=2)
GPU = Node("n-gpu", "gpu", cpus=8, gpus=2)


def test_a_cell_keeps_a_checkpoint_in_the_run_folder_only_on_the_drivers_machine(tmp_path, monkeypatch):
    cell = grid_cell()
    monkeypatch.chdir(tmp_path)
    run_dir = RunDir("run")  # as --out gives it: relative to the driver's working folder
    assert checkpoint_for(run_dir, cell, BIG, driver_hostname="big") == str(tmp_path / "run" / ".checkpoints" /
                                                                             f"{cell.cell_id}.pt")
    assert checkpoint_for(run_dir, cell, SMALL, driver_hostname="big") is None  # cannot reach the folder


# --- placement on literal clusters --------------------------------------------------------------------


def test_cluster_nodes_keeps_alive_nodes_in_a_stable_order():
    raw = [
        {"NodeID": "b", "Alive": True, "NodeManagerHostname": "zeta", "Resources": {"CPU": 4.0, "GPU": 1.0}},
        {"NodeID": "a", "Alive": False, "NodeManagerHostname": "alpha", "Resources": {"CPU": 8.0}},
        {"NodeID": "c", "Alive": True, "NodeManagerHostname": "beta", "Resources": {"CPU": 2.0}},
    ]
    assert cluster_nodes(raw) == [Node("c", "beta", 2.0, 0.0), Node("b", "zeta", 4.0, 1.0)]


def test_resource_requests_take_whole_nodes_for_cpu_cells_unless_shared():
    cpu = grid_cell(device="cpu", threads=2)
    assert resource_request(cpu, BIG, exclusive_nodes=True) == {"num_cpus": 16, "num_gpus": 0}
    assert resource_request(cpu, BIG, exclusive_nodes=False) == {"num_cpus": 2, "num_gpus": 0}
    # Unset threads: torch uses every core, so even a shared run gives the cell its node.
    assert resource_request(grid_cell(device="cpu"), BIG, exclusive_nodes=False) == {"num_cpus": 16, "num_gpus": 0}
    assert resource_request(grid_cell(device="cuda", threads=3), GPU, True) == {"num_cpus": 3, "num_gpus": 1}
    assert resource_request(grid_cell(device="cuda"), GPU, True) == {"num_cpus": 1, "num_gpus": 1}


def test_cells_no_node_can_serve_are_named_with_the_reason():
    assert "no node of the Ray cluster has a GPU" in unservable_reason(grid_cell(device="cuda"), [BIG, SMALL])
    assert unservable_reason(grid_cell(device="cuda"), [BIG, GPU]) is None
    assert "largest: 8" in unservable_reason(grid_cell(device="cuda", threads=12), [BIG, GPU])
    assert "run.threads = 32" in unservable_reason(grid_cell(device="cpu", threads=32), [BIG, SMALL])
    assert unservable_reason(grid_cell(device="cpu", threads=16), [BIG, SMALL]) is None
    assert "no alive node" in unservable_reason(grid_cell(device="cpu"), [])


def test_exclusive_cpu_cells_wait_for_an_idle_node():
    cell = grid_cell(device="cpu", threads=2)
    nodes = [BIG, SMALL]
    assert choose_node(cell, nodes, {}, True) == (BIG, {"num_cpus": 16, "num_gpus": 0})
    # A CUDA cell's single CPU on the big node is enough to keep a timed cell off it.
    assert choose_node(cell, nodes, {"n-big": {"num_cpus": 1, "num_gpus": 0}}, True) == (
        SMALL, {"num_cpus": 2, "num_gpus": 0})
    busy = {"n-big": {"num_cpus": 16, "num_gpus": 0}, "n-small": {"num_cpus": 2, "num_gpus": 0}}
    assert choose_node(cell, nodes, busy, True) is None
    # GPU nodes are kept for CUDA cells while a node without a GPU is free, and used when none is.
    assert choose_node(cell, [GPU, SMALL], {}, True)[0] == SMALL
    assert choose_node(cell, [GPU, SMALL], {"n-small": {"num_cpus": 2, "num_gpus": 0}}, True)[0] == GPU
    # A node with fewer CPUs than the cell's threads is never chosen, even when idle.
    assert choose_node(grid_cell(device="cpu", threads=4), [SMALL], {}, True) is None


def test_shared_nodes_pack_cells_by_their_threads():
    cell = grid_cell(device="cpu", threads=2)
    assert choose_node(cell, [SMALL], {"n-small": {"num_cpus": 0, "num_gpus": 0}}, False)[0] == SMALL
    assert choose_node(cell, [BIG], {"n-big": {"num_cpus": 14, "num_gpus": 0}}, False)[0] == BIG
    assert choose_node(cell, [BIG], {"n-big": {"num_cpus": 15, "num_gpus": 0}}, False) is None


def test_cells_are_submitted_seed_by_seed_longest_first():
    cells = [grid_cell(cell=c, layers=n, seed=s) for s in (1, 0) for c in ("rnn", "lstm") for n in (1, 4)]
    estimates = {"rnn-l1-uni-cpu-s0": 40, "rnn-l4-uni-cpu-s0": 190, "lstm-l1-uni-cpu-s0": 95,
                 "lstm-l4-uni-cpu-s0": 510, "rnn-l1-uni-cpu-s1": 40, "rnn-l4-uni-cpu-s1": 190,
                 "lstm-l1-uni-cpu-s1": 95, "lstm-l4-uni-cpu-s1": 510}
    assert [c.cell_id for c in submission_order(cells, estimates)] == [
        "lstm-l4-uni-cpu-s1", "rnn-l4-uni-cpu-s1", "lstm-l1-uni-cpu-s1", "rnn-l1-uni-cpu-s1",
        "lstm-l4-uni-cpu-s0", "rnn-l4-uni-cpu-s0", "lstm-l1-uni-cpu-s0", "rnn-l1-uni-cpu-s0"]
    # Without estimates (none known yet): the grid's own order.
    assert submission_order(cells, {}) == cells
    # Cells that go on from a checkpoint come first, whatever their seed and however little they have left.
    started = {"rnn-l1-uni-cpu-s0", "lstm-l1-uni-cpu-s1"}
    assert [c.cell_id for c in submission_order(cells, estimates, started)][:3] == [
        "lstm-l1-uni-cpu-s1", "rnn-l1-uni-cpu-s0", "lstm-l4-uni-cpu-s1"]


def test_cuda_cells_take_one_free_gpu():
    cell = grid_cell(device="cuda", threads=1)
    assert choose_node(cell, [BIG, GPU], {}, True) == (GPU, {"num_cpus": 1, "num_gpus": 1})
    assert choose_node(cell, [GPU], {"n-gpu": {"num_cpus": 1, "num_gpus": 1}}, True)[0] == GPU
    assert choose_node(cell, [GPU], {"n-gpu": {"num_cpus": 2, "num_gpus": 2}}, True) is None
    # An exclusive CPU cell holding all CPUs of the GPU node keeps CUDA cells off it too.
    assert choose_node(cell, [GPU], {"n-gpu": {"num_cpus": 8, "num_gpus": 0}}, True) is None


def test_cuda_cells_share_a_gpu_when_asked():
    cell = grid_cell(device="cuda", threads=1)
    assert resource_request(cell, GPU, True, cells_per_gpu=4) == {"num_cpus": 1, "num_gpus": 0.25}
    in_use: dict = {}
    placed = []
    wide = Node("n-wide", "wide", cpus=16, gpus=2)
    for _ in range(9):  # 16 CPUs, but 2 GPUs x 4 cells: the ninth waits for a GPU share
        choice = choose_node(cell, [wide], in_use, True, cells_per_gpu=4)
        if choice is None:
            break
        node, request = choice
        held = in_use.setdefault(node.node_id, {"num_cpus": 0.0, "num_gpus": 0.0})
        for key, value in request.items():
            held[key] += value
        placed.append(node)
    assert len(placed) == 8 and in_use["n-wide"] == {"num_cpus": 8, "num_gpus": 2}
    assert RayExecutor(cells_per_gpu=4).name == "ray-shared" and RayExecutor().name == "ray"


@pytest.mark.parametrize("args, message", [
    (["--cells-per-gpu", "4"], "--cells-per-gpu needs --executor ray"),
    (["--executor", "ray", "--cells-per-gpu", "0"], "--cells-per-gpu 0: must be 1 or more"),
])
def test_bad_cells_per_gpu_is_one_line_exit_2(tmp_path, capsys, args, message):
    code = cli.main(["run", str(REPO / "suites" / "smoke.yaml"), "--out", str(tmp_path / "run"), *args])
    assert code == 2 and capsys.readouterr().err.strip().endswith(message)
    assert not (tmp_path / "run").exists()


# --- a real local Ray instance ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()



def write_suite(tmp_path, body: str):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY) + textwrap.dedent(body))
    return path


def this_node() -> str:
    return node_label({"hostname": socket.gethostname(), "cpu_model": cpu_model(), "gpu_name": None})


def test_smoke_suite_gives_the_local_executors_cells_and_outcomes(tmp_path, ray_address):
    # Shrunk to keep the test short: one cell type (both directions, plus the CUDA cell), one epoch, one
    # thread per cell and shared nodes, so two cells run at a time on the 2-CPU instance (whole-node
    # placement is exercised by the tests below).
    suite = load_suite(REPO / "suites" / "smoke.yaml", ["model.cell=gru", "train.epochs=1", "run.threads=1"])
    cells = expand(suite)
    local_code, local_dir = run_suite(suite, cells, tmp_path / "local", ["test"], calibrate=False)
    ray_code, ray_dir = run_suite(suite, cells, tmp_path / "ray", ["test"],
                                  executor=RayExecutor(exclusive_nodes=False), calibrate=False)
    assert ray.is_initialized()  # an existing connection is used, and left open
    assert (local_code, ray_code) == (0, 0)
    local = pd.read_csv(local_dir / "cells.csv").set_index("cell_id")
    remote = pd.read_csv(ray_dir / "cells.csv").set_index("cell_id")
    assert list(remote.index) == list(local.index) == [
        "gru-l1-uni-cpu-s0", "gru-l1-bi-cpu-s0", "lstm-l1-uni-cuda-s0"]
    assert remote["status"].to_dict() == local["status"].to_dict()
    assert (remote["status"] == "skipped").sum() == 1 and remote.loc["lstm-l1-uni-cuda-s0", "status"] == "skipped"
    assert "no node of the Ray cluster has a GPU" in remote.loc["lstm-l1-uni-cuda-s0", "reason"]
    ok = remote[remote["status"] == "ok"]
    assert (ok["node"] == this_node()).all() and (ok["executor"] == "ray-shared").all()
    assert pd.isna(remote.loc["lstm-l1-uni-cuda-s0", "node"])
    assert (ok["epochs_done"] == 1).all() and (ok["train_ppl"] > 1).all() and (ok["total_sec"] > 0).all()
    assert len(pd.read_csv(ray_dir / "epochs.csv")) == len(pd.read_csv(local_dir / "epochs.csv")) == 2
    assert all((ray_dir / "logs" / f"{c}.log").exists() for c in remote.index)
    assert "no node of the Ray cluster has a GPU" in (ray_dir / "logs" / "lstm-l1-uni-cuda-s0.log").read_text()
    record = json.loads((ray_dir / "cells" / "gru-l1-bi-cpu-s0.json").read_text())
    assert record["node"] == {"hostname": socket.gethostname(), "cpu_model": cpu_model(), "gpu_name": None}
    assert json.loads((ray_dir / "run.json").read_text())["executor"] == "ray-shared"


def _kill_ray_worker_of(marker_epochs: int, killed: dict, stop: threading.Event) -> None:
    """Wait for the cell process whose config has ``epochs == marker_epochs`` and SIGKILL the Ray worker
    process that started it (the cell process's parent)."""
    while not stop.is_set():
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if "harness.worker" not in cmdline:
                continue
            try:
                config = json.loads(open(cmdline[cmdline.index("harness.worker") + 1]).read())
            except (OSError, ValueError, IndexError):
                continue
            if config.get("epochs") == marker_epochs:
                parent = proc.parent()
                killed.update(worker=parent.pid, worker_cmdline=" ".join(parent.cmdline()), cell_process=proc.pid)
                os.kill(parent.pid, signal.SIGKILL)
                return
        time.sleep(0.05)


def test_failed_cells_and_a_killed_ray_worker_are_recorded_and_the_grid_goes_on(tmp_path, ray_address):
    suite = load_suite(write_suite(tmp_path, """
        matrix: {cell: [lstm]}
        include:
          - {cell: gru, corpus: /nonexistent/corpus.txt}
          - {cell: rnn, epochs: 99999, timeout: 90}
          - {cell: gru, threads: 64}
    """))
    cells = expand(suite)
    killed, stop = {}, threading.Event()
    killer = threading.Thread(target=_kill_ray_worker_of, args=(99999, killed, stop), daemon=True)
    killer.start()
    try:
        code, out = run_suite(suite, cells, tmp_path / "run", ["test"], executor=RayExecutor(), calibrate=False)
    finally:
        stop.set()
    assert code == 1
    table = pd.read_csv(out / "cells.csv")
    table["reason"] = table["reason"].fillna("")

    def row(mask):
        assert mask.sum() == 1
        return table[mask].iloc[0]

    assert row(table["cell"] == "lstm")["status"] == "ok"
    bad_corpus = row(table["corpus"].str.contains("nonexistent"))
    assert bad_corpus["status"] == "failed" and "corpus '/nonexistent" in bad_corpus["reason"]
    crashed = row(table["epochs"] == 99999)
    assert crashed["status"] == "failed" and "Ray task failed" in crashed["reason"], crashed["reason"]
    assert crashed["node"] == this_node()
    assert "_run_cell_task" in killed["worker_cmdline"]  # the process killed was the Ray task's worker
    too_wide = row(table["threads"] == 64)
    assert too_wide["status"] == "skipped" and "run.threads = 64" in too_wide["reason"]
    assert len(table) == 4 and table["cell_id"].is_unique
    # The killed worker's cell process does not train on in the background.
    deadline = time.monotonic() + 10
    while psutil.pid_exists(killed["cell_process"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(killed["cell_process"]) or \
        psutil.Process(killed["cell_process"]).status() == psutil.STATUS_ZOMBIE


def cell_processes(epochs: int) -> list:
    """The cell processes training a config with ``epochs`` epochs (a marker value)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "harness.worker" in cmdline:
            try:
                if json.loads(open(cmdline[cmdline.index("harness.worker") + 1]).read()).get("epochs") == epochs:
                    found.append(proc)
            except (OSError, ValueError, IndexError):
                continue
    return found


def start_driver(tmp_path, suite, out, ray_address, until):
    """`harness run SUITE --executor ray --share-nodes --out OUT` in its own process, its stderr in
    tmp_path/driver.log; returned once ``until()`` holds, the driver has ended, or 150 s have passed.
    Returns (process, command, log path)."""
    command = [sys.executable, "-m", "harness", "run", str(suite), "--executor", "ray", "--address", ray_address,
               "--share-nodes", "--out", str(out), "--no-report"]
    log = tmp_path / "driver.log"
    with open(log, "w") as stderr:
        driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 150
    while not until() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    return driver, command, log


def test_driver_killed_then_resumed_keeps_each_stored_cell_once(tmp_path, ray_address):
    # The two cells run side by side (one thread each, the two CPUs shared); the gru cell cannot finish
    # (and, the longest, starts first), so it is still running when the rnn cell has been stored and the
    # driver is killed, however fast or slow the machine. (That a resume trains the missing cells is the
    # local runner's test; the executor only runs what it is given.)
    suite = write_suite(tmp_path, "matrix: {cell: [rnn]}\ninclude:\n  - {cell: gru, epochs: 100000000}\n")
    out = tmp_path / "run"
    driver, command, log = start_driver(tmp_path, suite, out, ray_address, until=lambda: list((out / "cells").glob("*.json")))
    assert driver.poll() is None, "the driver finished before one cell was stored: " + log.read_text()
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    for proc in cell_processes(100000000):  # Ray may not end a dead driver's task at once: do not wait
        proc.kill()
    stored = {p.stem for p in (out / "cells").glob("*.json")}
    assert stored == {"rnn-l1-uni-cpu-s0-epochs2"}, log.read_text()
    again = subprocess.run(command + ["--only", "cell=rnn"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stderr
    assert "1 of 1 cells already stored" in again.stderr
    cells = pd.read_csv(out / "cells.csv")
    assert list(cells["cell_id"]) == ["rnn-l1-uni-cpu-s0-epochs2"]
    assert set(cells["status"]) == {"ok"} and set(cells["executor"]) == {"ray-shared"}
    assert set(cells["node"]) == {this_node()}
    epochs = pd.read_csv(out / "epochs.csv")
    assert len(epochs) == 2 and not epochs.duplicated(["cell_id", "epoch"]).any()


def test_sigusr1_lets_the_cells_in_flight_finish_and_submits_no_other(tmp_path, ray_address):
    # Two cells at a time on the 2-CPU instance: the signal lands once a cell's process has started, when
    # seed 0's two cells have been submitted (seed 1's wait for a free slot).
    # 3 epochs: a marker no other test's cells carry, so that only this run's cell processes are seen.
    suite = write_suite(tmp_path, "matrix: {cell: [rnn, gru], seed: [0, 1], epochs: [3]}\n")
    out = tmp_path / "run"
    driver, command, log = start_driver(tmp_path, suite, out, ray_address, until=lambda: cell_processes(3))
    assert driver.poll() is None and cell_processes(3), "no cell started: " + log.read_text()
    os.kill(driver.pid, signal.SIGUSR1)
    assert driver.wait(timeout=150) == 130, log.read_text()
    assert "stopped after the cells in flight" in log.read_text()
    cells = pd.read_csv(out / "cells.csv")
    # What was in flight finished and was stored whole; seed 1 never started.
    assert 1 <= len(cells) <= 2 and set(cells["status"]) == {"ok"} and set(cells["seed"]) == {0}, log.read_text()
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert sorted(pd.read_csv(out / "cells.csv")["cell_id"]) == sorted(
        f"{c}-l1-uni-cpu-s{s}-epochs3" for c in ("rnn", "gru") for s in (0, 1))


def test_sigterm_stops_a_ray_run_with_the_resume_command(tmp_path, ray_address):
    # ray.init installs its own SIGTERM handler (a plain exit); the run keeps the harness's.
    suite = write_suite(tmp_path, "matrix: {cell: [rnn]}\ninclude:\n  - {cell: gru, epochs: 100000001}\n")
    out = tmp_path / "run"
    driver, _, log = start_driver(tmp_path, suite, out, ray_address, until=lambda: cell_processes(100000001))
    assert driver.poll() is None and cell_processes(100000001), "no cell started: " + log.read_text()
    os.kill(driver.pid, signal.SIGTERM)
    assert driver.wait(timeout=60) == 130, log.read_text()
    assert f"interrupted; finished cells are stored in {out}; continue with --resume {out}" in log.read_text()
    for proc in cell_processes(100000001):
        proc.kill()


def test_an_address_where_no_ray_head_listens_fails_fast(tmp_path, capsys):
    with socket.socket() as probe:  # a free port on loopback, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smoke = str(REPO / "suites" / "smoke.yaml")
    args = ["run", smoke, "--executor", "ray", "--only", "cell=rnn", "--no-report"]
    assert cli.main(args + ["--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "a")]) == 2
    assert "no Ray head node answers there" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert cli.main(args + ["--address", "nocolon", "--out", str(tmp_path / "b")]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_without_an_address_the_run_starts_its_own_ray_instance(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(REPO / "suites" / "smoke.yaml"),
                           "--executor", "ray", "--only", "device=cuda", "--out", str(out), "--no-report"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    cells = pd.read_csv(out / "cells.csv")
    assert list(cells["cell_id"]) == ["lstm-l1-uni-cuda-s0"] and list(cells["status"]) == ["skipped"]
    assert "no node of the Ray cluster has a GPU" in cells["reason"][0]
    assert json.loads((out / "run.json").read_text())["executor"] == "ray"
