"""The claims engine on literal tables with known answers: pooled effects decide, comparisons where
a side that did not learn do not count, no interval has zero width, and the text measures catch degenerate
samples."""

from __future__ import annotations

import math
from dataclasses import fields

import pandas as pd
import pytest

from harness.report import wording
from harness.analysis import claims
from harness.analysis.no_learning import no_learning_baselines
from harness.analysis.cell_frames import training_curves, value_at_time
from harness.analysis.claims import (DEEPER, INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Note, Why, default_claim,
                                     evaluate_claims, leak_comparison, parse_claims)
from harness.analysis.evidence import NOT_COUNTED
from harness.errors import HarnessError
from harness.analysis.stats import (Effect, Replicates, configuration_effect, log_interval, pool, pooled_spread,
                                   random_effects, sign_test, t_interval, t_quantile)
from harness.analysis.text_measures import compression, distinct_share, is_degenerate, longest_repeat, measure, word_share

COLUMNS = ["cell", "layers", "direction", "seed", "causal_ppl", "val_ppl", "train_ppl", "sec_per_epoch",
           "peak_mem_bytes"]
BASELINES = {"uniform": 28.0, "unigram": 16.9, "bigram": 9.9}


def cells_frame(rows, status=None) -> pd.DataFrame:
    """Rows of (cell, layers, direction, seed, causal, val, train, sec/epoch, peak memory) on CPU."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.insert(3, "device", "cpu")
    frame.insert(0, "cell_id", [f"{r.cell}-l{r.layers}-{r.direction}-cpu-s{r.seed}" for r in frame.itertuples()])
    frame["status"] = status or "ok"
    return frame


def run(cells, spec, epochs=None, samples=None, words=None, baselines=BASELINES, warnings=None):
    epochs = epochs if epochs is not None else pd.DataFrame()
    samples = samples if samples is not None else pd.DataFrame()
    (result,) = evaluate_claims(cells, epochs, samples, [spec], words, baselines, warnings)
    return result


def grid(cells=("rnn", "gru", "lstm"), layers=(1, 2, 3, 4), seeds=(0, 1), causal=None, sec=None, train=None,
         val=None):
    """A uni/bi grid whose values come from functions of (cell, layers, direction, seed)."""
    rows = []
    for cell in cells:
        for n in layers:
            for direction in ("uni", "bi"):
                for seed in seeds:
                    key = (cell, n, direction, seed)
                    c = causal(*key) if causal else 8.0
                    rows.append((cell, n, direction, seed, c, val(*key) if val else c * 0.97,
                                 train(*key) if train else c * 0.8, sec(*key) if sec else 1.0, 1e6))
    return cells_frame(rows)


def epochs_of(cells, epochs=5) -> pd.DataFrame:
    """Learning curves that fall to each cell's final perplexities, one epoch lasting its sec_per_epoch."""
    rows = []
    for r in cells.itertuples():
        for epoch in range(1, epochs + 1):
            late = 10.0 / epoch
            rows.append({"cell_id": r.cell_id, "epoch": epoch, "sec": r.sec_per_epoch, "warmup": False,
                         "causal_ppl": r.causal_ppl + late, "val_ppl": r.val_ppl + late, "train_ppl": r.train_ppl + late})
    return pd.DataFrame(rows)


# --- the decisions the claims must reach ------------------------------------------------------------------


def test_twelve_configurations_all_about_twice_as_slow_with_two_seeds_are_supported():
    # Seeds differ by a few percent, configurations by their own slowdown (1.8x to 2.2x).
    slowdown = {("rnn", 1): 1.8, ("rnn", 2): 2.0, ("rnn", 3): 2.1, ("rnn", 4): 2.2, ("gru", 1): 1.9,
                ("gru", 2): 2.0, ("gru", 3): 2.05, ("gru", 4): 2.15, ("lstm", 1): 1.85, ("lstm", 2): 2.1,
                ("lstm", 3): 1.95, ("lstm", 4): 2.2}
    cells = grid(sec=lambda c, n, d, s: 0.1 * n * (slowdown[(c, n)] if d == "bi" else 1.0) * (1.03 if s else 0.98))
    result = run(cells, default_claim("bidirectional_slow"))
    assert result.verdict == SUPPORTED
    ratio, low, high = result.ratio
    assert 1.9 < ratio < 2.1 and 1.1 < low < ratio < high < 2.5
    assert result.pooled.k == 12
    # Per cell type too, and every configuration is shown with its own interval (evidence, not votes).
    assert set(result.pooled_table["cells"]) == {"all", "rnn", "gru", "lstm"}
    deciding = result.deciding
    assert len(deciding) == 12 and (deciding["ci_low"] < deciding["ratio"]).all()
    assert (deciding["ci_high"] - deciding["ci_low"] > 0).all()


def test_effects_of_mixed_sign_are_inconclusive():
    # Half the configurations 1.5x slower, half 1.5x faster: the pooled interval straddles the threshold.
    cells = grid(sec=lambda c, n, d, s: 0.1 * n * ((1.5 if n % 2 else 1 / 1.5) if d == "bi" else 1.0)
                 * (1.02 if s else 0.99))
    result = run(cells, default_claim("bidirectional_slow"))
    assert result.verdict == INCONCLUSIVE and "includes x1.1" in wording.reason(result)
    ratio, low, high = result.ratio
    assert low < 1.0 < high


