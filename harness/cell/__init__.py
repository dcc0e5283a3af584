"""One cell, start to end: the corpus text and its tokens (``corpus``, torch-free), the model and its fused
CPU kernels (``model``, ``fused_rnn``, ``csrc/``), the training loop and its measurements (``train``),
checkpoints, the arithmetic cost of a cell (``flops``, ``cost``) and the profiler (``profiling``). A cell
reads its settings from ``harness.spec`` and writes through ``harness.results``."""
