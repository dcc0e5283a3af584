"""Many cells: the runner that plans a suite's grid, runs each cell in its own worker process with progress,
timeouts and resume (``runner``), the Ray executor that spreads cells over GPUs (``ray_executor``), the
interleaved A/B speed check between two revisions (``ab``) and TensorBoard logs (``tensorboard``)."""