def test_clear_effect_opposite_to_the_claim_is_not_supported():
    cells = grid(sec=lambda c, n, d, s: 0.1 * n * (0.8 if d == "bi" else 1.0) * (1.01 if s else 0.99))
    result = run(cells, default_claim("bidirectional_slow"))
    assert result.verdict == NOT_SUPPORTED and "below x1.1" in wording.reason(result)


def test_comparisons_where_neither_side_learned_are_shown_but_not_counted():
    # GRU and LSTM cells sit at the unigram plateau (16.9) in both directions; RNN cells learned, and there
    # bidirectional is 1.4x worse.
    def causal(cell, n, direction, seed):
        if cell != "rnn":
            return 16.9 + 0.01 * seed
        return 7.0 * (1.4 if direction == "bi" else 1.0) * (1.01 if seed else 1.0)

    result = run(grid(causal=causal), default_claim("bidirectional_useless"))
    deciding = result.deciding
    not_counted = deciding[deciding["bearing"] == NOT_COUNTED]
    assert set(not_counted["cell"]) == {"gru", "lstm"} and len(not_counted) == 8
    assert not not_counted["counted"].any()
    assert result.pooled.k == 4 and result.verdict == SUPPORTED
    assert any("neither side learned" in note for note in wording.notes(result))
    assert "only one side learned" not in wording.summary_sentence(result)  # neither: not an outcome to name
    # All at the plateau: nothing to decide on.
    flat = run(grid(causal=lambda c, n, d, s: 17.0 + 0.01 * s), default_claim("bidirectional_useless"))
    assert flat.verdict == INCONCLUSIVE and "did not learn" in wording.reason(flat)


def test_a_comparison_with_a_side_that_did_not_learn_is_shown_not_pooled():
    # 1-layer cells learned, 2-layer cells stayed at the plateau: the ratio would measure the plateau.
    cells = grid(layers=(1, 2), causal=lambda c, n, d, s: (8.0 if n == 1 else 17.5) * (1.01 if s else 1.0))
    result = run(cells, default_claim("depth_helps"))
    assert result.verdict == INCONCLUSIVE and "did not learn" in wording.reason(result)
    assert not result.deciding["counted"].any() and set(result.deciding["outcome"]) == {"compared_not_learned"}
    assert any("in 3 the compared side did not learn" in note for note in wording.notes(result))
    # The rule is stated as what not learning means (the 2-layer cells sit above it).
    assert "did not learn (best held-out causal perplexity above 0.95 x the unigram baseline)" in wording.reason(result)
    # The first screen names the configurations where only one side learned.
    assert wording.summary_sentence(result).endswith(
        "Not pooled, as only one side learned: gru uni cpu (1 -> 2 layers): only the reference side learned; "
        "lstm uni cpu (1 -> 2 layers): only the reference side learned; rnn uni cpu (1 -> 2 layers): only the "
        "reference side learned.")


def test_one_seed_on_the_plateau_keeps_its_configuration_out_of_the_pool():
    # RNN 1 -> 2 layers: seed 1 of the 2-layer RNN never left the plateau; every other step learned.
    def causal(cell, n, direction, seed):
        return 17.0 if (cell, n, seed) == ("rnn", 2, 1) else 8.0 * (0.95 if n == 2 else 1.0) * (1.01 if seed else 1.0)

    result = run(grid(layers=(1, 2), causal=causal), default_claim("depth_helps"))
    not_counted = result.deciding[~result.deciding["counted"]]
    assert list(not_counted["cell"]) == ["rnn"] and result.pooled.k == 2 and result.verdict == SUPPORTED


def test_a_cell_just_below_the_letter_frequencies_has_not_learned():
    # 16.8 is below the unigram baseline (16.9) but within 5% of it: still the plateau.
    cells = grid(cells=("gru",), layers=(1,), causal=lambda c, n, d, s: 16.8 if d == "bi" else 7.0)
    (result,) = evaluate_claims(cells, pd.DataFrame(), pd.DataFrame(), [default_claim("bidirectional_useless")],
                                None, BASELINES)
    assert set(result.deciding["outcome"]) == {"compared_not_learned"}
    learned = claims.learning_status(cells, pd.DataFrame(), BASELINES).set_index("direction")["learned"]
    assert learned["uni"].all() and not learned["bi"].any()
    # At exactly 0.95 x the unigram baseline a cell has learned.
    edge = claims.learning_status(grid(cells=("gru",), layers=(1,), causal=lambda *k: 0.95 * 16.9),
                                  pd.DataFrame(), BASELINES)
    assert edge["learned"].all()


def test_a_cell_read_on_held_out_text_only_at_its_selected_epoch_is_judged_by_that_reading():
    # eval.every: 0 and eval.last: false: no curve and no last held-out value, only the selected epoch's.
    cells = grid(cells=("gru",), layers=(1,), causal=lambda c, n, d, s: 16.95 if d == "bi" else 9.0)
    cells = cells.assign(selected_causal_ppl=cells["causal_ppl"], causal_ppl=float("nan"))
    status = claims.learning_status(cells, pd.DataFrame(), BASELINES).set_index("direction")
    assert list(status.loc["uni", "best_causal_ppl"]) == [9.0, 9.0] and status.loc["uni", "learned"].all()
    assert not status.loc["bi", "learned"].any()  # the plateau, read at the selected epoch


