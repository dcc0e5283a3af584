"""The character-level recurrent language model of the lesson, its size and its training FLOPs. No I/O."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

from harness.cell.plugin import build_module, is_plugin
from harness.cell.flops import GATES, forward_flops_per_token, training_flops  # noqa: F401 - re-exported

RNN_CLASSES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def recurrent_class(cell: str, impl: str = "torch") -> type[nn.Module]:
    """The recurrent stack's class. ``fused``: harness.cell.fused_rnn's subclasses of nn.GRU / nn.RNN (same
    parameters, same initialisation, one call per layer and direction); LSTM keeps nn.LSTM, which PyTorch
    already runs as one fused oneDNN primitive on the CPU."""
    if impl == "fused" and cell in ("gru", "rnn"):
        from harness.cell.fused_rnn import FUSED_CLASSES, load_extension

        load_extension()  # built (or loaded from its cache) now, not inside the first timed step
        return FUSED_CLASSES[cell]
    return RNN_CLASSES[cell]


@torch.no_grad()
def set_forget_bias(lstm: nn.LSTM, value: float) -> None:
    """Every layer's and direction's forget gate starts with bias ``value``: the input bias's forget part (the
    second quarter: PyTorch orders the gates i, f, g, o) is set to it and the recurrent bias's to 0, so that the
    gate's total bias is ``value``."""
    hidden = lstm.hidden_size
    for name, bias in lstm.named_parameters():
        if name.startswith("bias_"):
            bias[hidden:2 * hidden] = value if name.startswith("bias_ih") else 0.0


class CharRNN(nn.Module):
    """nn.RNN (tanh) / nn.GRU / nn.LSTM over one-hot characters, then a linear head over all directions.

    Inputs are (batch, steps) token indices as in the seed; outputs are time-major logits of shape
    (steps * batch, vocab), matching targets ``Y.T.reshape(-1)``. The one-hot encoding is an embedding
    lookup into an identity matrix, which gives exactly ``F.one_hot(x).float()`` without the per-call
    range check that forces a host-device synchronisation on CUDA.
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", layers: int = 2, bidirectional: bool = False,
                 hidden: int = 256, impl: str = "torch", forget_bias: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.cell = cell
        self.num_directions = 2 if bidirectional else 1
        # Between layers only where there are two (nn.RNN warns otherwise); the output's dropout covers the last.
        between = {"dropout": dropout} if dropout and layers > 1 else {}
        if is_plugin(cell):
            self.rnn = build_module(cell, vocab_size, hidden, layers, bidirectional)
        else:
            self.rnn = recurrent_class(cell, impl)(vocab_size, hidden, layers, bidirectional=bidirectional, **between)
        if cell == "lstm" and forget_bias:
            set_forget_bias(self.rnn, forget_bias)
        self.output_dropout = nn.Dropout(dropout) if dropout else None
        self.head = nn.Linear(hidden * self.num_directions, vocab_size)
        self.register_buffer("identity", torch.eye(vocab_size), persistent=False)

    def one_hot(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, steps) indices -> (steps, batch, vocab) float one-hot, time-major."""
        return F.embedding(tokens.T, self.identity)

    def forward(self, tokens: torch.Tensor, state=None):
        return self.forward_one_hot(self.one_hot(tokens), state)

    def forward_one_hot(self, x: torch.Tensor, state=None):
        dtype = _autocast_dtype(x)
        if dtype is None:
            y, state = self.rnn(x, state)
        else:
            y, state = self._recurrent_in(dtype, x, state)
        if self.output_dropout is not None:
            y = self.output_dropout(y)
        return self.head(y.reshape(-1, y.shape[-1])), state

    def _recurrent_in(self, dtype: torch.dtype, x: torch.Tensor, state):
        """The recurrent layers entirely in ``dtype``: weights (cast from the float32 masters, so their
        gradients flow back to them), inputs and state.

        Autocast alone does not do this. On CUDA it runs cuDNN's recurrent kernels in float16 even when
        bf16 was asked for. On CPU, for LSTM it casts only inside the oneDNN layer, after
        PyTorch has chosen that kernel for float32 inputs, so on a CPU without native bf16 the oneDNN
        primitive cannot be created and the step fails; for GRU and tanh-RNN (which run PyTorch's own
        cell loop) it casts each step's matrix products but keeps the state in float32, adding casts
        every step. With everything in ``dtype`` PyTorch picks the kernel for that dtype: the oneDNN bf16
        LSTM where the CPU supports it (the same call autocast makes there), its own cell loop in bf16
        elsewhere."""
        weights = {name: p.to(dtype) for name, p in self.rnn.named_parameters()}
        if state is not None:
            state = tuple(s.to(dtype) for s in state) if isinstance(state, tuple) else state.to(dtype)
        # Autocast off for the call itself: everything is in ``dtype`` already, and CUDA autocast would
        # recast cuDNN's inputs to float16. cuDNN copies the cast weights into one buffer per call (as
        # autocast's own cast does) and warns that they are not one chunk: expected here.
        with torch.autocast(x.device.type, enabled=False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            return torch.func.functional_call(self.rnn, weights, (x.to(dtype), state))

    def begin_state(self, batch_size: int, device=None):
        shape = (self.num_directions * self.rnn.num_layers, batch_size, self.rnn.hidden_size)
        device = device if device is not None else self.identity.device
        if self.cell == "lstm":
            return (torch.zeros(shape, device=device), torch.zeros(shape, device=device))
        return torch.zeros(shape, device=device)


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype the recurrent layers must be run in by hand, or None to leave them to autocast (or to
    float32 when autocast is off).

    CPU: any lower-precision autocast (see ``CharRNN._recurrent_in``). CUDA: bf16 only, because CUDA
    autocast runs the cuDNN recurrent kernels in float16 whatever dtype was asked for."""
    device = x.device.type
    if device not in ("cpu", "cuda"):
        return None
    try:
        enabled, dtype = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    except TypeError:  # torch < 2.4
        if device == "cpu":
            enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    if not enabled or dtype == torch.float32 or (device == "cuda" and dtype != torch.bfloat16):
        return None
    return dtype


def detach_state(state):
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
