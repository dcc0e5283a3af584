"""The machine a cell runs on: what it is (``machine``: CPU model and flags, GPU, versions), how its
allocator is set up (``malloc``), and how fast it multiplies matrices (``calibration``), so that a cell's
speed can be read as a share of what the machine can do."""
