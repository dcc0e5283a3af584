"""The run folder, the one way anything reads or writes a run: its files and tables (``run_folder``,
described in docs/results-format.md), crash-safe writes (``atomic``) and the saved speed baselines that
``harness compare`` measures against (``speed_baselines``). Torch-free: read-only commands load only this,
the analysis and the presentation."""
