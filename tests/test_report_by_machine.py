"""The report keeps timings of different machines apart when a run's cells ran on several (Ray runs)."""

import json

import pandas as pd

from harness.report.build import build_report
from harness.report.loading import apply_timings, load_run
from harness.report.tables import machine_label, run_machines, timings_by_machine

from harness.results.run_folder import RunDir

from fixtures import make_run_folder

A = "host-a|Fixture CPU A|"
B = "host-b|Fixture CPU B|NVIDIA H100"
B_CPU = "host-b|Fixture CPU B|"  # B as its CPU cells name it: the GPU names a machine only for CUDA cells


def literal_cells(nodes) -> pd.DataFrame:
    rows = []
    for seed, node in enumerate(nodes):
        sec = 1.0 if node == A else 3.0
        rows.append({"cell_id": f"lstm-l1-uni-cpu-s{seed}", "cell": "lstm", "layers": 1, "direction": "uni",
                     "device": "cpu", "seed": seed, "status": "ok", "sec_per_epoch": sec + seed / 10,
                     "tokens_per_sec": 1000 / sec, "node": node})
    return pd.DataFrame(rows)


def test_machine_label_reads_the_node_column():
    assert machine_label(A) == "host-a: Fixture CPU A"
    assert machine_label(B) == "host-b: Fixture CPU B, NVIDIA H100"


def test_timings_are_grouped_by_machine_only_when_there_are_several():
    table = timings_by_machine(literal_cells([A, A, B, B]))
    assert list(table["machine"]) == ["host-a: Fixture CPU A", "host-b: Fixture CPU B"]
    # host-a has seeds 0 and 1 (1.0 and 1.1 s), host-b seeds 2 and 3 (3.2 and 3.3 s): geometric means.
    assert [s.split(" [")[0] for s in table["s/epoch"]] == ["1.05", "3.25"]
    assert list(table["seeds ok"]) == ["2/2", "2/2"] and table["tokens/s"].str.startswith(("1,000", "333")).all()
    assert timings_by_machine(literal_cells([A, A, A])).empty
    assert timings_by_machine(literal_cells([A, B]).drop(columns="node")).empty
    assert run_machines(literal_cells([B, A, B])) == [A, B_CPU]


def test_report_of_a_run_across_two_machines_has_per_machine_timings(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), directions=("uni",), devices=("cpu",),
                              seeds=(0, 1, 2, 3), claims=[])
    cells = pd.read_csv(run_dir / "cells.csv")
    cells["node"] = [A, A, B, B]
    cells.to_csv(run_dir / "cells.csv", index=False)
    text = (build_report(run_dir, tmp_path / "report") / "index.md").read_text()
    assert "### Appendix: Timings by machine" in text
    section = text.split("### Appendix: Timings by machine", 1)[1].split("\n### ", 1)[0]
    assert "host-a: Fixture CPU A" in section and "host-b: Fixture CPU B" in section
    assert "cells ran on" in text


def test_node_of_cells_read_from_records_only_is_the_csv_label(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), directions=("uni",), devices=("cpu",),
                              seeds=(0, 1), claims=[])
    cells = pd.read_csv(run_dir / "cells.csv")
    cells["node"] = [A, B]
    cells.iloc[:1].to_csv(run_dir / "cells.csv", index=False)  # the second cell only in cells/*.json
    path = run_dir / "cells" / "rnn-l1-uni-cpu-s1.json"
    record = json.loads(path.read_text())
    record["node"] = {"hostname": "host-b", "cpu_model": "Fixture CPU B", "gpu_name": "NVIDIA H100"}
    path.write_text(json.dumps(record))
    assert run_machines(load_run(run_dir).cells) == [A, B_CPU]


