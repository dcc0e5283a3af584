"""Side-by-side training speed: the harness against a plain PyTorch loop of the seed's recipe and against
the bare step, FLOP utilisation per cell type, and fp32 against bf16. Writes one markdown section.

All loops run in this one process and are interleaved epoch by epoch (the order rotates every round), so
that a change in the machine's load hits every loop alike. Each loop has its own model (same initial
weights) and its own data order (same seed). Epoch 1 of every loop is a warm-up and is not timed.

- harness: ``Trainer.epoch`` as ``run_cell`` calls it (batches and one-hot built once per epoch, loss read
  once per epoch).
- plain: the seed's loop written with stock PyTorch: ``F.one_hot`` per batch, ``nn.CrossEntropyLoss``,
  ``torch.nn.utils.clip_grad_norm_``, ``torch.optim.SGD``, ``.item()`` per step.
- bare: the floor: forward, loss, backward, clip, update on one-hot batches built before the clock starts;
  nothing else.

Run:  HARNESS_DATA_DIR=../shared/data python benchmarks/speed_study.py --epochs 20 --out speed.md
Check (seconds):  ... --epochs 2 --hidden 16 --max-tokens 2000 --out /tmp/speed.md
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from harness.host.calibration import matmul_rate  # noqa: E402
from harness.spec.config import CellConfig  # noqa: E402
from harness.cell.batches import BATCHERS, load_corpus  # noqa: E402
from harness.host.machine import describe  # noqa: E402
from harness.cell.model import CharRNN, detach_state, training_flops  # noqa: E402
from harness.cell.evaluation import heldout_ppl  # noqa: E402
from harness.cell.precision import cpu_has_native_bf16  # noqa: E402
from harness.cell.optimizers import ForeachSGD  # noqa: E402
from harness.cell.train import Trainer, synchronize  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="timed epochs per loop, after one warm-up")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=10_000)
    parser.add_argument("--corpus", default="gutenberg-35")
    parser.add_argument("--calibration-size", type=int, default=2048)
    parser.add_argument("--directions", default="uni,bi", help="directions of the loops part (default: uni,bi)")
    parser.add_argument("--parts", default="loops,utilization,precision",
                        help="comma-separated subset of loops,utilization,precision (default: all)")
    return parser.parse_args(argv)


class HarnessLoop:
    """What run_cell times for one epoch."""

    def __init__(self, cfg: CellConfig, corpus, device):
        torch.manual_seed(cfg.seed)
        self.cfg, self.corpus, self.device = cfg, corpus, device
        self.model = CharRNN(len(corpus.vocab), cfg.cell, cfg.layers, cfg.bidirectional, cfg.hidden).to(device)
        self.trainer = Trainer(self.model, cfg, device)
        self.tokens = corpus.train.to(device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.train_ppl = None

    def epoch(self) -> None:
        xs, ys = BATCHERS[self.cfg.sampling](self.tokens, self.cfg.batch_size, self.cfg.num_steps, self.generator)
        loss_sum, tokens = self.trainer.epoch(xs, ys)
        self.train_ppl = _exp(float(loss_sum) / tokens)


class PlainLoop:
    """The seed's training epoch with stock PyTorch pieces (and its per-batch habits)."""

    def __init__(self, cfg: CellConfig, corpus, device):
        torch.manual_seed(cfg.seed)
        self.cfg, self.device, self.vocab = cfg, device, len(corpus.vocab)
        self.model = CharRNN(self.vocab, cfg.cell, cfg.layers, cfg.bidirectional, cfg.hidden).to(device)
        self.loss = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr)
        self.tokens = corpus.train  # batches move to the device one at a time, as in the seed
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.train_ppl = None

    def epoch(self) -> None:
        xs, ys = BATCHERS[self.cfg.sampling](self.tokens, self.cfg.batch_size, self.cfg.num_steps, self.generator)
        state, total, count = None, 0.0, 0
        for X, Y in zip(xs, ys):
            if state is not None:
                state = detach_state(state)
            y = Y.T.reshape(-1).to(self.device)
            x = F.one_hot(X.T.long().to(self.device), self.vocab).to(torch.float32)
            out, state = self.model.rnn(x, state)
            y_hat = self.model.head(out.reshape(-1, out.shape[-1]))
            loss = self.loss(y_hat, y.long()).mean()
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
            self.optimizer.step()
            total += loss.item() * y.numel()
            count += y.numel()
        self.train_ppl = _exp(total / count)