def test_agreeing_seeds_never_give_a_zero_width_interval():
    cells = grid(sec=lambda c, n, d, s: 0.1 * n * (2.0 if d == "bi" else 1.0))  # seeds agree exactly
    result = run(cells, default_claim("bidirectional_slow"))
    deciding = result.deciding
    assert (deciding["ci_high"] > deciding["ci_low"]).all() and deciding["bounded"].all()
    ratio, low, high = result.ratio
    assert high > low
    assert any("resolution" in note for note in wording.notes(result))
    # The printed interval never shows two equal bounds.
    text = wording.effect_text(result)
    low_text, high_text = text.split("[")[1].rstrip("]").split(", ")
    assert low_text != high_text


def test_depth_helps_supported_on_held_out_and_training_perplexity():
    cells = grid(causal=lambda c, n, d, s: 9.0 * 0.9 ** (n - 1) * (1.01 if s else 0.99))
    result = run(cells, default_claim("depth_helps"))
    assert result.verdict == SUPPORTED
    # One comparison per uni cell type, 4 layers against 1: the steps share cells and are not units.
    assert result.pooled.k == 3 and set(result.deciding["comparison"]) == {"1 -> 4 layers"}
    assert 0.9**3 * 0.98 < result.ratio[0] < 0.9**3 * 1.02
    assert "lower" in wording.sentence(result) and "x0.729" in wording.sentence(result)
    assert "(1 -> 4 layers)" in wording.sentence(result)


def test_depth_at_equal_time_needs_curves_and_can_reverse_the_verdict():
    # Deeper cells reach lower perplexity after the same epochs but each epoch costs twice as long.
    rows, epochs = [], []
    for n in (1, 2):
        for seed in (0, 1, 2):
            final = 8.0 - n + 0.01 * seed
            rows.append(("lstm", n, "uni", seed, final, final, final, 0.1 * n, 1e6))
            for epoch in range(1, 11):
                value = final + 20.0 / epoch
                epochs.append({"cell_id": f"lstm-l{n}-uni-cpu-s{seed}", "epoch": epoch, "sec": 0.1 * n,
                               "warmup": False, "causal_ppl": value, "val_ppl": value, "train_ppl": value})
    cells, curves = cells_frame(rows), pd.DataFrame(epochs)
    assert run(cells, default_claim("depth_helps"), curves).verdict == SUPPORTED
    at_time = run(cells, parse_claims([{"name": "depth_helps", "basis": "time"}], "x")[0], curves)
    assert at_time.verdict == NOT_SUPPORTED


def test_timing_claims_are_not_decided_on_flagged_timings():
    cells = grid(sec=lambda c, n, d, s: 0.1 * n * (2.0 if d == "bi" else 1.0) * (1.03 if s else 0.98))
    result = run(cells, default_claim("bidirectional_slow"), warnings=["calibration moved by 30%"])
    assert result.verdict == INCONCLUSIVE and "calibration moved by 30%" in wording.reason(result)
    assert any("Would be supported" in note for note in wording.notes(result))


def test_slowdown_is_set_beside_the_arithmetic():
    cells = grid(sec=lambda c, n, d, s: 0.1 * n * (2.4 if d == "bi" else 1.0) * (1.02 if s else 0.99))
    cells["flops_per_epoch"] = [2e9 if d == "bi" else 1e9 for d in cells["direction"]]
    result = run(cells, default_claim("bidirectional_slow"))
    assert "x2 the arithmetic" in wording.sentence(result)
    per_flop = result.context_table[result.context_table["metric"] == "sec_per_flop"].iloc[0]
    assert per_flop["ratio"] == pytest.approx(1.2, rel=0.02)
    assert result.facts["per_flop"]["ratio"] == per_flop["ratio"] and result.facts["flops_ratio"] == pytest.approx(2)


def test_the_leak_is_reported_beside_bidirectional_uselessness():
    cells = grid(causal=lambda c, n, d, s: 8.0 * (1.3 if d == "bi" else 1.0) * (1.01 if s else 1.0),
                 val=lambda c, n, d, s: 1.2 if d == "bi" else 8.0 * (1.01 if s else 1.0))
    result = run(cells, default_claim("bidirectional_useless"))
    assert result.verdict == SUPPORTED
    leak = result.context_table[result.context_table["metric"] == "leak"].set_index("comparison")["ratio"]
    assert leak[leak_comparison("bi")] > 5
    assert leak[leak_comparison("uni")] == pytest.approx(1.0, rel=0.01)
    assert result.facts["leak"]["ratio"] == leak[leak_comparison("bi")]
    assert "bi: causal / teacher-forced (the leak)" in wording.measure_labels(result.context_table)
    # Bidirectional that predicts better is "not supported".
    better = grid(causal=lambda c, n, d, s: 8.0 * (0.7 if d == "bi" else 1.0) * (1.01 if s else 1.0))
    assert run(better, default_claim("bidirectional_useless")).verdict == NOT_SUPPORTED


