"""An example of a user's own recurrent module, trained by the tests as ``model.cell: "example_cells:elman"``
(docs/guide.md, *Your own recurrent module*)."""

import torch
from torch import nn


class Elman(nn.Module):
    """A tanh recurrent network written out step by step from ``nn.RNNCell``s, with the interface of nn.GRU:
    time-major input, ``(output, state)`` back, the state of every layer and direction stacked."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool = False):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.directions = 2 if bidirectional else 1
        self.cells = nn.ModuleList(
            nn.RNNCell(input_size if layer == 0 else hidden_size * self.directions, hidden_size)
            for layer in range(num_layers) for _ in range(self.directions))

    def forward(self, x, state=None):
        steps, batch, _ = x.shape
        if state is None:
            state = x.new_zeros(self.num_layers * self.directions, batch, self.hidden_size)
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.directions):
                index = layer * self.directions + direction
                h, ys = state[index], [None] * steps
                for t in (range(steps) if direction == 0 else reversed(range(steps))):
                    h = self.cells[index](x[t], h)
                    ys[t] = h
                outputs.append(torch.stack(ys))
                finals.append(h)
            x = torch.cat(outputs, dim=-1)
        return x, torch.stack(finals)


def elman(input_size, hidden_size, num_layers, bidirectional=False):
    return Elman(input_size, hidden_size, num_layers, bidirectional)


def too_few_arguments(input_size):
    return Elman(input_size, 4, 1)


def not_a_module(input_size, hidden_size, num_layers, bidirectional=False):
    return "a string"


NOT_CALLABLE = 3
