"""One cell, start to end: the corpus text (``corpus``, torch-free) and its splits and minibatches
(``batches``), the model and its fused CPU kernels (``model``, ``fused_rnn``, ``csrc/``), the training loop
(``train``), the scoring of held-out and selection text with the choice of the best epoch (``evaluation``),
bf16 (``precision``), checkpoints, the arithmetic cost of a cell (``flops``, ``cost``) and the profiler
(``profiling``). A cell reads its settings from ``harness.spec`` and writes through ``harness.results``."""