def test_no_cells_gives_inconclusive_claims_not_errors():
    results = evaluate_claims(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), None, None)
    assert [r.name for r in results] == ["depth_helps", "bidirectional_slow", "bidirectional_useless"]
    assert all(r.verdict == INCONCLUSIVE and wording.reason(r) for r in results)


def test_each_claim_is_handed_on_as_soon_as_it_is_decided():
    seen = []
    results = evaluate_claims(grid(layers=(1, 2)), pd.DataFrame(), pd.DataFrame(), None, None,
                              on_result=lambda index, result: seen.append((index, result, len(seen))))
    assert [(i, r) for i, r, _ in seen] == list(enumerate(results)) and len(results) == 3
    assert [count for _, _, count in seen] == [0, 1, 2]  # one call per claim, in order


def test_cells_that_did_not_finish_are_left_out_and_named():
    cells = grid(layers=(1, 2), sec=lambda c, n, d, s: 0.1 * n * (2.0 if d == "bi" else 1.0) * (1.02 if s else 0.99))
    cells.loc[0, "status"] = "failed"
    result = run(cells, default_claim("bidirectional_slow"))
    assert result.verdict == SUPPORTED and any("1 failed cell" in note for note in wording.notes(result))


def test_a_time_basis_claim_needs_held_out_curves_in_the_suite(tmp_path):
    from harness.spec.suite import load_suite

    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ntrain: {epochs: 2}\neval: {every: 0}\nmatrix: {layers: [1, 2]}\n"
                     "claims: [{name: depth_helps, basis: time}]\n")
    with pytest.raises(HarnessError, match=r"s.yaml: claims: Depth helps \(basis = time\).*eval.every > 0"):
        load_suite(suite)
    suite.write_text(suite.read_text().replace("every: 0", "every: 1"))
    assert load_suite(suite).claims


# --- results are data; the words are claim_wording's ------------------------------------------------------


def test_why_a_verdict_is_data_with_the_interval_and_the_bound():
    cells = grid(sec=lambda c, n, d, s: 0.1 * n * ((1.5 if n % 2 else 1 / 1.5) if d == "bi" else 1.0)
                 * (1.02 if s else 0.99))
    result = run(cells, default_claim("bidirectional_slow"))
    assert result.verdict == INCONCLUSIVE and result.why.kind == "interval_includes"
    values = result.why.values
    assert (values["low"], values["high"]) == pytest.approx(result.ratio[1:]) and values["low"] < 1.1 < values["high"]
    assert values["bound"] == 1.1 and values["pooled"] is True
    # Half the configurations 1.5x slower, half 1.5x faster, seeds within 3%: they disagree.
    assert values["disagree"] is True and values["i2"] > 0.9
    assert wording.reason(result) == (f"configurations disagree (I² {values['i2']:.0%}): the pooled interval "
                                      f"[{values['low']:.3g}, {values['high']:.3g}] includes x1.1, and more seeds "
                                      "would not narrow it")
    # On timings flagged as unreliable, that is the reason, though the interval alone leaves the claim open.
    flagged = run(cells, default_claim("bidirectional_slow"), warnings=["calibration moved by 30%"])
    assert flagged.verdict == INCONCLUSIVE and flagged.why.kind == "timings_unreliable"
    assert flagged.why.values["would_be"] == INCONCLUSIVE and flagged.why.values["interval"].kind == "interval_includes"
    assert "would_be" not in [n.kind for n in flagged.notes]
    assert wording.reason(flagged) == "timings unreliable: calibration moved by 30%"


def test_notes_are_data_and_a_flagged_timing_keeps_the_verdict_it_would_have_had():
    cells = grid(layers=(1, 2), sec=lambda c, n, d, s: 0.1 * n * (2.0 if d == "bi" else 1.0) * (1.03 if s else 0.98))
    cells.loc[0, "status"] = "failed"
    result = run(cells, default_claim("bidirectional_slow"), warnings=["calibration moved by 30%"])
    assert result.verdict == INCONCLUSIVE and result.why.kind == "timings_unreliable"
    assert result.why.values["warnings"] == ["calibration moved by 30%"]
    assert result.why.values["would_be"] == SUPPORTED and result.why.values["interval"].kind == "interval_above"
    assert [n.kind for n in result.notes] == ["left_out", "few_seeds", "would_be"]
    assert result.notes[0] == Note("left_out", {"by_status": {"failed": 1}, "cells": 1})
    assert result.notes[1].values == {"most": 2, "enough": 3}
    assert wording.summary_sentence(result).endswith(" Inconclusive: timings unreliable: calibration moved by 30%.")
    # Comparisons where neither side learned: counted in the note, coded in the evidence.
    plateau = run(grid(causal=lambda c, n, d, s: 16.9 + 0.01 * s if c != "rnn" else 7.0 * (1.4 if d == "bi" else 1)
                       * (1.01 if s else 1.0)), default_claim("bidirectional_useless"))
    assert Note("not_counted", {"comparisons": 8, "of": 12, "by_side": {"neither_learned": 8}}) in plateau.notes
    outcomes = set(plateau.deciding.loc[plateau.deciding["bearing"] == NOT_COUNTED, "outcome"])
    assert outcomes == {"neither_learned"} and wording.outcome_text("neither_learned", 1) == "neither side learned"


