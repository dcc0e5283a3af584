"""The lesson's own script against `harness cell`, same recipe, alternating processes on one machine.

    python benchmarks/seed_vs_harness.py --out seed_vs_harness.md [--epochs 30] [--rounds 3]

Each round runs the seed's script (benchmarks/seed_reference.py) and then `python -m harness cell` with
the seed's settings (Gutenberg header kept, 2-layer LSTM, hidden 256, evaluation only at the end), for the
unidirectional and the bidirectional model. Epoch 1 of every process is a warm-up and is left out; the
remaining per-epoch times of all rounds are pooled into a median and an interquartile range.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.cell.corpus import resolve_corpus  # noqa: E402
from harness.host.machine import describe  # noqa: E402


def seed_epochs(corpus: Path, epochs: int, bidirectional: bool) -> tuple[list[float], float]:
    env = {**os.environ, "SEED_CORPUS": str(corpus), "SEED_EPOCHS": str(epochs + 1),
           "SEED_BIDIRECTIONAL": "1" if bidirectional else "0"}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "seed_reference.py")], env=env,
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["epoch_seconds"][1:], result["perplexities"][-1]


def harness_epochs(epochs: int, bidirectional: bool, threads: int) -> tuple[list[float], float]:
    with_result = REPO / "results" / ".seed_vs_harness.json"
    command = [sys.executable, "-m", "harness", "cell", "--cell", "lstm", "--layers", "2", "--direction",
               "bi" if bidirectional else "uni", "--epochs", str(epochs + 1), "--eval-every", "0",
               "--no-strip-boilerplate", "--threads", str(threads), "--json",
               "--result-file", str(with_result)]
    subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    record = json.loads(with_result.read_text())
    with_result.unlink()
    return [r["sec"] for r in record["epoch_log"] if not r["warmup"]], record["train_ppl"]


def summary(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=4)
    return statistics.median(samples), q[2] - q[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=30, help="timed epochs per process, after one warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the harness (the seed uses torch's default)")
    args = parser.parse_args()
    corpus = resolve_corpus("gutenberg-35")
    rows = []
    for bidirectional in (False, True):
        times = {"seed script": [], "harness": []}
        ppl = {}
        for _ in range(args.rounds):
            t, ppl["seed script"] = seed_epochs(corpus, args.epochs, bidirectional)
            times["seed script"] += t
            t, ppl["harness"] = harness_epochs(args.epochs, bidirectional, args.threads)
            times["harness"] += t
        seed_median, _ = summary(times["seed script"])
        for loop, samples in times.items():
            median, iqr = summary(samples)
            rows.append(f"| {'bi' if bidirectional else 'uni'} | {loop} | {median:.4f} | {iqr:.4f} | "
                        f"{len(samples)} | {median / seed_median:.3f} | {ppl[loop]:.3f} |")
        print(rows[-2], rows[-1], sep="\n", flush=True)
    info = describe()
    text = "\n".join([
        f"Machine: {info['cpu_model']} ({info['cpu_count']} cores), Python {info['python']}, torch {info['torch']}; "
        f"{args.rounds} alternating rounds of {args.epochs} timed epochs per process (epoch 1 left out).",
        "",
        "| direction | loop | s/epoch (median) | IQR | epochs | / seed script | train ppl after the epochs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ])
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
