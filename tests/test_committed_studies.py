"""The studies the README cites are data (results/) and their reports are derived (report/): rendering a
committed results folder again with today's code gives the verdicts its committed report shows, and the
example says what the README says it shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.report.build import build_report

ROOT = Path(__file__).resolve().parent.parent
# The committed reports of runs (report/history/ is a speed timeline: tests/test_history.py renders it).
STUDIES = [p.parent.name for p in sorted(ROOT.glob("report/*/index.md"))
           if (ROOT / "results" / p.parent.name).is_dir() and p.parent.name != "history"]


def _first_table(text: str) -> dict[str, list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return {row[0]: row for row in rows[2:]}


def summary(markdown: str) -> dict[str, list[str]]:
    """The answers table at the top of a report, and the other readings of the same claims folded into the
    appendix: claim -> its row."""
    rows = _first_table(markdown)
    heading = "### Appendix: Other readings of the same claims"
    if heading in markdown:
        rows.update(_first_table(markdown[markdown.index(heading):]))
    return rows


def condition_verdicts(markdown: str) -> dict[tuple[str, str], str]:
    """(claim, condition) -> verdict, from the report's tables of each claim under each condition."""
    verdicts, claim, header = {}, None, None
    for line in markdown.splitlines():
        if line.startswith("### ") and line.endswith(", by condition"):
            # A claim's other metrics are folded: in the Markdown, under the appendix's heading.
            claim, header = line[4:-len(", by condition")].removeprefix("Appendix: "), None
        elif claim and line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-: "):
                verdicts[(claim, cells[0])] = cells[header.index("verdict")]
        elif claim and line.strip() and header is not None:
            claim = None
    return verdicts


def timing_sources(markdown: str) -> list[Path]:
    """The timing passes a committed report took its timings from (``report --timings``), as it names them."""
    found = re.search(r"come from a separate timing pass: (.*?); the training run's own timings", markdown)
    names = re.findall(r"(?:^|; )([\w.-]+) \(\d+ cells", found.group(1)) if found else []
    return [ROOT / "results" / n for n in names]


@pytest.mark.parametrize("name", STUDIES)
def test_rendering_a_committed_study_again_gives_its_verdicts(name, tmp_path):
    markdown = (ROOT / "report" / name / "index.md").read_text()
    committed = summary(markdown)
    again = summary((build_report(ROOT / "results" / name, tmp_path / name, timing_dirs=timing_sources(markdown))
                     / "index.md").read_text())
    assert {claim: row[1] for claim, row in again.items()} == {claim: row[1] for claim, row in committed.items()}
    rendered = (tmp_path / name / "index.md").read_text()
    assert condition_verdicts(rendered) == condition_verdicts(markdown)


def test_condition_verdicts_are_read_from_each_claims_table():
    markdown = """## Under each condition

### Depth helps, by condition

| condition | cells | verdict | pooled effect [95% CI] |
|---|---|---|---|
| recipe | 24 | inconclusive | x1.09 [0.93, 1.29] |
| lr 2 | 24 | supported | x0.9 [0.85, 0.95] |

### Bidirectional is slow, by condition

| condition | cells | verdict |
|---|---|---|
| recipe | 24 | supported |

### Appendix: Depth helps (metric = train_ppl), by condition

| condition | cells | verdict |
|---|---|---|
| recipe | 24 | not supported |
"""
    assert condition_verdicts(markdown) == {("Depth helps", "recipe"): "inconclusive",
                                            ("Depth helps", "lr 2"): "supported",
                                            ("Bidirectional is slow", "recipe"): "supported",
                                            ("Depth helps (metric = train_ppl)", "recipe"): "not supported"}


@pytest.mark.skipif("example" not in STUDIES, reason="results/example is not committed")
def test_the_example_answers_as_the_readme_says(tmp_path):
    markdown = (build_report(ROOT / "results" / "example", tmp_path / "example") / "index.md").read_text()
    answers = summary(markdown)
    assert answers["Bidirectional is slow"][1] == "supported"
    assert "unigram (letter frequencies)" in markdown
    assert re.search(r"\d+ of \d+ finished cells did not learn", markdown) or "Every one of the" in markdown
    # No interval of zero width anywhere: [a, b] with a == b as printed.
    for low, high in re.findall(r"\[(-?[\d.,]+), (-?[\d.,]+)\]", markdown):
        assert low != high, (low, high)