def test_rows_are_found_by_metric_and_comparison_and_labelled_by_the_wording():
    cells = grid(causal=lambda c, n, d, s: 9.0 * 0.9 ** (n - 1) * (1.01 if s else 0.99))
    result = run(cells, parse_claims([{"name": "depth_helps", "basis": "time"}], "x")[0], epochs_of(cells))
    table = result.pooled_table
    assert "measure" not in table and set(table[["metric", "comparison", "basis"]].itertuples(index=False)) == {
        ("causal_ppl", DEEPER, "time")}
    assert wording.measure_labels(table)[0] == "held-out causal perplexity at equal training time"
    contrast = result.facts["contrast"]
    assert contrast["metric"] == "train_ppl" and contrast["basis"] == "time"
    assert contrast["ratio"] == result.context_table.set_index("metric").loc["train_ppl", "ratio"]
    assert f"training ppl {wording.ratio_text(contrast['ratio'], contrast['ci_low'], contrast['ci_high'])}" \
        in wording.sentence(result)


def test_the_evaluation_holds_no_words_and_the_wording_needs_only_its_data():
    # The labels, the ratio format and the sentences are the wording's; a result carries why, not a sentence.
    for name in ("ratio_text", "SHORT_LABELS", "METRIC_LABELS"):
        assert not hasattr(claims, name) and hasattr(wording, name)
    assert not {"sentence", "reason", "effect_text"} & ({f.name for f in fields(claims.ClaimResult)}
                                                        | set(dir(claims.ClaimResult)))
    # Every kind the evaluation can say has its words.
    assert set(wording.REASONS) >= {"no_configurations", "no_finished_cells", "one_depth", "did_not_learn",
                                    "too_few_seeds", "one_seed_one_configuration", "interval_above",
                                    "interval_below", "interval_includes", "timings_unreliable"}
    # A result made by hand, with no tables behind it, reads as an evaluated one would.
    spec = default_claim("bidirectional_slow")
    made = claims.ClaimResult(spec, INCONCLUSIVE, Why("one_seed_one_configuration"),
                              notes=[Note("timings_left_out", {"cells": [f"c{i}" for i in range(8)], "of": 20,
                                                               "reasons": ["load 3.1", "throttled"]})])
    assert wording.sentence(made) == ("Inconclusive: too few seeds for an interval (one seed per configuration and "
                                      "one configuration).")
    assert wording.notes(made) == ["8 of 20 cells left out for unreliable timings (c0, c1, c2, c3, c4, c5 ...): "
                                   "load 3.1; throttled."]
    assert wording.why_text(Why("one_depth", {"directions": ("uni", "bi")})) == \
        "only one depth among the finished uni/bi cells"


# --- specs ------------------------------------------------------------------------------------------------


def test_parse_claims_accepts_names_and_mappings():
    specs = parse_claims(["depth_helps", {"name": "bidirectional_slow", "threshold": 1.5, "min_seeds": 3},
                          {"name": "bidirectional_useless", "confidence": 0.99}], "suite.yaml")
    assert [s.name for s in specs] == ["depth_helps", "bidirectional_slow", "bidirectional_useless"]
    assert specs[0] == default_claim("depth_helps")
    assert specs[1].threshold == 1.5 and specs[1].min_seeds == 3 and specs[1].metric == "sec_per_epoch"
    assert specs[2].confidence == 0.99
    assert parse_claims(None, "suite.yaml") == []
    assert parse_claims([{"name": "depth_helps", "directions": "bi"}], "x")[0].directions == ("bi",)
    # A spec written back into run.json parses to itself.
    assert parse_claims([s.to_dict() for s in specs], "run.json") == specs


@pytest.mark.parametrize("raw, expected", [
    ("depth_helps", "claims = 'depth_helps': expected a list"),
    (["depth_help"], "claims[0]: unknown claim 'depth_help' (did you mean 'depth_helps'?)"),
    ([{"threshold": 2}], "claims[0]: a claim mapping needs a 'name'"),
    ([3], "claims[0] = 3: expected a claim name"),
    ([{"name": "depth_helps", "min_seed": 3}], "claims[0]: depth_helps: unknown parameter 'min_seed' (did you mean 'min_seeds'?)"),
    ([{"name": "depth_helps", "min_seeds": 0}], "claims[0]: depth_helps.min_seeds = 0: expected an integer >= 1"),
    ([{"name": "bidirectional_slow", "confidence": 1.5}], "bidirectional_slow.confidence = 1.5: expected a number in (0, 1)"),
    ([{"name": "depth_helps", "metric": "sec_per_epoch"}], "depth_helps.metric = 'sec_per_epoch': expected one of"),
    ([{"name": "bidirectional_slow", "threshold": 1.1}], None),
    ([{"name": "bidirectional_useless", "basis": "time"}], "bidirectional_useless: unknown parameter 'basis'"),
    (["depth_helps", "bidirectional_slow", "depth_helps"], "claims[2]: claim 'depth_helps' is listed twice"),
])
def test_parse_claims_rejects_bad_input_with_one_line(raw, expected):
    if expected is None:
        assert parse_claims(raw, "suites/x.yaml")
        return
    with pytest.raises(HarnessError) as info:
        parse_claims(raw, "suites/x.yaml")
    message = str(info.value)
    assert message.startswith("suites/x.yaml: ") and expected in message and "\n" not in message
    assert str(info.value) == str(pytest.raises(HarnessError, parse_claims, raw, "suites/x.yaml: claims").value)


