"""What to run: a suite file parsed and validated into a grid of cells (``suite``), the settings of one cell
with their hash (``config``), and the claims a suite declares (``claims``). Nothing here trains or reads a
run; everything here is light enough for ``harness list`` and ``--help``."""
