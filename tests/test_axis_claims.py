"""A claim on any axis: declared in a suite, checked against its matrix, decided on literal tables and in
a report like the lesson's claims; bad declarations are one line each."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from harness.analysis.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, evaluate_claims
from harness.errors import HarnessError
from harness.report import wording
from harness.report.build import build_report
from harness.spec.claims import AXIS, parse_claims
from harness.spec.suite import load_suite

from fixtures import make_run_folder

BASELINES = {"uniform": 28.0, "unigram": 16.9, "bigram": 9.9}


def frame(rows) -> pd.DataFrame:
    """Rows of (cell, layers, hidden, lr, seed, causal ppl, seconds per epoch): unidirectional CPU cells."""
    table = pd.DataFrame(rows, columns=["cell", "layers", "hidden", "lr", "seed", "causal_ppl", "sec_per_epoch"])
    table["cell_id"] = [f"{r.cell}-l{r.layers}-h{r.hidden}-lr{r.lr}-s{r.seed}" for r in table.itertuples()]
    table["direction"], table["device"], table["status"] = "uni", "cpu", "ok"
    table["train_ppl"] = table["val_ppl"] = table["causal_ppl"]
    return table


def claim(**values):
    return parse_claims([{"name": "the claim", **values}], "suite.yaml")[0]


def decide(cells, spec):
    (result,) = evaluate_claims(cells, pd.DataFrame(), pd.DataFrame(), [spec], None, BASELINES)
    return result


def test_wider_helps_on_a_two_level_axis_is_decided_per_configuration():
    # hidden 64 is 20% better than hidden 8 for both cell types, seeds within 1%.
    rows = [(cell, 1, hidden, 1.0, seed, (8.0 if hidden == 8 else 6.4) * (1 + 0.01 * seed), 1.0)
            for cell in ("gru", "lstm") for hidden in (8, 64) for seed in (0, 1, 2)]
    spec = claim(axis="hidden", metric="causal_ppl", expect="lower")
    result = decide(frame(rows), spec)
    assert result.verdict == SUPPORTED and result.pooled.k == 2
    assert result.ratio[0] == pytest.approx(0.8, rel=0.01)
    assert set(result.deciding["comparison"]) == {"hidden 64 / 8"}
    assert result.title == "the claim" and wording.sentence(result).startswith("hidden 64 / 8: held-out causal ppl x0.8")
    # The same cells, the claim the other way round: not supported.
    assert decide(frame(rows), claim(axis="hidden", metric="causal_ppl", expect="higher")).verdict == NOT_SUPPORTED


def test_an_ordered_axis_compares_its_last_level_with_its_first_once_per_configuration():
    rows = [("gru", 1, 8, lr, seed, 8.0 * {0.5: 1.0, 1.0: 0.97, 2.0: 0.9}[lr] * (1 + 0.01 * seed), 1.0)
            for lr in (0.5, 1.0, 2.0) for seed in (0, 1)]
    result = decide(frame(rows), claim(axis="lr", metric="causal_ppl", expect="lower"))
    assert list(result.deciding["comparison"]) == ["lr 2 / 0.5"] and result.ratio[0] == pytest.approx(0.9, rel=0.01)
    # The per-level curve behind it is kept as evidence.
    levels = result.facts["levels_table"]
    assert list(levels["lr"]) == [0.5, 1.0, 2.0] and list(levels["seeds"]) == [2, 2, 2]
    # The report shows every level beside the comparison of the last with the first: here 8 x 0.97 in between.
    from harness.report.claim_sections import claim_section, levels_table

    shown = levels_table(result)
    assert len(shown) == 1 and list(shown.columns[-3:]) == ["lr 0.5", "lr 1", "lr 2"]
    assert list(shown.iloc[0, -3:]) == ["8.04 (2)", "7.799 (2)", "7.236 (2)"]
    folded = [b for b in claim_section(result, 0, False, {}) if b[0] == "details"][0][2]
    assert any(b[0] == "table" and b[1].equals(shown) for b in folded)
    two_levels = decide(frame([r for r in rows if r[3] != 1.0]), claim(axis="lr", metric="causal_ppl",
                                                                        expect="lower"))
    assert levels_table(two_levels).empty  # two levels: the comparison says it all


def test_each_level_against_a_base_is_pooled_on_its_own_and_disagreeing_levels_are_inconclusive():
    # lr 2 is 10% faster than the base (lr 1), lr 4 10% slower: they share the base's cells.
    speed = {1.0: 1.0, 2.0: 0.9, 4.0: 1.1}
    rows = [(cell, 1, 8, lr, seed, 8.0, speed[lr] * (1 + 0.005 * seed))
            for cell in ("gru", "lstm", "rnn") for lr in speed for seed in (0, 1, 2)]
    result = decide(frame(rows), claim(axis="lr", base=1, metric="sec_per_epoch", expect="lower"))
    assert result.verdict == INCONCLUSIVE and result.why.kind == "levels_differ"
    assert result.why.values["verdicts"] == {"lr 2 / 1": SUPPORTED, "lr 4 / 1": NOT_SUPPORTED}
    assert set(result.pooled_table["comparison"]) == {"lr 2 / 1", "lr 4 / 1"}
    assert "the levels reach different verdicts" in wording.reason(result)


def test_keys_that_move_with_the_axis_are_part_of_the_comparison_not_of_the_configuration():
    # An arm: sgd at lr 1 against adam at lr 0.003; the learning rate comes with the optimizer.
    rows = []
    for cell in ("gru", "lstm"):
        for optimizer, lr, ppl in (("sgd", 1.0, 8.0), ("adam", 0.003, 7.0)):
            for seed in (0, 1, 2):
                rows.append({"cell": cell, "optimizer": optimizer, "lr": lr, "seed": seed, "causal_ppl": ppl + 0.01 * seed})
    cells = pd.DataFrame(rows).assign(cell_id=lambda t: t.cell + t.optimizer + t.seed.astype(str), layers=1,
                                      direction="uni", device="cpu", status="ok")
    result = decide(cells, claim(axis="optimizer", base="sgd", metric="causal_ppl", expect="lower"))
    assert result.verdict == SUPPORTED and result.pooled.k == 2 and result.facts["moves_with"] == ["lr"]
    assert "with the optimizer, lr changed too" in wording.sentence(result)


def test_a_perplexity_claim_keeps_the_learned_gate():
    rows = [("gru", 1, hidden, 1.0, seed, 17.0 if hidden == 8 else 7.0, 1.0) for hidden in (8, 64) for seed in (0, 1)]
    result = decide(frame(rows), claim(axis="hidden", metric="causal_ppl", expect="lower"))
    assert result.verdict == INCONCLUSIVE and set(result.deciding["outcome"]) == {"reference_not_learned"}


def test_where_keeps_the_cells_a_claim_is_about():
    rows = [(cell, 1, hidden, 1.0, seed, (8.0 if hidden == 8 else (6.0 if cell == "gru" else 9.0)), 1.0)
            for cell in ("gru", "lstm") for hidden in (8, 64) for seed in (0, 1, 2)]
    result = decide(frame(rows), claim(axis="hidden", metric="causal_ppl", expect="lower", where={"cell": "gru"}))
    assert result.verdict == SUPPORTED and set(result.deciding["cell"]) == {"gru"}


def write_suite(tmp_path, claims: str, matrix: str = "{hidden: [8, 64], seed: [0, 1]}"):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""
        name: s
        train: {{epochs: 1}}
        matrix: {matrix}
        claims: {claims}
    """))
    return path