# --- statistics -------------------------------------------------------------------------------------------


def test_t_interval_matches_the_textbook():
    mean, low, high = t_interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd 1.291, se 0.6455, t(0.975, 3) = 3.182
    assert mean == 2.5 and low == pytest.approx(2.5 - 3.182446 * 0.645497, abs=1e-5)
    assert high == pytest.approx(2.5 + 3.182446 * 0.645497, abs=1e-5)


def test_log_interval_never_reaches_below_zero():
    mean, low, high = log_interval([0.1, 1.0, 10.0])
    assert mean == pytest.approx(1.0) and 0 < low < 0.1 and high > 10


def test_pooled_spread_and_configuration_effect_from_literal_values():
    # Two configurations, paired seeds; per-seed log ratios log(2)+-0.1 and log(3)+-0.1.
    groups = [Replicates({0: 1.0, 1: 1.0}, {0: 2 * math.exp(0.1), 1: 2 * math.exp(-0.1)}),
              Replicates({0: 1.0, 1: 1.0}, {0: 3 * math.exp(0.1), 1: 3 * math.exp(-0.1)})]
    sd, dof = pooled_spread(groups, "ratio")
    assert dof == 2 and sd == pytest.approx(math.sqrt(0.02 * 2 / 2))
    effect = configuration_effect(groups[0], "ratio", (sd, dof))
    assert math.exp(effect.estimate) == pytest.approx(2.0)
    # t(0.975, 2) = 4.303 times sd / sqrt(2)
    assert effect.high - effect.estimate == pytest.approx(4.302653 * sd / math.sqrt(2), rel=1e-5)


def test_pool_without_standard_errors_takes_configurations_as_units():
    effects = [Effect(v, math.nan, 0, math.nan, math.nan, 1, "single seeds") for v in (0.5, 0.7, 0.6)]
    pooled = pool(effects)
    mean, low, high = t_interval([0.5, 0.7, 0.6])
    assert (pooled.estimate, pooled.low, pooled.high) == pytest.approx((mean, low, high))


def test_pool_of_equal_effects_is_their_common_value_with_no_heterogeneity():
    effects = [Effect(0.7, 0.05, 4, 0.6, 0.8, 2, "paired") for _ in range(5)]
    pooled = pool(effects)
    assert pooled.estimate == pytest.approx(0.7) and pooled.i2 == 0 and pooled.low < 0.7 < pooled.high


@pytest.mark.parametrize("estimates, variances", [
    ([0.10, 0.30, 0.25], [0.01, 0.02, 0.015]),              # heterogeneous: tau2 > 0 after a few iterations
    ([0.70, 0.70, 0.70, 0.70], [0.0025] * 4),              # identical: Q = 0, tau2 = 0
    ([0.2, 0.21], [0.04, 0.05]),                           # two configurations, less spread than the noise
    ([-0.5, 0.1, 0.9, 0.4, -0.2], [0.001, 0.003, 0.002, 0.01, 0.0005]),  # strongly heterogeneous
])
def test_random_effects_equals_statsmodels_combine_effects(estimates, variances):
    meta = pytest.importorskip("statsmodels.stats.meta_analysis")
    import numpy as np

    expected = meta.combine_effects(np.array(estimates), np.array(variances), method_re="iterated", use_t=True)
    got = random_effects(estimates, variances)
    assert got.mean == pytest.approx(float(expected.mean_effect_re), rel=1e-12, abs=1e-15)
    assert got.se == pytest.approx(float(expected.sd_eff_w_re), rel=1e-12)
    assert got.se_hksj == pytest.approx(float(expected.sd_eff_w_re_hksj), rel=1e-12, abs=1e-15)
    assert got.q == pytest.approx(float(expected.q), rel=1e-9, abs=1e-12)
    assert got.tau2 == pytest.approx(max(0.0, float(expected.tau2)), rel=1e-12, abs=1e-15)
    from scipy import stats

    effects = [Effect(e, math.sqrt(v), 4, math.nan, math.nan, 2, "paired") for e, v in zip(estimates, variances)]
    q_pvalue = pool(effects).q_pvalue  # scipy.stats' chi2 survival, Q of identical effects at zero
    assert q_pvalue == pytest.approx(float(stats.chi2.sf(max(float(expected.q), 0.0), len(estimates) - 1)), rel=1e-9)


def test_t_quantile_and_sign_test_equal_scipy_stats():
    from scipy import stats

    for dof in (1, 2, 3.5, 30, math.inf):
        assert t_quantile(0.975, dof) == pytest.approx(float(stats.t.ppf(0.975, dof)), rel=1e-12)
    for effects in ([0.1, 0.2, -0.3], [0.1] * 7, [-1.0] * 5, [0.1, -0.1, 0.2, -0.2], [1, 2, 3, -1, 0, 4, 5, 6, -2]):
        nonzero = [e for e in effects if e != 0]
        expected = stats.binomtest(sum(e > 0 for e in nonzero), len(nonzero)).pvalue
        assert sign_test(effects) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(sign_test([0.0, math.nan]))


