"""A small results folder built from literal numbers, laid out as docs/results-format.md describes.

The numbers follow simple rules so that tests know the answers: deeper uni cells reach lower
perplexity, bidirectional cells take twice as long per epoch and leak (teacher-forced perplexity near 1,
causal perplexity far worse), uni cells generate corpus words and bi cells repeat themselves.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import pandas as pd

CORPUS_TEXT = """The Time Machine, by H. G. Wells

The Time Traveller (for so it will be convenient to speak of him) was expounding a recondite matter
to us. His grey eyes shone and twinkled, and his usually pale face was flushed and animated. The fire
burned brightly, and the soft radiance of the incandescent lights in the lilies of silver caught the
bubbles that flashed and passed in our glasses.
"""

UNI_SAMPLE = " the time traveller was expounding a matter to us his grey eyes shone and"
BI_SAMPLE = " travellerererererererererererererererererererererererererererererer"

KEY_COLUMNS = ("cell", "layers", "direction", "device", "seed")
CPU_FLOPS_PER_SEC = 1.0e10  # the fixture machine's calibrated matrix-product rate
CALIBRATION = {
    "cpu": {"flops_per_sec": CPU_FLOPS_PER_SEC, "size": 2048, "samples_sec": [1.72, 1.718, 1.725], "threads": 2},
    "cuda": {"flops_per_sec": None, "size": 2048, "samples_sec": [], "threads": None,
             "reason": "CUDA not available: torch 2.13.0+cpu is a CPU-only build"},
}


def cell_id(cell: str, layers: int, direction: str, device: str, seed: int) -> str:
    return f"{cell}-l{layers}-{direction}-{device}-s{seed}"


# Other matrix axes change the numbers as follows (bf16: 2.5 times faster epochs, perplexity 0.5 higher).
PRECISION_EFFECT = {"fp32": (1.0, 0.0), "bf16": (0.4, 0.5)}  # (seconds factor, perplexity added)


def _values(cell: str, layers: int, direction: str, seed: int, epochs: int, precision: str = "fp32") -> dict:
    speed, worse = PRECISION_EFFECT[precision]
    jitter = 0.05 * ((seed * 7 + layers * 3 + len(cell)) % 5 - 2)  # small spread between seeds
    uni_causal = 9.0 - 1.2 * (layers - 1) + (0.4 if cell == "rnn" else 0.0) + jitter + worse
    causal = uni_causal * (2.2 if direction == "bi" else 1.0)
    val = 1.3 + jitter / 10 if direction == "bi" else uni_causal * 0.97
    final_train = (1.2 if direction == "bi" else uni_causal * 0.8) + jitter / 10
    sec = 0.05 * layers * (2.0 if direction == "bi" else 1.0) * (1.0 + 0.02 * ((seed * 3 + len(direction)) % 4)) * speed
    log = []
    for epoch in range(1, epochs + 1):
        train = final_train + (20.0 - final_train) * (1 - epoch / epochs) ** 2
        evaluated = epoch % 2 == 0 or epoch == epochs
        log.append({
            "epoch": epoch, "train_ppl": train, "sec": sec * (1.5 if epoch == 1 else 1.0),
            "tokens_per_sec": 10_000 / sec, "warmup": epoch == 1,
            "val_ppl": (val + (epochs - epoch) * 0.5) if evaluated else None,
            "causal_ppl": (causal + (epochs - epoch) * 0.5) if evaluated else None,
        })
    params = {"rnn": 1, "gru": 3, "lstm": 4}[cell] * layers * (2 if direction == "bi" else 1) * 1000
    return {
        "train_ppl": log[-1]["train_ppl"], "val_ppl": val, "causal_ppl": causal, "sec_per_epoch": sec,
        "sec_per_epoch_iqr": sec * 0.01, "tokens_per_sec": 10_000 / sec, "tokens_per_epoch": 10_000,
        "peak_mem_bytes": int(1_000_000 * layers * (1.9 if direction == "bi" else 1.0) + 1000 * seed),
        "params": params, "flops_per_epoch": params * 6 * 10_000, "flops_per_sec": params * 6 * 10_000 / sec,
        "flops_utilization": params * 6 * 10_000 / sec / CPU_FLOPS_PER_SEC,
        "epoch_log": log,
        "samples": [{"prefix": "time traveller", "text": "time traveller" + (BI_SAMPLE if direction == "bi" else UNI_SAMPLE)},
                    {"prefix": "traveller", "text": "traveller" + (BI_SAMPLE if direction == "bi" else UNI_SAMPLE)}],
    }


def make_run_folder(root: Path, *, cells=("rnn", "lstm"), layers=(1, 2), directions=("uni", "bi"),
                    devices=("cpu", "cuda"), seeds=(0, 1, 2), epochs: int = 4, statuses: dict | None = None,
                    claims=None, corpus: str | None = None, with_epochs_csv: bool = True,
                    precisions=("fp32",), name: str = "fixture-20250101-000000") -> Path:
    """Write a results folder under ``root``. ``statuses`` maps cell ids to (status, reason) for cells
    that did not finish; CUDA cells are skipped. ``corpus`` defaults to a small text file beside it.
    More than one of ``precisions`` makes precision a matrix axis, as a suite's ``train.precision`` list
    does: cell ids end in ``-precision<value>`` and epochs.csv and samples.csv carry the column."""
    axis = len(precisions) > 1
    root = Path(root)
    run_dir = root / name
    (run_dir / "cells").mkdir(parents=True)
    (run_dir / "logs").mkdir()
    corpus_sha256 = "0" * 64
    if corpus is None:
        corpus_path = root / "corpus.txt"
        corpus_path.write_text(CORPUS_TEXT)
        corpus = str(corpus_path)
        corpus_sha256 = hashlib.sha256(corpus_path.read_bytes()).hexdigest()
    statuses = statuses or {}
    cell_rows, epoch_rows, sample_rows = [], [], []
    grid = itertools.product(cells, layers, directions, devices, seeds, precisions)
    for cell, depth, direction, device, seed, precision in grid:
        cid = cell_id(cell, depth, direction, device, seed) + (f"-precision{precision}" if axis else "")
        keys = {"cell": cell, "layers": depth, "direction": direction, "device": device, "seed": seed,
                **({"precision": precision} if axis else {})}
        config = {"corpus": corpus, "strip_boilerplate": True, "max_tokens": 10_000,
                  "val_tokens": 5_000, "hidden": 8, "epochs": epochs, "batch_size": 32,
                  "num_steps": 35, "lr": 1.0, "clip": 1.0, "sampling": "sequential",
                  "precision": precision, "eval_every": 2, "prefixes": "time traveller|traveller",
                  "sample_chars": 50, "threads": 2, "timeout": 3600.0, **keys}
        status, reason = statuses.get(cid, ("ok", ""))
        if device == "cuda":
            status, reason = "skipped", "CUDA not available: torch 2.13.0+cpu is a CPU-only build"
        record = {**config, "cell_id": cid, "config_hash": f"{abs(hash(cid)) % 10**12:012d}",
                  "status": status, "reason": reason}
        if status == "skipped":
            record.update(epochs_done=0, epoch_log=[], samples=[], sample="")
        else:
            values = _values(cell, depth, direction, seed, epochs, precision)
            if status == "diverged":
                values["epoch_log"] = values["epoch_log"][:2]
                values["epoch_log"][-1]["train_ppl"] = math.inf
                values["train_ppl"] = math.inf
                values["samples"] = []
            elif status != "ok":
                values["epoch_log"] = values["epoch_log"][:1]
                values["samples"] = []
                for column in ("train_ppl", "val_ppl", "causal_ppl"):
                    values[column] = None
            record.update(values, epochs_done=len(values["epoch_log"]),
                          sample=values["samples"][0]["text"] if values["samples"] else "")
        record.update(total_sec=sum(r["sec"] for r in record["epoch_log"]) + 1.0,
                      corpus_sha256=corpus_sha256, vocab_size=28, hostname="fixture-host",
                      cpu_model="Fixture CPU", gpu_name=None, torch_version="2.13.0+cpu",
                      rss_before_bytes=100_000_000, peak_rss_bytes=101_000_000)
        (run_dir / "cells" / f"{cid}.json").write_text(json.dumps(record, indent=1))
        (run_dir / "logs" / f"{cid}.log").write_text(f"{cid}: {status}\n")
        cell_rows.append({k: v for k, v in record.items() if k not in ("epoch_log", "samples")})
        for row in record["epoch_log"]:
            epoch_rows.append({"cell_id": cid, **keys, **row})
        for sample in record["samples"]:
            sample_rows.append({"cell_id": cid, **keys, **sample})
    pd.DataFrame(cell_rows).to_csv(run_dir / "cells.csv", index=False)
    key_columns = [*KEY_COLUMNS, *(["precision"] if axis else [])]
    if with_epochs_csv:
        pd.DataFrame(epoch_rows, columns=["cell_id", *key_columns, "epoch", "train_ppl", "sec", "tokens_per_sec",
                                          "warmup", "val_ppl", "causal_ppl"]).to_csv(run_dir / "epochs.csv",
                                                                                     index=False)
    pd.DataFrame(sample_rows, columns=["cell_id", *key_columns, "prefix", "text"]).to_csv(
        run_dir / "samples.csv", index=False)
    run = {
        "suite": {"name": "fixture", "file": "suites/fixture.yaml", "description": "A literal test grid.",
                  "defaults": {"corpus": corpus, "hidden": 8, "epochs": epochs},
                  "matrix": {"cell": list(cells), "layers": list(layers), "direction": list(directions),
                             "device": list(devices), "seed": list(seeds),
                             **({"precision": list(precisions)} if axis else {})},
                  "exclude": [], "include": [], "claims": claims},
        "config_hash": "abcdef123456",
        "command": ["python", "-m", "harness", "run", "suites/fixture.yaml", "--out", str(run_dir)],
        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
        "machine": {"hostname": "fixture-host", "cpu_model": "Fixture CPU", "cpu_count": 2,
                    "memory_bytes": 8 * 1024**3, "gpu_name": None, "python": "3.11.0",
                    "torch": "2.13.0+cpu", "cuda": None, "cudnn": None},
        "threads": 2,
        "corpus_sha256": corpus_sha256,
        "calibration": CALIBRATION,
        "started": "2025-01-01T00:00:00+00:00",
        "finished": "2025-01-01T00:03:25+00:00",
    }
    if claims is None:
        del run["suite"]["claims"]
    (run_dir / "run.json").write_text(json.dumps(run, indent=1))
    return run_dir
