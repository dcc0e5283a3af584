"""Training-step speed of harness.cell.fused_rnn against nn.GRU / nn.RNN, and of the alternatives it was chosen over.

One sample is one training step's forward and backward (no optimiser update, which is the same for every
implementation) of a CharRNN-like model at the lesson's recipe: one-hot input of 28 characters, the recurrent
stack, a linear head over all directions, cross-entropy; hidden 256, batch 32, 35 steps, the state carried
(detached) from step to step. Every implementation has the same initial weights and the same batch.

All implementations and configurations run in this one process, interleaved: each round visits every
configuration, and within it the implementations in turn, reversing the order every other round (torch,
fused, fused, torch, ...), so that a change in the machine's load hits each alike. Warm-up rounds (which
also build the extension and compile the candidates) are not timed. Reported per implementation: the
median and interquartile range of a step's seconds, the achieved FLOP/s (harness.cell.flops.training_flops over
the median) and its fraction of a calibrated float32 matrix-product rate at the same thread count; per
configuration: torch's median over each implementation's, and the median [IQR] of the per-round ratios.

Implementations: ``torch`` (nn.GRU / nn.RNN: on the CPU a loop of autograd operations per step) and
``fused`` (harness.cell.fused_rnn: one C++ call per layer and direction). With ``--candidates`` also the
alternatives considered for the fused one, all running the same equations from the same parameters:
``loop`` (a plain Python loop over the steps: one input projection per layer, then per step a matrix
product and the gate operations, autograd as usual), ``script`` (that per-direction loop under TorchScript)
and ``compile`` (that loop under torch.compile, which unrolls it; the first call compiles, in the warm-up).

The process restarts itself with glibc's malloc told to keep freed memory (as ``harness run``'s workers
do, harness.host.malloc), so that large buffers are not handed back to the kernel and faulted in again every
step; ``--system-malloc`` leaves malloc alone.

Run:    python benchmarks/fused_rnn_bench.py --rounds 30 --json fused.json
Check:  python benchmarks/fused_rnn_bench.py --rounds 3 --warmup 1 --cells gru --layers 1 --directions uni
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    from harness.host.malloc import KEEP_FREED_MEMORY
except ImportError:  # a checkout without harness.host.malloc: the same settings
    KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30)}

VOCAB = 28
IMPLS = ("torch", "fused")
CANDIDATES = ("loop", "script", "compile")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (default: 1, as the recipe's cells)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default: 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    parser.add_argument("--repeat", type=int, default=1, help="training steps per sample (default: 1)")
    parser.add_argument("--cells", default="gru,rnn", help="comma-separated subset of gru,rnn")
    parser.add_argument("--layers", default="1,2", help="comma-separated layer counts (default: 1,2)")
    parser.add_argument("--directions", default="uni,bi", help="comma-separated subset of uni,bi")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--candidates", action="store_true",
                        help="also time the alternatives: " + ", ".join(CANDIDATES))
    parser.add_argument("--calibration-size", type=int, default=2048,
                        help="size of the calibrating float32 matrix product; 0: no calibration")
    parser.add_argument("--system-malloc", action="store_true", help="do not restart with malloc keeping freed memory")
    parser.add_argument("--json", dest="json_path", help="write every sample and the summary to this file")
    return parser.parse_args(argv)


def keep_freed_memory() -> None:
    """Restart this process with harness.host.malloc's settings: glibc reads them only when a process starts."""
    if all(key in os.environ for key in KEEP_FREED_MEMORY):
        return
    for key, value in KEEP_FREED_MEMORY.items():
        os.environ.setdefault(key, value)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.argv])


if __name__ == "__main__" and "--system-malloc" not in sys.argv[1:]:
    keep_freed_memory()  # before torch is imported: the restart then costs next to nothing

# --------------------------------------------------------------------------------------- the candidates
# TorchScript and torch.compile both take these functions as they are; they are kept free of anything either
# cannot handle (closures, Python containers other than List[Tensor]).

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402


