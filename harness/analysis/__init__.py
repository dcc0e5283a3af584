"""Numbers to verdicts, pure functions of what ``harness.results`` read: the statistics shared by claims and
speed checks (``stats``), the claims engine (``claims``, with its per-configuration ``evidence`` and the helpers
over the cell tables in ``cell_frames``; ``conditions``), the text a run trained on and its no-learning
baselines (``run_text``, ``no_learning``), measures of generated text (``text_measures``, ``sample_quality``),
when a timing can be trusted (``timing_trust``) and the speed decisions of ``compare`` and ``ab``
(``speed_compare``, ``ab_decision``). Torch-free."""
