"""rnn-harness: benchmark and ablation harness for deep and bidirectional character-level RNNs."""

__version__ = "0.1.0"
