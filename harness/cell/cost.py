"""A cell's training time, estimated before it runs (``list``, ``run --dry-run``, the runner's ETA).

Torch-free arithmetic. On a CPU an epoch costs its FLOPs at an effective rate plus a fixed cost per time
step of every layer and direction (the recurrence runs step by step, and those steps' small products and
kernel calls dominate a small network), which differs by cell type and grows with the hidden size. A
held-out evaluation costs its forward arithmetic, which grows with the held-out tokens and the window.
Fitted to quiet runs on a 2-core CPU: the timing pass of the lesson's grid (``results/full-cpu-timing``, hidden 256, two threads; every configuration's median epoch
within 25%), ``results/example`` (hidden 64) and the quiet cells of ``results/full-cpu`` (one thread, with
evaluations). Rough by design: a machine of another kind is faster or slower as a whole, which the
runner's ETA corrects as cells finish.
"""

from __future__ import annotations

from harness.cell.flops import STREAM_SEGMENT, model_hidden, training_flops

VOCAB = 28  # a-z, space and the unknown token
CPU_FLOPS_PER_SEC = 235e9  # effective, two threads
# Per time step of one layer and direction: a fixed part and one proportional to the hidden size.
CPU_STEP_SEC = {"rnn": (33e-6, 80e-6), "gru": (87e-6, 257e-6), "lstm": (2e-6, 165e-6)}  # (fixed, per 256 hidden)
ONE_THREAD_FACTOR = 1.4  # one thread against two: 1.1-1.6x on the grid's LSTM and GRU cells
# A held-out evaluation is forward passes over ``val_tokens`` windows of ``num_steps + 1`` characters (two
# passes for a bidirectional cell: teacher-forced and causal), in batches of 1024 windows: its arithmetic
# runs at about half the training rate, plus a fixed part (setting up, generating the text samples).
EVAL_RATE_FACTOR = 2.0
EVAL_FIXED_SEC = 0.1
CELL_START_SEC = 1.5  # data and model set-up in the cell's process
# model.impl fused against nn.GRU / nn.RNN: an epoch's time, measured interleaved with harness ab (2 layers,
# uni and bi, one thread, results/fused-ab: 0.76-0.81).
FUSED_FACTOR = 0.78
# A selection evaluation of a unidirectional cell reads its text as a stream: about a tenth of an epoch of
# 10,000 tokens per 2,000 selection tokens (measured on GRU and LSTM, 1 and 4 layers: 0.09-0.14).
STREAMED_EPOCH_SHARE = 0.12
CUDA_FLOPS_PER_SEC, CUDA_STEP_SEC = 20e12, 0.6e-3  # a guess: no CUDA run has been timed with this model


def estimated_cell(config) -> str:
    """The cell type whose cost stands for this cell's: its own, or for a user's module (``model.cell:
    package.module:factory``), whose work is unknown beforehand, a GRU's of the same size."""
    return config.cell if config.cell in CPU_STEP_SEC else "gru"


def _forward_flops(config, positions: int) -> float:
    """Forward matrix-product FLOPs of ``positions`` time steps of ``config``'s model."""
    return training_flops(VOCAB, estimated_cell(config), config.layers, config.direction == "bi", model_hidden(config, VOCAB), positions) / 3


def _thread_scale(config) -> float:
    return ONE_THREAD_FACTOR if config.threads == 1 else 1.0