class BareLoop:
    """Forward, loss, backward, clip, update on one-hot batches built once, before any clock; no loss
    bookkeeping. The floor of what any loop around this model can cost."""

    def __init__(self, cfg: CellConfig, corpus, device):
        torch.manual_seed(cfg.seed)
        self.cfg, self.device = cfg, device
        self.model = CharRNN(len(corpus.vocab), cfg.cell, cfg.layers, cfg.bidirectional, cfg.hidden).to(device)
        self.params = list(self.model.parameters())
        self.optimizer = ForeachSGD(self.params, cfg.lr)  # the same update kernel as the harness
        generator = torch.Generator().manual_seed(cfg.seed)
        xs, ys = BATCHERS[cfg.sampling](corpus.train.to(device), cfg.batch_size, cfg.num_steps, generator)
        self.xs = [self.model.one_hot(x) for x in xs]
        self.ys = [y.T.reshape(-1).contiguous() for y in ys]
        self.train_ppl = None

    def epoch(self) -> None:
        state = None
        for x, y in zip(self.xs, self.ys):
            logits, state = self.model.forward_one_hot(x, state)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip, foreach=True)
            self.optimizer.step()
            state = detach_state(state)


def _exp(x: float) -> float:
    import math

    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


def interleaved_epochs(loops: dict, epochs: int, device) -> dict[str, list[float]]:
    """Run one warm-up epoch of every loop, then ``epochs`` rounds, each loop once per round in an order
    that rotates every round. Returns each loop's epoch seconds (device synchronised around each)."""
    names = list(loops)
    for name in names:
        loops[name].epoch()
    seconds = {name: [] for name in names}
    for r in range(epochs):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            loops[name].epoch()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def spread(samples: list[float]) -> tuple[float, float]:
    """Median and interquartile range."""
    if len(samples) < 2:
        return samples[0], 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return statistics.median(samples), q3 - q1


def paired_ratio(numerator: list[float], denominator: list[float], confidence: float = 0.95,
                 resamples: int = 2000) -> tuple[float, float, float]:
    """Median of the per-round ratios numerator[r] / denominator[r] and a percentile bootstrap interval
    of that median. The two epochs of a round ran back to back, so a slow minute of the machine
    touches both and largely cancels in their ratio, unlike in a ratio of the two medians."""
    import numpy as np

    ratios = np.asarray(numerator, float) / np.asarray(denominator, float)
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(ratios, size=(resamples, len(ratios))), axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(np.median(ratios)), float(low), float(high)