def test_value_at_time_takes_the_last_value_reached():
    epochs = pd.DataFrame({"cell_id": ["a"] * 4, "epoch": [1, 2, 3, 4], "sec": [3.0, 1.0, 1.0, 1.0],
                           "warmup": [True, False, False, False], "causal_ppl": [None, 9.0, None, 7.0]})
    curve = training_curves(epochs)["a"]
    assert list(curve["elapsed"]) == [1.0, 2.0, 3.0, 4.0]  # the warm-up epoch counts at the median
    assert value_at_time(curve, 2.5, "causal_ppl") == 9.0
    assert value_at_time(curve, 4.0, "causal_ppl") == 7.0
    assert math.isnan(value_at_time(curve, 1.5, "causal_ppl"))


def test_training_curves_cut_an_interleaved_table_per_cell_in_order():
    # Rows of three cells interleaved and out of epoch order, one row without a cell; "b" has only a warm-up epoch.
    epochs = pd.DataFrame({"cell_id": ["c", "a", "c", None, "a", "b", "a", "c"],
                           "epoch": [2, 3, 1, 1, 1, 1, 2, 3],
                           "sec": [2.0, 5.0, 9.0, 1.0, 7.0, 4.0, None, 4.0],
                           "warmup": ["False", False, "True", False, True, True, False, "false"]})
    curves = training_curves(epochs)
    assert list(curves) == ["c", "a", "b"]  # as they first appear
    assert list(curves["c"]["epoch"]) == [1, 2, 3] and list(curves["a"]["epoch"]) == [1, 2, 3]
    # c's warm-up counts at the median of its steady epochs (2, 4): 3; a's at the median of (0 for the
    # missing time, 5): 2.5; b has no steady epoch, so its warm-up counts as measured.
    assert list(curves["c"]["elapsed"]) == [3.0, 5.0, 9.0]
    assert list(curves["a"]["elapsed"]) == [2.5, 2.5, 7.5]
    assert list(curves["b"]["elapsed"]) == [4.0]
    assert list(curves["a"].index) == [4, 6, 1]  # the table's own rows, in epoch order
    assert training_curves(epochs.iloc[0:0]) == {} and training_curves(epochs[epochs["cell_id"].isna()]) == {}


# --- baselines ---------------------------------------------------------------------------------------------


def test_no_learning_baselines_on_a_literal_text():
    # Training "abab", held out "ab"; vocabulary a, b and <unk>: 3 tokens.
    baselines = no_learning_baselines(list("ababab"), 4, 2, 3)
    assert baselines["uniform"] == 3.0
    # unigram: p(a) = p(b) = (2 + 1) / (4 + 3)
    assert baselines["unigram"] == pytest.approx(7 / 3)
    # bigram: p(a | b) = (1 + 1) / (1 + 3) with b's one successor in training; p(b | a) = (2 + 1) / (2 + 3)
    assert baselines["bigram"] == pytest.approx(math.exp(-(math.log(2 / 4) + math.log(3 / 5)) / 2))


# --- text measures -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("travellerererer", 6),  # "ererer" occurs at two overlapping places
    ("abcdefg", 0),
    ("aaaa", 3),
    ("and the time time time", 11),  # "e time time" at 6 and at 11: period 5
    ("abcdeabcde", 5),  # any period
    ("", 0),
    ("    ", 4),  # blank counts whole
])
def test_longest_repeat_at_any_period(text, expected):
    assert longest_repeat(text) == expected


def test_text_measures_catch_every_degenerate_sample():
    book = {"the", "time", "traveller", "smiled", "are", "you", "so", "sure", "we", "can", "move", "freely"}
    good = " smiled are you so sure we can move freely in"
    assert not is_degenerate(good) and word_share(good, book) == 1.0 and compression(good) > 0.8
    for bad in ("erererererererererererererererererererererererer", "the the the the the the the the",
                "and the time time time time time time time", "", "     "):
        assert is_degenerate(bad), bad
    assert word_share("the the the", book) == 1.0 and distinct_share("the the the") == pytest.approx(1 / 2)
    blank = measure("   ", book)
    assert all(not math.isnan(v) for v in blank.values()) and blank["degenerate"] == 1.0
    assert blank["word_share"] == 0.0


def test_word_share_leaves_out_the_cut_off_last_word():
    assert word_share("the time machin", {"the", "time"}) == 1.0
    assert word_share("the tiem was", {"the", "was"}) == 0.5
    assert word_share("the", {"the"}) == 1.0


