"""Numbers to verdicts: the statistics shared by claims and speed checks (``stats``), the claims engine
(``claims``, ``conditions``), measures of generated text (``text_measures``), the perplexity of predictors
that learn nothing (``no_learning``), when a timing can be trusted (``timing_trust``) and the speed
decisions of ``harness compare`` (``speed_compare``). Pure functions of what ``harness.results`` read."""
