"""Choosing an executor on the command line, and what the runner records of where a cell ran: none of it
needs Ray installed (test_ray_executor.py, skipped without Ray, runs cells on a Ray instance)."""

import socket
import sys

from harness import cli
from harness.spec.config import CellConfig
from harness.results.tables import node_label
from harness.spec.suite import GridCell

from conftest import REPO


def grid_cell(**keys) -> GridCell:
    config = CellConfig(**keys)
    return GridCell(config.cell_id, config, {})


def test_node_label_flattens_a_node_for_cells_csv():
    assert node_label({"hostname": "h1", "cpu_model": "Xeon", "gpu_name": None}) == "h1|Xeon|"
    assert node_label({"hostname": "h2", "cpu_model": "EPYC", "gpu_name": "NVIDIA H100"}) == "h2|EPYC|NVIDIA H100"
    assert node_label(None) == ""


def test_flops_utilization_only_for_cells_run_on_the_calibrated_machine(tmp_path):
    from harness.results.run_folder import RunDir

    run_dir = RunDir(tmp_path / "run")
    run_dir.lock()
    calibration = {"cpu": {"flops_per_sec": 4.0e10}}
    cell = grid_cell(device="cpu")
    for cell_id, hostname in (("here", socket.gethostname()), ("elsewhere", "another-host")):
        node = {"hostname": hostname, "cpu_model": "X", "gpu_name": None}
        run_dir.store(GridCell(cell_id, cell.config, {}), {"status": "ok", "device": "cpu", "flops_per_sec": 1.0e10,
                                                          "node": node},
                      calibration)
    records = run_dir.finished_records()
    assert records["here"]["flops_utilization"] == 0.25
    assert records["elsewhere"]["flops_utilization"] is None


# --- command line ---------------------------------------------------------------------------------------


def test_executor_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "harness.grid.ray_executor", raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    out = tmp_path / "run"
    code = cli.main(["run", str(REPO / "suites" / "smoke.yaml"), "--executor", "ray", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "pip install -e '.[ray]'" in err
    assert not out.exists()


def test_share_nodes_and_address_need_the_ray_executor(tmp_path, capsys):
    smoke = str(REPO / "suites" / "smoke.yaml")
    assert cli.main(["run", smoke, "--share-nodes", "--out", str(tmp_path / "a")]) == 2
    assert "--share-nodes needs --executor ray" in capsys.readouterr().err
    assert cli.main(["run", smoke, "--address", "127.0.0.1:1", "--out", str(tmp_path / "b")]) == 2
    assert "--address needs --executor ray" in capsys.readouterr().err