def test_best_held_out_perplexity_separates_memorising_from_not_learning():
    # Uni cells learn (best 8) then memorise their training text (last 40); bi cells reach 12 and stay.
    rows, epochs = [], []
    for direction, best, last in (("uni", 8.0, 40.0), ("bi", 12.0, 12.0)):
        for seed in (0, 1, 2):
            jitter = 1 + 0.01 * seed
            rows.append(("gru", 1, direction, seed, last * jitter, last * jitter, 1.1, 1.0, 1e6))
            for epoch, value in ((1, 20.0), (2, best * jitter), (3, last * jitter)):
                epochs.append({"cell_id": f"gru-l1-{direction}-cpu-s{seed}", "epoch": epoch, "sec": 1.0,
                               "warmup": False, "causal_ppl": value, "val_ppl": value, "train_ppl": 2.0})
    cells, curves = cells_frame(rows), pd.DataFrame(epochs)
    final = run(cells, default_claim("bidirectional_useless"), curves)
    assert final.verdict == NOT_SUPPORTED and final.ratio[0] == pytest.approx(0.3, rel=0.01)  # uni memorised
    best = run(cells, parse_claims([{"name": "bidirectional_useless", "metric": "best_causal_ppl"}], "x")[0],
               curves)
    assert best.verdict == SUPPORTED and best.ratio[0] == pytest.approx(1.5, rel=0.01)
    assert "at their best evaluation" in wording.sentence(best)
    deep = cells.assign(layers=2, cell_id=cells["cell_id"].str.replace("-l1-", "-l2-"))
    deep_curves = curves.assign(cell_id=curves["cell_id"].str.replace("-l1-", "-l2-"))
    depth = run(pd.concat([cells, deep]), parse_claims([{"name": "depth_helps", "metric": "best_causal_ppl"}], "x")[0],
                pd.concat([curves, deep_curves]))
    assert "each at its best evaluation" in wording.sentence(depth) and "same epochs" not in wording.sentence(depth)
    with pytest.raises(HarnessError, match="best_causal_ppl is compared after the same epochs only"):
        parse_claims([{"name": "depth_helps", "metric": "best_causal_ppl", "basis": "time"}], "x")


def test_the_prediction_interval_holds_a_new_configuration_and_is_wider_than_the_confidence_interval():
    # Twelve configurations whose true slowdowns spread from 1.5x to 2.6x, seeds within 1%.
    slowdown = {(c, n): 1.5 + 0.1 * i for i, (c, n) in enumerate((c, n) for c in ("rnn", "gru", "lstm")
                                                                  for n in (1, 2, 3, 4))}
    cells = grid(sec=lambda c, n, d, s: 0.1 * n * (slowdown[(c, n)] if d == "bi" else 1.0) * (1.01 if s else 0.99))
    result = run(cells, default_claim("bidirectional_slow"))
    (ratio, low, high), (pi_low, pi_high) = result.ratio, result.prediction
    assert pi_low < low < ratio < high < pi_high
    assert pi_low < 1.5 and pi_high > 2.6 * 0.95  # the configurations themselves lie within it
    assert wording.prediction_text(result).startswith("[")
    # Two configurations: no prediction interval.
    two = run(grid(cells=("gru",), layers=(1, 2), sec=lambda c, n, d, s: (2.0 if d == "bi" else 1.0) * (1.01 if s else 0.99)),
              default_claim("bidirectional_slow"))
    assert math.isnan(two.prediction[0]) and wording.prediction_text(two) == "-"


def test_configurations_that_disagree_are_not_called_noisy():
    # Seeds agree within 0.5%; configurations range from 0.8x to 1.25x: the interval includes 1.1 because
    # the configurations differ, not because the seeds do.
    factor = {1: 0.8, 2: 1.25, 3: 0.85, 4: 1.2}
    cells = grid(sec=lambda c, n, d, s: 0.1 * n * (factor[n] if d == "bi" else 1.0) * (1.005 if s else 0.995))
    result = run(cells, default_claim("bidirectional_slow"))
    assert result.verdict == INCONCLUSIVE and result.pooled.configurations_disagree
    assert wording.reason(result).startswith("configurations disagree (I² ")
    assert "more seeds would not narrow it" in wording.reason(result)
    # Seeds that scatter by ±30% around one shared slowdown of 1.1x: too noisy.
    noisy = grid(sec=lambda c, n, d, s: 0.1 * n * (1.1 if d == "bi" else 1.0)
                 * (1.3 if (s + n + (d == "bi")) % 2 else 0.7))
    result = run(noisy, default_claim("bidirectional_slow"))
    assert result.verdict == INCONCLUSIVE and not result.pooled.configurations_disagree
    assert result.pooled.i2 == 0 and wording.reason(result).startswith("too noisy")


def test_a_missing_value_is_the_keys_default_when_configurations_are_told_apart():
    from harness.analysis.cell_frames import extra_keys

    frame = pd.DataFrame({"cell": ["gru"] * 4, "target_params": [None, None, 621596.0, 621596.0],
                          "dropout": [float("nan"), 0.0, float("nan"), 0.0], "lr": [1.0, 1.0, 1.0, 1.0],
                          "optimizer": [None, "sgd", None, "sgd"]})
    # No parameter target beside one: two configurations. A row stored before dropout and optimizer existed
    # is at their defaults (0, sgd): one value each.
    assert extra_keys(frame) == ["target_params"]
    assert extra_keys(frame.assign(dropout=[float("nan"), 0.3, float("nan"), 0.3])) == ["target_params", "dropout"]
