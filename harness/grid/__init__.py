"""Many cells: the runner that plans a suite's grid and trains each cell with resume and crash safety
(``runner``), one cell's worker process with its timeout and the machine's load around it (``cell_process``),
the plan and the live progress line (``progress``), the Ray executor that spreads cells over machines and GPUs
(``ray_executor``), the interleaved A/B speed check between two revisions (``ab``) and TensorBoard logs
(``tensorboard``)."""