def test_a_suite_declares_a_claim_on_its_axis(tmp_path):
    suite = load_suite(write_suite(tmp_path, "[{name: wider helps, axis: model.hidden, metric: causal_ppl, expect: lower}]"))
    (spec,) = parse_claims(suite.claims, "s.yaml")
    assert spec.name == AXIS and spec.axis == "hidden" and spec.label == "wider helps" and spec.bound == 0.99


@pytest.mark.parametrize("claims, message", [
    ("[{name: c, axis: lr, metric: causal_ppl, expect: lower}]",
     "claims[0]: c: axis lr takes one value in this suite (1.0): nothing to compare; make it a matrix axis"),
    ("[{name: c, axis: hidden, metric: perplexity, expect: lower}]",
     "claims[0]: c.metric = 'perplexity': expected one of causal_ppl, val_ppl, train_ppl, best_causal_ppl, "
     "selected_causal_ppl, sec_per_epoch, peak_mem_bytes, tokens_per_sec"),
    ("[{name: c, axis: hidden, metric: causal_ppl, expect: smaller}]",
     "claims[0]: c.expect = 'smaller': expected one of lower, higher"),
    ("[{name: c, axis: hidden, metric: causal_ppl}]",
     "claims[0]: c: expect is required with an axis (lower or higher)"),
    ("[{name: c, axis: hidden, base: 32, metric: causal_ppl, expect: lower}]",
     "claims[0]: c: base 32 is not one of the values of hidden (8, 64)"),
    ("[{name: c, axis: widths, metric: causal_ppl, expect: lower}]", "unknown key"),
    ("[{name: depth_helps, axis: layers, metric: causal_ppl, expect: lower}]",
     "claims[0]: depth_helps is a shorthand of the lesson's claim and takes no axis"),
])
def test_bad_declarations_are_one_line_and_exit_2(tmp_path, claims, message):
    path = write_suite(tmp_path, claims)
    with pytest.raises(HarnessError, match=None) as info:
        load_suite(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    proc = subprocess.run([sys.executable, "-m", "harness", "list", str(path)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and message in proc.stderr


def test_a_non_numeric_axis_needs_a_base(tmp_path):
    path = write_suite(tmp_path, "[{name: c, axis: cell, metric: causal_ppl, expect: lower}]",
                       matrix="{cell: [gru, lstm]}")
    with pytest.raises(HarnessError, match="the values of cell are not numbers, .* give a base"):
        load_suite(path)


def test_the_report_decides_a_declared_claim_like_the_lessons(tmp_path):
    claims = [{"name": "bf16 is faster", "axis": "precision", "base": "fp32", "metric": "sec_per_epoch",
               "expect": "lower"},
              {"name": "bf16 keeps the perplexity", "axis": "precision", "base": "fp32", "metric": "causal_ppl",
               "expect": "lower"},
              "bidirectional_slow"]
    run_dir = make_run_folder(tmp_path, precisions=("fp32", "bf16"), claims=claims)
    run = json.loads((run_dir / "run.json").read_text())
    run["baselines"] = {"uniform": 28.0, "unigram": 16.9, "bigram": 9.9, "tokens": 2000}
    (run_dir / "run.json").write_text(json.dumps(run))
    markdown = (build_report(run_dir, tmp_path / "report") / "index.md").read_text()
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| claim"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells)
        elif rows:
            break
    # The fixture's bf16 epochs take 0.4 x the time and add 0.5 to the perplexity.
    faster = rows["bf16 is faster (metric = sec_per_epoch)"]
    assert faster[1] == "supported" and faster[2].startswith("x0.4")
    assert rows["bf16 keeps the perplexity"][1] == "not supported"
    assert rows["Bidirectional is slow"][1] == "supported"
    assert "## bf16 is faster (metric = sec_per_epoch)" in markdown


def test_the_first_screen_has_one_row_per_claim_and_folds_the_other_readings():
    from harness.report.tables import first_declarations

    specs = parse_claims(["depth_helps", {"name": "depth_helps", "metric": "train_ppl"}, "bidirectional_slow",
                          {"name": "wider", "axis": "hidden", "metric": "causal_ppl", "expect": "lower"},
                          {"name": "wider", "axis": "hidden", "metric": "train_ppl", "expect": "lower"}], "s.yaml")
    rows = [("gru", 1, hidden, 1.0, seed, 8.0, 1.0) for hidden in (8, 64) for seed in (0, 1)]
    results = evaluate_claims(frame(rows), pd.DataFrame(), pd.DataFrame(), specs, None, BASELINES)
    first, rest = first_declarations(results)
    assert [r.title for r in first] == ["Depth helps", "Bidirectional is slow", "wider"]
    assert [r.title for r in rest] == ["Depth helps (metric = train_ppl)", "wider (metric = train_ppl)"]
    # The same readings are folded in the claims' sections (figure, by-condition table); claims on an axis
    # with their own names are not readings of one another.
    from harness.report.claim_sections import repeated_claims

    assert repeated_claims(results) == [False, True, False, False, True]
    deeper = parse_claims([{"name": "deeper, lr 1", "axis": "layers", "metric": "causal_ppl", "expect": "lower"},
                           {"name": "deeper, lr 2", "axis": "layers", "metric": "causal_ppl", "expect": "lower"}],
                          "s.yaml")
    assert repeated_claims(evaluate_claims(frame(rows), pd.DataFrame(), pd.DataFrame(), deeper, None,
                                           BASELINES)) == [False, False]


def test_a_suite_with_a_claim_on_hidden_runs_and_its_report_decides_it(tmp_path):
    from test_train import PARAGRAPH

    (tmp_path / "book.txt").write_text(PARAGRAPH * 6, encoding="utf-8")
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""
        name: wider
        data: {corpus: book.txt, max_tokens: 1500, val_tokens: 300}
        model: {layers: 1}
        train: {epochs: 30, lr: 4.0, batch_size: 8}
        eval: {every: 5, sample_chars: 5}
        run: {threads: 1, timeout: 600}
        matrix: {hidden: [4, 64], seed: [0, 1, 2]}
        claims:
          - {name: wider helps, axis: hidden, metric: best_causal_ppl, expect: lower}
    """))
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "s.yaml", "--out", "run"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    first = next(line for line in (tmp_path / "run-report" / "index.md").read_text().splitlines()
                 if line.startswith("| wider helps"))
    cells = [c.strip() for c in first.strip("|").split("|")]
    # hidden 64 learns this short text far better than hidden 4 in 30 epochs (measured: x0.55).
    assert cells[1] == "supported" and cells[4].startswith("hidden 64 / 4: best held-out causal ppl x0.")
    assert (tmp_path / "run" / "losses").is_dir()