def _epoch_parts(config) -> tuple[float, float]:
    """(arithmetic, per-step) seconds of one epoch of ``config`` (a ``CellConfig``)."""
    window = config.batch_size * config.num_steps
    tokens = (config.max_tokens // window) * window
    directions = 2 if config.direction == "bi" else 1
    flops = training_flops(VOCAB, estimated_cell(config), config.layers, config.direction == "bi", model_hidden(config, VOCAB), tokens)
    if config.device == "cuda":
        return flops / CUDA_FLOPS_PER_SEC, (tokens // window) * config.layers * CUDA_STEP_SEC
    fixed, per_256 = CPU_STEP_SEC[estimated_cell(config)]
    steps = (tokens // window) * config.num_steps * config.layers * directions
    scale = _thread_scale(config) * (FUSED_FACTOR if config.impl == "fused" and config.cell != "lstm" else 1.0)
    return scale * flops / CPU_FLOPS_PER_SEC, scale * steps * (fixed + per_256 * model_hidden(config, VOCAB) / 256)


def epoch_seconds(config) -> float:
    """Estimated seconds of one training epoch of ``config``."""
    return sum(_epoch_parts(config))


def evaluations(config) -> int:
    """How many held-out evaluations a cell runs: every ``eval_every`` epochs and after the last (unless
    ``eval_last`` is false), and one more at the epoch chosen on selection text (``select_every``)."""
    if not config.val_tokens:
        return 0
    every = config.eval_every
    chosen = 1 if config.select_every and config.select_tokens else 0
    at_end = 1 if config.eval_last and (not every or config.epochs % every) else 0
    return (config.epochs // every if every else 0) + at_end + chosen


def evaluation_seconds(config) -> float:
    """Estimated seconds of one held-out evaluation of ``config``."""
    if not config.val_tokens:
        return 0.0
    bidirectional = config.direction == "bi"
    positions = config.val_tokens * (config.num_steps + 1) * (2 if bidirectional else 1)
    forward = _forward_flops(config, positions)
    if config.device == "cuda":
        return forward / CUDA_FLOPS_PER_SEC + EVAL_FIXED_SEC
    return EVAL_RATE_FACTOR * _thread_scale(config) * forward / CPU_FLOPS_PER_SEC + EVAL_FIXED_SEC


def selection_seconds(config) -> float:
    """Estimated seconds of one evaluation of the selection text (``select_every``)."""
    if not config.select_every or not config.select_tokens:
        return 0.0
    if config.direction == "uni":
        # An epoch reads max_tokens, the selection evaluation select_tokens.
        return STREAMED_EPOCH_SHARE * epoch_seconds(config) * (config.select_tokens / 2000) * (10_000 / config.max_tokens)
    # Windowed as the held-out text's causal pass: one pass, not two.
    return (evaluation_seconds(config.model_copy(update={"val_tokens": config.select_tokens})) - EVAL_FIXED_SEC) / 2


def cell_flops(config) -> tuple[float, float]:
    """(training, evaluation) matrix-product FLOPs of the whole cell, as harness.cell.flops counts them (the
    one-hot input as a dense product, the head at every position): its epochs' forward and backward, and
    the forward passes of its held-out and selection evaluations as harness.cell.train runs them. With
    ``patience`` a cell may stop earlier: then an upper bound."""
    bidirectional = config.direction == "bi"
    window = config.batch_size * config.num_steps
    tokens = (config.max_tokens // window) * window
    training = 3 * config.epochs * _forward_flops(config, tokens)
    # Held-out: a window of num_steps + 1 characters per token; a bidirectional cell's causal pass reads the
    # same windows without their last character.
    positions = config.val_tokens * ((config.num_steps + 1) + (config.num_steps if bidirectional else 0))
    evaluation = evaluations(config) * _forward_flops(config, positions)
    if config.select_every and config.select_tokens:
        if bidirectional:  # a window of num_steps characters per token
            read = config.select_tokens * config.num_steps
        else:  # streamed: segments of STREAM_SEGMENT targets, each after num_steps characters of context
            read = -(-config.select_tokens // STREAM_SEGMENT) * (config.num_steps + STREAM_SEGMENT - 1)
        evaluation += (config.epochs // config.select_every) * _forward_flops(config, read)
    return float(training), float(evaluation)


def estimate_seconds(config) -> float:
    """Estimated seconds of the whole cell: its epochs, its held-out and selection evaluations and its set-up.
    With ``patience`` a cell may stop earlier: this is then an upper bound."""
    selections = config.epochs // config.select_every if config.select_every else 0
    return (config.epochs * epoch_seconds(config) + evaluations(config) * evaluation_seconds(config)
            + selections * selection_seconds(config) + CELL_START_SEC)
