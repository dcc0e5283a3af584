"""Training FLOPs of the model, by arithmetic alone: torch-free, so that `list` and `run --dry-run`
estimate a grid without importing torch."""

from __future__ import annotations

# Gate blocks per recurrent layer: each is one (input + hidden) x hidden matrix product.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# Targets per segment of a streamed evaluation (harness.cell.evaluation.streamed_ppl); here, torch-free, so that the
# cost estimates count what it reads.
STREAM_SEGMENT = 256


def forward_flops_per_token(vocab_size: int, cell: str, layers: int, bidirectional: bool, hidden: int) -> int:
    """Matrix-product FLOPs of one forward time step for one sequence (a multiply-add counts 2).

    Layer l, direction d: GATES[cell] blocks of (input_l + hidden) x hidden, where input_1 = vocab (the
    one-hot input enters as a dense product) and input_l = directions * hidden above it. Head:
    (directions * hidden) x vocab. Biases and element-wise gate arithmetic are O(hidden) and ignored.
    """
    directions = 2 if bidirectional else 1
    gates = GATES[cell]
    total = 0
    for layer in range(layers):
        inputs = vocab_size if layer == 0 else directions * hidden
        total += directions * 2 * gates * hidden * (inputs + hidden)
    total += 2 * directions * hidden * vocab_size
    return total


def training_flops(vocab_size: int, cell: str, layers: int, bidirectional: bool, hidden: int,
                   tokens: int) -> int:
    """Forward + backward FLOPs for ``tokens`` training positions: backward costs two forward products
    (gradients with respect to inputs and to weights), so the total is 3x the forward count."""
    return 3 * tokens * forward_flops_per_token(vocab_size, cell, layers, bidirectional, hidden)


def param_count(vocab_size: int, cell: str, layers: int, bidirectional: bool, hidden: int) -> int:
    """Parameters of the model (``harness.cell.model.CharRNN``): per layer and direction, GATES[cell] blocks of
    (input_l + hidden) x hidden weights and two biases of hidden each; the head's (directions * hidden) x vocab
    weights and vocab biases."""
    directions = 2 if bidirectional else 1
    gates = GATES[cell]
    total = 0
    for layer in range(layers):
        inputs = vocab_size if layer == 0 else directions * hidden
        total += directions * gates * hidden * (inputs + hidden + 2)
    return total + (directions * hidden + 1) * vocab_size


def hidden_for_params(target: int, vocab_size: int, cell: str, layers: int, bidirectional: bool) -> int:
    """The hidden size whose model has the parameter count closest to ``target`` (the smaller on a tie)."""
    def count(hidden):
        return param_count(vocab_size, cell, layers, bidirectional, hidden)

    low, high = 1, 1
    while count(high) < target:  # the count grows with the hidden size: find a bracket, then bisect
        low, high = high, high * 2
    while low < high:
        middle = (low + high) // 2
        if count(middle) < target:
            low = middle + 1
        else:
            high = middle
    if high > 1 and target - count(high - 1) <= count(high) - target:
        return high - 1
    return high


def model_hidden(config, vocab_size: int) -> int:
    """The hidden size a cell trains with: ``model.hidden``, or the one closest to ``model.params`` parameters
    for its cell type, depth and direction."""
    if config.target_params is None or config.cell not in GATES:
        return config.hidden
    return hidden_for_params(config.target_params, vocab_size, config.cell, config.layers,
                             config.direction == "bi")