def gru_direction(xp: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, reverse: bool) -> Tuple[Tensor, Tensor]:
    """nn.GRU's equations over all steps of one direction, from the input projection ``xp`` (T, B, 3H)."""
    steps = xp.size(0)
    outputs: List[Tensor] = []
    for i in range(steps):
        s = steps - 1 - i if reverse else i
        xr, xz, xn = xp[s].chunk(3, 1)
        hr, hz, hn = torch.addmm(b_hh, h, w_hh.t()).chunk(3, 1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (h - n) * z + n
        outputs.append(h)
    if reverse:
        outputs.reverse()
    return torch.stack(outputs, 0), h


def rnn_direction(xp: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, reverse: bool) -> Tuple[Tensor, Tensor]:
    """nn.RNN's (tanh) equations over all steps of one direction, from the input projection ``xp``."""
    steps = xp.size(0)
    outputs: List[Tensor] = []
    for i in range(steps):
        s = steps - 1 - i if reverse else i
        h = torch.tanh(xp[s] + torch.addmm(b_hh, h, w_hh.t()))
        outputs.append(h)
    if reverse:
        outputs.reverse()
    return torch.stack(outputs, 0), h


DIRECTION_FUNCTIONS = {"gru": gru_direction, "rnn": rnn_direction}
_compiled: dict = {}


def direction_function(cell: str, impl: str):
    """The per-direction loop for a candidate: as written, scripted or compiled (once per process)."""
    if (cell, impl) not in _compiled:
        function = DIRECTION_FUNCTIONS[cell]
        if impl == "script":
            function = torch.jit.script(function)
        elif impl == "compile":
            function = torch.compile(function, dynamic=False)
        _compiled[cell, impl] = function
    return _compiled[cell, impl]


class LoopRNN(nn.Module):
    """The recurrent stack from a torch module's parameters, one direction at a time through ``function``."""

    def __init__(self, rnn: nn.RNNBase, function):
        super().__init__()
        self.rnn, self.function = rnn, function

    def forward(self, x: Tensor, hx: Tensor):
        rnn = self.rnn
        directions = 2 if rnn.bidirectional else 1
        states = []
        for layer in range(rnn.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                w_ih, w_hh, b_ih, b_hh = (getattr(rnn, name) for name in rnn._all_weights[index])
                out, h_n = self.function(F.linear(x, w_ih, b_ih), hx[index], w_hh, b_hh, direction == 1)
                outputs.append(out)
                states.append(h_n)
            x = outputs[0] if directions == 1 else torch.cat(outputs, 2)
        return x, torch.stack(states, 0)


# ------------------------------------------------------------------------------------------- the bench


class Step:
    """One implementation's training step (forward, cross-entropy, backward) on a fixed batch."""

    def __init__(self, impl: str, cell: str, layers: int, bidirectional: bool, args):
        from harness.cell.fused_rnn import FUSED_CLASSES

        torch.manual_seed(0)
        base = FUSED_CLASSES[cell] if impl == "fused" else {"gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = base(VOCAB, args.hidden, layers, bidirectional=bidirectional)
        directions = 2 if bidirectional else 1
        self.head = nn.Linear(directions * args.hidden, VOCAB)
        self.forward_rnn = self.rnn if impl in IMPLS else LoopRNN(self.rnn, direction_function(cell, impl))
        generator = torch.Generator().manual_seed(1)
        tokens = torch.randint(VOCAB, (args.steps + 1, args.batch), generator=generator)
        self.x = F.one_hot(tokens[:-1], VOCAB).float()  # time-major (steps, batch, vocab), as CharRNN's
        self.targets = tokens[1:].reshape(-1)
        self.state = torch.zeros(directions * layers, args.batch, args.hidden)
        self.parameters = [*self.rnn.parameters(), *self.head.parameters()]

    def __call__(self) -> float:
        for p in self.parameters:
            p.grad = None
        output, state = self.forward_rnn(self.x, self.state)
        loss = F.cross_entropy(self.head(output.reshape(-1, output.shape[-1])), self.targets)
        loss.backward()
        self.state = state.detach()
        return float(loss.detach())


def quartiles(values):
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summarise(config: dict, samples: dict, flops: int, rate: float | None) -> list[dict]:
    rows = []
    torch_samples = samples["torch"]
    for impl, values in samples.items():
        q1, median, q3 = quartiles(values)
        paired = [t / v for t, v in zip(torch_samples, values)]
        p1, paired_median, p3 = quartiles(paired)
        rows.append({
            **config, "impl": impl, "samples_sec": values, "median_sec": median, "iqr_sec": q3 - q1,
            "flops": flops, "flops_per_sec": flops / median,
            "utilization": (flops / median) / rate if rate else None,
            "speedup_vs_torch": statistics.median(torch_samples) / median,
            "paired_speedup_median": paired_median, "paired_speedup_iqr": [p1, p3],
        })
    return rows


def print_table(rows: list[dict], rate: float | None) -> None:
    print()
    print("| cell | layers | dir | impl | median ms | IQR ms | GFLOP/s | of matmul | x torch (medians) | x torch per round "
          "[IQR] |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        util = f"{r['utilization']:.2f}" if r["utilization"] is not None else "-"
        p1, p3 = r["paired_speedup_iqr"]
        print(f"| {r['cell']} | {r['layers']} | {r['direction']} | {r['impl']} | {r['median_sec'] * 1e3:.1f} | "
              f"{r['iqr_sec'] * 1e3:.1f} | {r['flops_per_sec'] / 1e9:.1f} | {util} | {r['speedup_vs_torch']:.2f} | "
              f"{r['paired_speedup_median']:.2f} [{p1:.2f}, {p3:.2f}] |")
    if rate:
        print(f"\nmatmul rate: {rate / 1e9:.1f} GFLOP/s (float32)")


def main(argv=None) -> int:
    args = parse_args(argv)
    from harness.host.calibration import matmul_rate
    from harness.errors import HarnessError
    from harness.cell.fused_rnn import load_extension
    from harness.host.machine import describe
    from harness.cell.model import training_flops

    torch.set_num_threads(args.threads)
    try:
        load_extension()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    impls = IMPLS + (CANDIDATES if args.candidates else ())
    configs = [{"cell": cell, "layers": int(layers), "direction": direction}
               for cell in args.cells.split(",") for layers in args.layers.split(",")
               for direction in args.directions.split(",")]
    steps, warmup_sec, first_loss = {}, {}, {}
    for index, config in enumerate(configs):
        for impl in impls:
            step = Step(impl, config["cell"], config["layers"], config["direction"] == "bi", args)
            t0 = time.perf_counter()
            losses = [step() for _ in range(max(1, args.warmup))]  # the first call builds or compiles
            warmup_sec[index, impl] = time.perf_counter() - t0
            steps[index, impl] = step
            # Same weights, same batch, same state: every implementation's first loss must be torch's.
            first_loss[index, impl] = losses[0]
            reference = first_loss[index, "torch"]
            if abs(losses[0] - reference) > 1e-4 * max(1.0, abs(reference)):
                print(f"warning: {impl} {config}: first loss {losses[0]:.6f}, torch's {reference:.6f}",
                      file=sys.stderr)

    samples = {(index, impl): [] for index in range(len(configs)) for impl in impls}
    print(f"{len(configs)} configurations x {len(impls)} implementations, {args.rounds} rounds, "
          f"{args.threads} thread(s)", file=sys.stderr)
    for round_ in range(args.rounds):
        order = impls if round_ % 2 == 0 else impls[::-1]
        for index in range(len(configs)):
            for impl in order:
                step = steps[index, impl]
                t0 = time.perf_counter()
                for _ in range(args.repeat):
                    step()
                samples[index, impl].append((time.perf_counter() - t0) / args.repeat)

    rate = None
    calibration = None
    if args.calibration_size:
        calibration = matmul_rate("cpu", threads=args.threads, size=args.calibration_size)
        rate = calibration["flops_per_sec"]
    rows = []
    for index, config in enumerate(configs):
        flops = training_flops(VOCAB, config["cell"], config["layers"], config["direction"] == "bi", args.hidden,
                               args.steps * args.batch)
        config_rows = summarise(config, {impl: samples[index, impl] for impl in impls}, flops, rate)
        for row in config_rows:
            row["warmup_sec"] = warmup_sec[index, row["impl"]]
            row["first_loss"] = first_loss[index, row["impl"]]
        rows += config_rows
    print_table(rows, rate)
    if args.json_path:
        report = {"args": vars(args), "malloc": {k: os.environ.get(k) for k in KEEP_FREED_MEMORY},
                  "machine": describe(), "threads": torch.get_num_threads(), "calibration": calibration,
                  "results": rows}
        Path(args.json_path).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
