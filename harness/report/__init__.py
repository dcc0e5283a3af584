"""Presentation: the report of a run folder (``build``: load, analyse, assemble, render to Markdown and
HTML), its figures (``figures``), the words of each verdict (``wording``) and the speed tables of
``compare`` and ``ab`` (``speed_text``)."""
