"""The claims under each condition a suite declares, on literal tables with known answers: subsets,
the learning rate chosen per configuration on the selection text, and the parsing of conditions."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.spec.claims import ConditionSpec, parse_conditions
from harness.analysis.claims import NOT_SUPPORTED, SUPPORTED, default_claim, parse_claims
from harness.analysis.conditions import CHOSEN, choose, condition_cells, depth_profile, evaluate_conditions, in_condition
from harness.errors import HarnessError
from harness.spec.suite import field_for_axis, parse_suite

BASELINES = {"uniform": 28.0, "unigram": 16.9, "bigram": 9.9}
LRS = (0.5, 1.0, 2.0)


def cells_frame(held_out, selection=None, cells=("gru", "lstm"), layers=(1, 2, 3), lrs=LRS, seeds=(0, 1, 2)):
    """Unidirectional cells whose held-out (selected) perplexity and selection perplexity are functions of
    (cell, layers, lr, seed); a seed moves both by a percent or two."""
    rows = []
    for cell in cells:
        for n in layers:
            for lr in lrs:
                for seed in seeds:
                    jitter = 1 + 0.01 * (seed - 1)
                    ppl = held_out(cell, n, lr) * jitter
                    rows.append({"cell_id": f"{cell}-l{n}-uni-cpu-s{seed}-lr{lr}", "cell": cell, "layers": n,
                                 "direction": "uni", "device": "cpu", "seed": seed, "lr": lr, "status": "ok",
                                 "causal_ppl": ppl, "val_ppl": ppl, "train_ppl": ppl * 0.8, "sec_per_epoch": 1.0,
                                 "peak_mem_bytes": 1e6, "selected_causal_ppl": ppl,
                                 "selected_select_ppl": (selection or held_out)(cell, n, lr) * jitter})
    return pd.DataFrame(rows)


def good_lr(n):
    return {1: 1.0, 2: 0.5, 3: 2.0}[n]


def per_depth(cell, n, lr):
    """At lr 1 depth hurts (x1.1 per layer); each depth has its own best learning rate, at which depth helps."""
    return 8.0 * 0.9 ** (n - 1) if lr == good_lr(n) else 8.0 * 1.1 ** (n - 1) + (0 if lr == 1.0 else 2.0)


DEPTH = parse_claims([{"name": "depth_helps", "metric": "selected_causal_ppl"}], "t")[0]


def test_the_learning_rate_is_chosen_per_depth_on_the_selection_text():
    cells = cells_frame(per_depth)
    table, on = choose(cells, "lr")
    assert on == "selection text"
    assert {(r.cell, r.layers): r.chosen for r in table.itertuples()} == {
        (c, n): good_lr(n) for c in ("gru", "lstm") for n in (1, 2, 3)}
    assert all(set(r.seeds.values()) == {3} for r in table.itertuples())


def test_a_verdict_can_change_with_the_condition():
    cells = cells_frame(per_depth)
    conditions = [ConditionSpec("lr 1", (("lr", (1,)),)), ConditionSpec("lr per depth", (), "lr")]
    fixed, tuned = evaluate_conditions(cells, pd.DataFrame(), pd.DataFrame(), [DEPTH], conditions,
                                       baselines=BASELINES)
    assert fixed.cells == 18 and tuned.cells == 18  # 2 cells x 3 depths x 3 seeds either way
    # 3 layers against 1, per cell type: x1.1 twice at lr 1, x0.9 twice at each depth's own rate.
    assert fixed.results[0].verdict == NOT_SUPPORTED and fixed.results[0].ratio[0] == pytest.approx(1.21, rel=0.02)
    assert tuned.results[0].verdict == SUPPORTED and tuned.results[0].ratio[0] == pytest.approx(0.81, rel=0.02)
    assert len(tuned.chosen) == 6 and tuned.chosen_on == "selection text" and fixed.chosen.empty


def test_a_claim_at_a_fixed_value_is_asked_at_the_chosen_value_under_a_condition_that_chooses_it():
    # The claim fixes lr 1 (where depth hurts, x1.21); under "lr per depth" it is asked at each depth's
    # chosen rate (x0.81) instead of finding no cell at lr 1 among the chosen ones.
    cells = cells_frame(per_depth)
    claim = parse_claims([{"name": "Depth helps at lr 1", "axis": "layers", "metric": "selected_causal_ppl",
                           "expect": "lower", "where": {"lr": 1.0, "direction": "uni"}}], "t")[0]
    conditions = [ConditionSpec("all", ()), ConditionSpec("lr per depth", (), "lr")]
    fixed, tuned = evaluate_conditions(cells, pd.DataFrame(), pd.DataFrame(), [claim], conditions,
                                       baselines=BASELINES)
    assert fixed.results[0].verdict == NOT_SUPPORTED and fixed.results[0].ratio[0] == pytest.approx(1.21, rel=0.02)
    assert tuned.results[0].pooled.k == 2  # one configuration per cell type
    assert tuned.results[0].verdict == SUPPORTED and tuned.results[0].ratio[0] == pytest.approx(0.81, rel=0.02)
    assert tuned.results[0].spec.where == (("direction", ("uni",)),) and claim.where[0][0] == "lr"


def test_the_choice_is_made_on_selection_text_not_on_the_text_that_reports():
    # On the held-out text lr 0.5 looks best everywhere, on the selection text lr 2: the choice follows the
    # selection text, so the reported perplexities are those of lr 2.
    cells = cells_frame(lambda c, n, lr: 8.0 if lr == 0.5 else 9.0, selection=lambda c, n, lr: 7.0 if lr == 2.0 else 8.0)
    kept, table, on = condition_cells(cells, pd.DataFrame(), ConditionSpec("tuned", (), "lr"), BASELINES)
    assert set(table[CHOSEN]) == {2.0} and set(kept["lr"]) == {CHOSEN} and len(kept) == 18
    assert set(kept["causal_ppl"].round(1)) <= {8.9, 9.0, 9.1}
    no_selection = cells.drop(columns=["selected_select_ppl"])
    no_selection["best_causal_ppl"] = no_selection["causal_ppl"]
    table, on = choose(no_selection, "lr")
    assert on == "held-out text" and set(table[CHOSEN]) == {0.5}


def test_subsets_match_numbers_as_numbers_and_text_as_text():
    cells = pd.DataFrame({"lr": [1.0, 0.5, 2.0, 1.0], "train_text": ["first", "first", "first", "book"]})
    spec = ConditionSpec("c", (("lr", (1, 2)), ("train_text", ("first",))))
    assert list(in_condition(cells, spec)) == [True, False, True, False]
    assert not in_condition(cells, ConditionSpec("c", (("hidden", (256,)),))).any()  # no such column


def test_cells_stored_before_a_key_existed_count_at_its_default():
    cells = cells_frame(per_depth, lrs=(1.0,))
    old = cells.assign(train_text=None)  # a run stored before train_text: every cell read the first text
    kept, _, _ = condition_cells(old, pd.DataFrame(), ConditionSpec("c", (("train_text", ("first",)),)), BASELINES)
    assert len(kept) == len(cells)
    kept, _, _ = condition_cells(cells, pd.DataFrame(), ConditionSpec("c", (("train_text", ("book",)),)), BASELINES)
    assert kept.empty


def test_depth_profile_for_the_figure():
    cells = cells_frame(per_depth)
    profile = depth_profile(cells, pd.DataFrame(), [ConditionSpec("lr 1", (("lr", (1,)),))], BASELINES)
    assert len(profile) == 6 and set(profile["metric"]) == {"selected_causal_ppl"}
    gru = profile[profile["cell"] == "gru"].set_index("layers")["ppl"]
    assert gru[3] / gru[1] == pytest.approx(1.21, rel=0.01) and (profile["seeds"] == 3).all()


def test_the_depth_figures_numbers_in_a_table():
    from harness.report.conditions_section import condition_blocks, depth_profile_table

    cells = cells_frame(per_depth)
    # The LSTM has one seed at 1 layer and none at 3.
    cells = cells[~((cells["cell"] == "lstm") & (((cells["layers"] == 1) & (cells["seed"] > 0)) | (cells["layers"] == 3)))]
    conditions = [ConditionSpec("lr 1", (("lr", (1,)),)), ConditionSpec("lr 2", (("lr", (2,)),))]
    profile = depth_profile(cells, pd.DataFrame(), conditions, BASELINES)
    table = depth_profile_table(profile)
    assert list(table.columns) == ["condition", "cell", "1 layer", "2 layers", "3 layers"]
    assert [tuple(r) for r in table[["condition", "cell"]].itertuples(index=False)] == [
        ("lr 1", "gru"), ("lr 1", "lstm"), ("lr 2", "gru"), ("lr 2", "lstm")]
    gru_lr1 = table.iloc[0]
    # per_depth at lr 1: 8, 8 x 1.1, 8 x 1.21; the seeds move it by 1% each way.
    assert list(gru_lr1[["1 layer", "2 layers", "3 layers"]]) == [
        "8.00 (7.92-8.08, 3 seeds)", "8.80 (8.71-8.89, 3 seeds)", "9.68 (9.58-9.78, 3 seeds)"]
    assert table.iloc[1]["1 layer"] == "7.92 (1 seed)" and table.iloc[1]["3 layers"] == "-"
    assert table.iloc[2]["3 layers"].startswith("6.48 ")  # lr 2 is the 3-layer network's own: 8 x 0.9^2
    blocks = condition_blocks(evaluate_conditions(cells, pd.DataFrame(), pd.DataFrame(), [DEPTH], conditions,
                                                  baselines=BASELINES), {}, profile=profile)
    folded = [b for b in blocks if b[0] == "details" and b[1] == "The depth figure's numbers"]
    assert len(folded) == 1 and "at the epoch chosen on selection text" in folded[0][2][0][1]
    assert depth_profile_table(pd.DataFrame()).empty
    # Where the cells know the best n-gram model of their training text, it stands beside them.
    with_ngram = cells.assign(ngram_baseline=cells["lr"].map({1.0: 6.0, 2.0: 5.25, 0.5: 7.0}))
    table = depth_profile_table(depth_profile(with_ngram, pd.DataFrame(), conditions, BASELINES))
    assert list(table["best n-gram of its text"]) == ["6.00", "6.00", "5.25", "5.25"]
    blocks = condition_blocks(evaluate_conditions(with_ngram, pd.DataFrame(), pd.DataFrame(), [DEPTH], conditions,
                                                  baselines=BASELINES), {},
                              profile=depth_profile(with_ngram, pd.DataFrame(), conditions, BASELINES))
    assert any(b[0] == "details" and "beside them the best n-gram model" in b[2][0][1] for b in blocks)
    # A seed without the metric is not counted among the seeds averaged.
    cells.loc[(cells["cell"] == "gru") & (cells["layers"] == 1) & (cells["lr"] == 1.0) & (cells["seed"] == 2),
              "selected_causal_ppl"] = float("nan")
    table = depth_profile_table(depth_profile(cells, pd.DataFrame(), conditions, BASELINES))
    assert table.iloc[0]["1 layer"] == "7.96 (7.92-8.00, 2 seeds)"
    # Without selection text the figure and its numbers are at the best held-out evaluation.
    best = cells.drop(columns=["selected_causal_ppl", "selected_select_ppl"]).assign(
        best_causal_ppl=cells["causal_ppl"])
    profile = depth_profile(best, pd.DataFrame(), conditions, BASELINES)
    blocks = condition_blocks(evaluate_conditions(best, pd.DataFrame(), pd.DataFrame(), [DEPTH], conditions,
                                                  baselines=BASELINES), {}, profile=profile)
    assert any(b[0] == "details" and "at the best held-out evaluation:" in b[2][0][1] for b in blocks)


@pytest.mark.parametrize("raw, message", [
    ("x", "t: conditions: expected a list of mappings"),
    ([{"where": {"lr": 1}}], "t: conditions[0]: name = None: expected a non-empty text"),
    ([{"name": "a"}, {"name": "a"}], "t: conditions[1]: name 'a' is used twice"),
    ([{"name": "a", "whre": {}}], "t: conditions[0]: unknown key 'whre' (did you mean 'where'?)"),
    ([{"name": "a", "where": {"lrr": 1}}], "t: conditions[0]: where: unknown key 'lrr' (did you mean 'lr'?)"),
    ([{"name": "a", "choose": "seed"}], "t: conditions[0]: choose = seed: seeds are the replicates"),
    ([{"name": "a", "where": {"lr": []}}], "t: conditions[0]: where.lr: an empty list matches no cell"),
])
def test_bad_conditions_are_refused_in_one_line(raw, message):
    with pytest.raises(HarnessError) as info:
        parse_conditions(raw, "t", field_for_axis)
    assert str(info.value).startswith(message)


def test_a_suite_declares_conditions_with_the_keys_it_writes():
    raw = {"name": "s", "matrix": {"lr": [0.5, 1]}, "claims": ["depth_helps"],
           "conditions": [{"name": "tuned", "choose": "train.lr"}, {"name": "lr 1", "where": {"lr": 1}}]}
    suite = parse_suite(raw, "s.yaml")
    assert suite.resolved()["conditions"] == raw["conditions"]
    assert "conditions" not in parse_suite({"name": "s"}, "s.yaml").resolved()  # older runs keep their hash
    specs = parse_conditions(suite.conditions, "s.yaml", field_for_axis)
    assert specs[0] == ConditionSpec("tuned", (), "lr") and specs[1].to_dict() == {"name": "lr 1", "where": {"lr": 1}}
    assert default_claim("depth_helps").metric == "causal_ppl"


def test_a_run_with_conditions_reports_each_claim_under_each(tmp_path):
    from test_runner import harness, write_suite

    suite = write_suite(tmp_path, """
        data: {max_tokens: 1500, val_tokens: 200, select_tokens: 200}
        eval: {every: 0, select_every: 1, sample_chars: 5}
        matrix: {cell: [gru], layers: [1, 2], lr: [0.5, 2], seed: [0, 1]}
        claims: [{name: depth_helps, metric: selected_causal_ppl}]
        conditions:
          - {name: lr 0.5, where: {lr: 0.5}}
          - {name: lr per depth, choose: lr}
    """)
    out, report = tmp_path / "run", tmp_path / "report"
    proc = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = harness("report", out, "--out", report, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (report / "index.md").read_text()
    # Its table stands in the section where two conditions compare, else it is folded into the appendix (these
    # tiny cells may not learn).
    assert "## Under each condition" in text and "Depth helps (metric = selected_causal_ppl), by condition\n" in text
    section = text.split("Depth helps (metric = selected_causal_ppl), by condition\n")[-1]
    assert "| lr 0.5 " in section and "| reference " in section and "| lr per depth " in section
    assert "Appendix: lr per depth: the lr chosen per configuration" in text
    assert (report / "figures" / "condition_depth.png").stat().st_size > 0
    assert "Under each condition" in (report / "index.html").read_text()


def test_the_report_says_where_a_verdict_changes_and_where_there_is_nothing_to_compare():
    from harness.report.conditions_section import conditions_table

    cells = cells_frame(per_depth)
    conditions = [ConditionSpec("lr 1", (("lr", (1,)),)), ConditionSpec("lr per depth", (), "lr"),
                  ConditionSpec("lr 9", (("lr", (9,)),))]
    results = evaluate_conditions(cells, pd.DataFrame(), pd.DataFrame(), [DEPTH], conditions, baselines=BASELINES)
    table = conditions_table(results, 0)
    assert list(table["verdict vs the first"]) == ["reference", f"changes ({NOT_SUPPORTED} -> {SUPPORTED})",
                                                   "nothing to compare"]  # every planned cell is trained
    # Cells still to train may bring something to compare.
    assert list(conditions_table(results, 0, complete=False)["verdict vs the first"])[-1] == "nothing to compare yet"
    assert list(table["configurations"]) == [2, 2, 0] and list(table["cells"]) == [18, 18, 0]


def test_nothing_to_compare_is_final_where_the_suite_plans_no_cells_for_one_side():
    """An unfinished run whose suite plans bidirectional cells at lr 1 only: at lr 2 the bidirectional claim
    will never have anything to compare, while depth at lr 2 still may."""
    from harness.analysis.conditions import can_compare
    from harness.report.conditions_section import conditions_table, planned_frame

    suite = parse_suite({"name": "s", "model": {"cell": "gru"},
                         "matrix": {"layers": [1, 2], "direction": ["uni", "bi"], "lr": [1, 2], "seed": [0]},
                         "exclude": [{"direction": "bi", "lr": 2}]}, "s.yaml")
    from harness.spec.suite import expand

    ids = [c.cell_id for c in expand(suite)]
    planned = planned_frame({"suite": suite.resolved(), "cells": ids})
    assert sorted(planned["cell_id"]) == sorted(ids) and len(ids) == 6
    useless = default_claim("bidirectional_useless")
    lr1, lr2 = ConditionSpec("lr 1", (("lr", (1,)),)), ConditionSpec("lr 2", (("lr", (2,)),))
    assert can_compare(planned, lr1, useless) and not can_compare(planned, lr2, useless)
    assert can_compare(planned, lr2, DEPTH) and can_compare(planned, lr1, DEPTH)
    assert not can_compare(planned[planned["layers"] == 1], lr2, DEPTH)  # one depth: no step to compare
    chosen = ConditionSpec("lr chosen", (), "lr")  # the chosen key does not split configurations
    assert can_compare(planned, chosen, useless)
    assert not can_compare(planned, ConditionSpec("depth chosen", (), "layers"), DEPTH)  # one depth is kept
    assert not can_compare(planned, lr1, parse_claims([{"name": "bidirectional_useless", "min_seeds": 2}], "t")[0])
    bi_depth = parse_claims([{"name": "depth_helps", "directions": ["bi"]}], "t")[0]
    assert can_compare(planned, lr1, bi_depth) and not can_compare(planned, lr2, bi_depth)  # bi: lr 1 only
    # A claim on any axis: its own subset within the condition's (here bidirectional at lr 1 only), with the
    # condition's chosen key in place of the value the claim fixes.
    axis_bi = parse_claims([{"name": "bi", "axis": "direction", "base": "uni", "metric": "selected_causal_ppl",
                             "expect": "higher", "where": {"lr": 2}}], "t")[0]
    assert not can_compare(planned, lr1, axis_bi) and not can_compare(planned, lr2, axis_bi)
    assert can_compare(planned, chosen, axis_bi)
    axis_depth = parse_claims([{"name": "deep", "axis": "layers", "metric": "selected_causal_ppl",
                                "expect": "lower", "where": {"lr": 2}}], "t")[0]
    assert can_compare(planned, lr2, axis_depth) and not can_compare(planned, lr1, axis_depth)
    # A list-valued key matches as cells.csv writes it ('|'-joined).
    assert can_compare(planned, ConditionSpec("prefixes", (("prefixes", ("time traveller|traveller",)),)), DEPTH)

    # Only the lr 1 unidirectional cells have trained: the lr 1 side of either claim is still to come.
    trained = pd.DataFrame([{"cell_id": i, "cell": "gru", "layers": n, "direction": "uni", "device": "cpu",
                             "seed": 0, "lr": 1.0, "status": "ok", "causal_ppl": 10.0 / n, "val_ppl": 10.0 / n,
                             "train_ppl": 8.0 / n, "selected_causal_ppl": 10.0 / n, "sec_per_epoch": 1.0,
                             "peak_mem_bytes": 1e6} for n, i in ((1, "gru-l1-uni-cpu-s0-lr1"),
                                                                  (2, "gru-l2-uni-cpu-s0-lr1"))])
    results = evaluate_conditions(trained, pd.DataFrame(), pd.DataFrame(), [useless, DEPTH], [lr1, lr2],
                                  baselines=BASELINES)
    versus = [list(conditions_table(results, i, complete=False, planned=planned)["verdict vs the first"])[-1]
              for i in (0, 1)]
    assert versus == ["nothing to compare", "nothing to compare yet"]
    # When the reference itself can never compare, no other condition's comparison is still to come.
    swapped = evaluate_conditions(trained, pd.DataFrame(), pd.DataFrame(), [useless], [lr2, lr1],
                                  baselines=BASELINES)
    assert list(conditions_table(swapped, 0, complete=False, planned=planned)["verdict vs the first"]) == [
        "reference", "nothing to compare"]
    # Planned cells the recorded suite no longer expands to: it cannot tell.
    assert planned_frame({"suite": suite.resolved(), "cells": ids + ["gru-l9-uni-cpu-s0-lr1"]}) is None
    # Without the planned cells (a run.json whose suite no longer expands) it cannot tell: "yet".
    assert planned_frame({"suite": {"matrix": "broken"}, "cells": ids}) is None
    assert list(conditions_table(results, 0, complete=False)["verdict vs the first"])[-1] == "nothing to compare yet"


def test_a_claims_other_metrics_are_folded_under_each_condition():
    from harness.report.conditions_section import condition_blocks
    from harness.report.render import render_markdown

    train = parse_claims([{"name": "depth_helps", "metric": "train_ppl"}], "t")[0]
    conditions = [ConditionSpec("lr 1", (("lr", (1,)),)), ConditionSpec("lr per depth", (), "lr")]
    results = evaluate_conditions(cells_frame(per_depth), pd.DataFrame(), pd.DataFrame(), [DEPTH, train],
                                  conditions, baselines=BASELINES)
    blocks = condition_blocks(results, {})
    assert ("h3", f"{DEPTH.title}, by condition") in blocks
    folded = [b for b in blocks if b[0] == "details" and b[1] == f"{train.title}, by condition"]
    assert len(folded) == 1 and folded[0][2][0][0] == "table" and len(folded[0][2][0][1]) == 2
    markdown = render_markdown(blocks)
    assert markdown.index(f"### {DEPTH.title}, by condition") < markdown.index(f"### Appendix: {train.title}, by condition")


def test_null_in_a_subset_matches_a_key_left_unset():
    from harness.analysis.conditions import in_condition

    cells = pd.DataFrame({"target_params": [None, 621596, None], "lr": [0.003, 0.003, 1.0]})
    unset = ConditionSpec("hidden given", (("target_params", (None,)), ("lr", (0.003,))))
    assert list(in_condition(cells, unset)) == [True, False, False]
    matched = ConditionSpec("equal parameters", (("target_params", (621596, 826396)),))
    assert list(in_condition(cells, matched)) == [False, True, False]


def test_a_claim_that_only_one_condition_can_compare_has_its_table_folded():
    from harness.report.conditions_section import condition_blocks

    cells = cells_frame(per_depth)
    both = [ConditionSpec("lr 1", (("lr", (1,)),)), ConditionSpec("lr per depth", (), "lr")]
    one = [ConditionSpec("lr 1", (("lr", (1,)),)), ConditionSpec("lr 9", (("lr", (9,)),))]  # no cell at lr 9

    def placed(conditions):
        blocks = condition_blocks(evaluate_conditions(cells, pd.DataFrame(), pd.DataFrame(), [DEPTH], conditions,
                                                      baselines=BASELINES), {})
        return [b[0] for b in blocks if b[0] in ("h3", "details") and b[1].startswith("Depth helps (metric")]

    assert placed(both) == ["h3"] and placed(one) == ["details"]
