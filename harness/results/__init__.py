"""The run folder, the one way anything reads or writes a run (docs/results-format.md): the folder, its
records and the one reader every command uses (``run_folder``: ``RunDir.read``), its tables derived from the
records (``tables``), crash-safe writes (``atomic``), the one reader of run.json's calibration
(``calibration``), the raw epoch times of a run or a saved baseline (``speed_measurements``) and the saved speed
baselines that ``harness compare`` measures against (``speed_baselines``). Torch-free."""