def config(args, **overrides) -> CellConfig:
    values = dict(corpus=args.corpus, max_tokens=args.max_tokens, val_tokens=min(5000, args.max_tokens // 2),
                  hidden=args.hidden, device=args.device, threads=args.threads, epochs=args.epochs + 1)
    values.update(overrides)
    return CellConfig(**values)


def loop_comparison(args, corpus, device) -> list[str]:
    lines = ["### LSTM, 2 layers: harness against the seed's plain loop and the bare step", "",
             "harness / loop: the ratio of medians, and the median of the per-round ratios (each round runs "
             "one epoch of every loop back to back) with a 95% bootstrap interval; below 1 the harness is "
             "faster. Targets: at most 1 against the plain seed loop, at most 1.03 against the bare step.", "",
             "| direction | loop | s/epoch (median) | IQR | harness / loop (medians) | "
             "harness / loop (per round) [95% CI] |", "| --- | --- | --- | --- | --- | --- |"]
    for direction in args.directions.split(","):
        cfg = config(args, cell="lstm", layers=2, direction=direction)
        loops = {"harness": HarnessLoop(cfg, corpus, device), "plain seed loop": PlainLoop(cfg, corpus, device),
                 "bare step": BareLoop(cfg, corpus, device)}
        if device.type == "cuda":
            loops["harness, cuda_graphs"] = HarnessLoop(cfg.model_copy(update={"cuda_graphs": True}), corpus, device)
        seconds = interleaved_epochs(loops, args.epochs, device)
        harness_median = statistics.median(seconds["harness"])
        for name, samples in seconds.items():
            median, iqr = spread(samples)
            paired, low, high = paired_ratio(seconds["harness"], samples)
            lines.append(f"| {direction} | {name} | {median:.4g} | {iqr:.2g} | {harness_median / median:.3f} | "
                         f"{paired:.3f} [{low:.3f}, {high:.3f}] |")
    return lines + [""]


def utilization_by_cell(args, corpus, device, rate: float) -> list[str]:
    lines = ["### FLOP utilisation by cell type (2 layers, uni, fp32)", "",
             f"Against the calibrated float32 matrix-product rate of {rate / 1e9:.4g} GFLOP/s.", "",
             "| cell | loop | s/epoch (median) | IQR | GFLOP/s | utilisation |", "| --- | --- | --- | --- | --- | --- |"]
    for cell in ("rnn", "gru", "lstm"):
        cfg = config(args, cell=cell, layers=2, direction="uni")
        loops = {"harness": HarnessLoop(cfg, corpus, device), "bare step": BareLoop(cfg, corpus, device)}
        tokens = len(loops["bare step"].ys) * loops["bare step"].ys[0].numel()
        flops = training_flops(len(corpus.vocab), cell, 2, False, cfg.hidden, tokens)
        seconds = interleaved_epochs(loops, args.epochs, device)
        for name, samples in seconds.items():
            median, iqr = spread(samples)
            achieved = flops / median
            lines.append(f"| {cell} | {name} | {median:.4g} | {iqr:.2g} | {achieved / 1e9:.4g} | {achieved / rate:.3f} |")
    return lines + [""]


def precision_comparison(args, corpus, device) -> list[str]:
    lines = ["### fp32 against bf16 (LSTM, 2 layers, uni)", ""]
    if device.type == "cpu":
        native = cpu_has_native_bf16()
        lines += [f"Native bf16 instructions on this CPU (oneDNN): {native}.", ""]
    loops = {p: HarnessLoop(config(args, cell="lstm", layers=2, direction="uni", precision=p), corpus, device)
             for p in ("fp32", "bf16")}
    try:
        seconds = interleaved_epochs(loops, args.epochs, device)
    except RuntimeError as exc:
        return lines + [f"bf16 did not run here: {str(exc).splitlines()[0]}", ""]
    lines += [f"Perplexities after {args.epochs + 1} epochs (warm-up included), validation teacher-forced.", "",
              "| precision | s/epoch (median) | IQR | fp32 / this | train ppl | val ppl |",
              "| --- | --- | --- | --- | --- | --- |"]
    fp32_median = statistics.median(seconds["fp32"])
    for precision, loop in loops.items():
        median, iqr = spread(seconds[precision])
        loop.model.eval()
        val, _ = heldout_ppl(loop.model, corpus.tokens.to(device), loop.cfg.max_tokens, loop.cfg.val_tokens,
                             loop.cfg, device)
        lines.append(f"| {precision} | {median:.4g} | {iqr:.2g} | {fp32_median / median:.3f} | "
                     f"{loop.train_ppl:.4g} | {val:.4g} |")
    return lines + [""]


def machine_section(args, calibration: dict) -> list[str]:
    info = describe()
    rows = [("date (UTC)", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")),
            ("command", " ".join(["python", *sys.argv])), ("device", args.device)]
    rows += [(key, info.get(key)) for key in ("cpu_model", "cpu_count", "gpu_name", "python", "torch", "cuda", "cudnn")]
    rows += [("torch threads", torch.get_num_threads()),
             ("recipe", f"hidden {args.hidden}, batch 32, steps 35, lr 1, clip 1, sequential, "
                        f"{args.max_tokens} training tokens of {args.corpus}"),
             ("epochs", f"1 warm-up + {args.epochs} timed per loop, interleaved"),
             (f"{calibration['size']}² float32 product", f"{calibration['flops_per_sec'] / 1e9:.4g} GFLOP/s (median of "
              f"{len(calibration['samples_sec'])}; samples {', '.join(f'{s * 1e3:.3g}' for s in calibration['samples_sec'])} ms)")]
    return ["| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows] + [""]


PARTS = ("loops", "utilization", "precision")


def main(argv=None) -> int:
    args = parse_args(argv)
    chosen = args.parts.split(",")
    unknown = set(chosen) - set(PARTS)
    if unknown:
        print(f"error: --parts: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    corpus = load_corpus(args.corpus, max_tokens=args.max_tokens, val_tokens=min(5000, args.max_tokens // 2))
    calibration = matmul_rate(args.device, args.threads, size=args.calibration_size)
    sections = ["## Speed study", ""] + machine_section(args, calibration)
    parts = {"loops": lambda: loop_comparison(args, corpus, device),
             "utilization": lambda: utilization_by_cell(args, corpus, device, calibration["flops_per_sec"]),
             "precision": lambda: precision_comparison(args, corpus, device)}
    for name in chosen:
        sections += parts[name]()
        print("\n".join(sections[-12:]), file=sys.stderr)
    Path(args.out).write_text("\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