def test_a_run_resumed_on_a_machine_with_another_cpu_keeps_its_timings_apart(tmp_path):
    # A local run (no node column) whose second part ran on a machine of another CPU model: each cell's
    # own hostname and cpu_model say where it ran.
    run_dir = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), directions=("uni", "bi"), devices=("cpu",),
                              seeds=(0, 1, 2, 3), claims=["bidirectional_slow"])
    for path in (run_dir / "cells").glob("*.json"):  # the records are the source of truth: edit them
        record = json.loads(path.read_text())
        second_part = record["seed"] >= 2
        record.update(hostname="vm", cpu_model="Fixture CPU B" if second_part else "Fixture CPU A")
        if second_part:
            record["sec_per_epoch"] *= 3  # a slower machine: pooled, its seeds would look noisy
        path.write_text(json.dumps(record))
    RunDir(run_dir).rebuild_tables()
    assert run_machines(pd.read_csv(run_dir / "cells.csv")) == ["vm|Fixture CPU A|", "vm|Fixture CPU B|"]
    text = (build_report(run_dir, tmp_path / "report") / "index.md").read_text()
    section = text.split("### Appendix: Timings by machine", 1)[1].split("\n### ", 1)[0]
    assert "vm: Fixture CPU A" in section and "vm: Fixture CPU B" in section
    assert "timings are compared only between cells of one model" in text
    evidence = text.split("Bidirectional", 1)[1]
    assert "Fixture CPU A" in evidence and "Fixture CPU B" in evidence  # one comparison per machine


def test_a_gpu_machine_is_one_machine_for_its_cpu_and_cuda_cells():
    rows = [{"cell_id": f"lstm-l1-uni-{device}-s{seed}", "device": device, "seed": seed, "hostname": "gpubox",
             "cpu_model": "Xeon", "gpu_name": "NVIDIA H200" if device == "cuda" else None}
            for device in ("cpu", "cuda") for seed in (0, 1)]
    assert run_machines(pd.DataFrame(rows)) == ["gpubox|Xeon|", "gpubox|Xeon|NVIDIA H200"]  # its CUDA cells name the GPU
    ray = pd.DataFrame(rows).assign(node="gpubox|Xeon|NVIDIA H200")  # a node's label names its GPU for every cell
    assert run_machines(ray) == run_machines(pd.DataFrame(rows))
    assert run_machines(pd.DataFrame(rows).query("device == 'cpu'")) == ["gpubox|Xeon|"]


def test_timings_from_a_timing_pass_are_labelled_with_its_machine(tmp_path):
    train = make_run_folder(tmp_path / "train", cells=("rnn",), layers=(1,), directions=("uni", "bi"),
                            devices=("cpu",), seeds=(0, 1), claims=[])
    timing = make_run_folder(tmp_path / "timing", cells=("rnn",), layers=(1,), directions=("uni", "bi"),
                             devices=("cpu",), seeds=(0, 1), claims=[])
    for path in (train / "cells").glob("*.json"):  # trained on two Ray nodes
        record = json.loads(path.read_text())
        record["node"] = {"hostname": f"n{record['seed']}", "cpu_model": f"CPU {record['seed']}", "gpu_name": None}
        record.update(hostname=f"n{record['seed']}", cpu_model=f"CPU {record['seed']}")
        path.write_text(json.dumps(record))
    RunDir(train).rebuild_tables()
    for path in (timing / "cells").glob("*.json"):  # timed on one quiet machine, locally
        record = json.loads(path.read_text())
        record.update(hostname="quiet", cpu_model="CPU Q")
        path.write_text(json.dumps(record))
    RunDir(timing).rebuild_tables()
    data, _, _ = apply_timings(load_run(train), [timing])
    assert run_machines(data.cells) == ["quiet|CPU Q|"] and timings_by_machine(data.cells).empty
    text = (build_report(train, tmp_path / "report", timing_dirs=[timing]) / "index.md").read_text()
    assert "n0: CPU 0; n1: CPU 1" in text  # where they trained
    assert "Timings by machine" not in text
