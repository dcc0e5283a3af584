"""The claims engine on literal tables with known answers: each claim supported, not supported and
inconclusive, and the same code turning its verdict when the data turn."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.claims import (
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, ClaimSpec, compare, default_claim, evaluate_claims,
    longest_repeat, parse_claims, t_interval, value_at_time, word_share, training_curves,
)
from harness.errors import HarnessError

COLUMNS = ["cell", "layers", "direction", "seed", "causal_ppl", "val_ppl", "train_ppl", "sec_per_epoch",
           "peak_mem_bytes"]


def cells_frame(rows, status=None) -> pd.DataFrame:
    """Rows of (cell, layers, direction, seed, causal, val, train, sec/epoch, peak memory) on CPU."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.insert(3, "device", "cpu")
    frame.insert(0, "cell_id", [f"{r.cell}-l{r.layers}-{r.direction}-cpu-s{r.seed}" for r in frame.itertuples()])
    frame["status"] = status or "ok"
    return frame


def run(cells, spec, epochs=None, samples=None, words=None):
    epochs = epochs if epochs is not None else pd.DataFrame()
    samples = samples if samples is not None else pd.DataFrame()
    (result,) = evaluate_claims(cells, epochs, samples, [spec], words)
    return result


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
    ([{"name": "depth_helps", "min_seeds": 1}], "claims[0]: depth_helps.min_seeds = 1: expected an integer >= 2"),
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
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2 degrees of freedom) x sd 1 / sqrt(3)
    assert mean == 2.0 and low == pytest.approx(2 - half, abs=1e-5) and high == pytest.approx(2 + half, abs=1e-5)
    assert math.isnan(t_interval([5.0])[1])
    assert t_interval([4.0, 4.0]) == (4.0, 4.0, 4.0)


def test_compare_pairs_by_seed_and_falls_back_to_welch():
    a = pd.Series([10.0, 12.0, 14.0], index=[0, 1, 2])
    b = pd.Series([9.0, 11.0, 13.5], index=[0, 1, 2])
    paired = compare(a, b, "difference")
    assert paired.pairing == "paired" and paired.n == 3
    assert paired.effect == pytest.approx(-2.5 / 3)
    assert paired.high < 0  # per-seed differences are consistent although the seeds spread widely
    unpaired = compare(a, pd.Series([9.0, 11.0, 13.5], index=[3, 4, 5]), "difference")
    assert unpaired.pairing == "unpaired" and unpaired.low < 0 < unpaired.high
    ratio = compare(pd.Series([1.0, 2.0]), pd.Series([2.0, 4.0]), "ratio")
    assert ratio.effect == pytest.approx(2.0) and ratio.low == pytest.approx(2.0)
    single = compare(pd.Series([1.0]), pd.Series([2.0]), "ratio")
    assert single.pairing == "too few" and not single.has_interval and single.effect == 2.0


# --- depth helps ------------------------------------------------------------------------------------------


def depth_rows(causal_by_depth, cell="lstm", direction="uni"):
    rows = []
    for layers, values in causal_by_depth.items():
        for seed, causal in enumerate(values):
            rows.append((cell, layers, direction, seed, causal, causal * 0.98, causal * 0.8, 0.1 * layers, 1e6))
    return rows


IMPROVING = {1: [10.0, 10.3, 9.8], 2: [8.0, 8.4, 7.9], 3: [7.0, 7.2, 6.8]}
WORSENING = {1: [7.0, 7.2, 6.8], 2: [8.0, 8.4, 7.9], 3: [10.0, 10.3, 9.8]}


def test_depth_helps_supported_and_opposite_not_supported():
    spec = default_claim("depth_helps")
    supported = run(cells_frame(depth_rows(IMPROVING) + depth_rows(IMPROVING, cell="gru")), spec)
    assert supported.verdict == SUPPORTED, supported.summary
    deciding = supported.evidence[(supported.evidence.metric == "causal_ppl") & (supported.evidence.basis == "epochs")]
    assert len(deciding) == 4 and set(deciding.outcome) == {"lower"}
    step = deciding[(deciding.cell == "lstm") & (deciding.comparison == "1 -> 2 layers")].iloc[0]
    assert step.effect == pytest.approx(((8.0 - 10.0) + (8.4 - 10.3) + (7.9 - 9.8)) / 3)
    assert step.pairing == "paired" and step.n == 3 and step.ci_high < 0
    assert "lower with more layers in 4 of 4" in supported.summary

    opposite = run(cells_frame(depth_rows(WORSENING) + depth_rows(WORSENING, cell="gru")), spec)
    assert opposite.verdict == NOT_SUPPORTED, opposite.summary
    assert set(opposite.evidence.query("metric == 'causal_ppl' and basis == 'epochs'").outcome) == {"higher"}


def test_depth_helps_equal_perplexity_is_not_support():
    flat = {1: [8.0, 8.01, 7.99], 2: [8.0, 8.01, 7.99]}
    result = run(cells_frame(depth_rows(flat)), default_claim("depth_helps"))
    assert result.verdict == NOT_SUPPORTED
    assert list(result.evidence.query("metric == 'causal_ppl' and basis == 'epochs'").outcome) == ["no change"]


def test_depth_helps_inconclusive_with_one_seed_wide_spread_or_one_depth():
    spec = default_claim("depth_helps")
    one_seed = run(cells_frame(depth_rows({1: [10.0], 2: [8.0]})), spec)
    assert one_seed.verdict == INCONCLUSIVE and one_seed.reason.startswith("too few seeds")

    wide = run(cells_frame(depth_rows({1: [10.0, 10.0, 10.0], 2: [4.0, 15.0, 9.0]})), spec)
    assert wide.verdict == INCONCLUSIVE and wide.reason.startswith("spread too wide")

    one_depth = run(cells_frame(depth_rows({2: [8.0, 8.1]})), spec)
    assert one_depth.verdict == INCONCLUSIVE and "only one depth" in one_depth.reason

    more_seeds = run(cells_frame(depth_rows(IMPROVING)), ClaimSpec("depth_helps", metric="causal_ppl", min_seeds=4))
    assert more_seeds.verdict == INCONCLUSIVE and "4 needed" in more_seeds.reason


def test_depth_helps_ignores_cells_that_did_not_finish_and_says_so():
    rows = depth_rows(IMPROVING)
    cells = pd.concat([cells_frame(rows),
                       cells_frame([("lstm", 2, "uni", 3, 100.0, 100.0, 100.0, 0.2, 1e6)], status="diverged")])
    result = run(cells, default_claim("depth_helps"))
    assert result.verdict == SUPPORTED and "1 diverged" in result.summary


def test_depth_helps_bidirectional_cells_only_when_asked():
    cells = cells_frame(depth_rows(IMPROVING, direction="bi"))
    assert "cells missing" in run(cells, default_claim("depth_helps")).reason
    asked = run(cells, ClaimSpec("depth_helps", metric="causal_ppl", directions=("bi",)))
    assert asked.verdict == SUPPORTED


def epochs_frame(curves):
    """curves: cell_id -> list of (sec, train_ppl, causal_ppl or None) per epoch."""
    rows = []
    for cell_id, epochs in curves.items():
        for epoch, (sec, train, causal) in enumerate(epochs, start=1):
            rows.append({"cell_id": cell_id, "epoch": epoch, "sec": sec, "train_ppl": train, "causal_ppl": causal})
    return pd.DataFrame(rows)


def test_depth_at_equal_time_can_reverse_the_verdict():
    # The deeper cell ends lower after 4 epochs, but each of its epochs takes twice as long: at the 4
    # seconds the shallow cell trained, it has done 2 epochs and is still worse.
    rows, curves = [], {}
    for seed, jitter in enumerate([0.0, 0.1, -0.1]):
        shallow = [(1.0, 12 + jitter, None), (1.0, 9 + jitter, 9.5 + jitter), (1.0, 7 + jitter, None),
                   (1.0, 6 + jitter, 6.5 + jitter)]
        deep = [(2.0, 11 + jitter, None), (2.0, 8 + jitter, 8.5 + jitter), (2.0, 5 + jitter, None),
                (2.0, 4 + jitter, 4.5 + jitter)]
        curves[f"lstm-l1-uni-cpu-s{seed}"] = shallow
        curves[f"lstm-l2-uni-cpu-s{seed}"] = deep
        rows.append(("lstm", 1, "uni", seed, 6.5 + jitter, 6.4, 6 + jitter, 1.0, 1e6))
        rows.append(("lstm", 2, "uni", seed, 4.5 + jitter, 4.4, 4 + jitter, 2.0, 1e6))
    cells, epochs = cells_frame(rows), epochs_frame(curves)
    by_epochs = run(cells, ClaimSpec("depth_helps", metric="train_ppl", basis="epochs"), epochs)
    by_time = run(cells, ClaimSpec("depth_helps", metric="train_ppl", basis="time"), epochs)
    assert by_epochs.verdict == SUPPORTED and by_time.verdict == NOT_SUPPORTED
    at_time = by_time.evidence.query("metric == 'train_ppl' and basis == 'time'").iloc[0]
    assert at_time.mean_a == pytest.approx(6.0) and at_time.mean_b == pytest.approx(8.0)
    causal = by_time.evidence.query("metric == 'causal_ppl' and basis == 'time'").iloc[0]
    assert causal.mean_b == pytest.approx(8.5) and causal.outcome == "higher"
    assert "training perplexity at equal epochs lower in 1 of 1" in by_time.summary
    assert run(cells, ClaimSpec("depth_helps", metric="train_ppl", basis="time")).reason.startswith("no per-epoch")


def test_warm_up_epoch_counts_at_the_median_epoch_time():
    epochs = epochs_frame({"c": [(5.0, 9.0, None), (1.0, 8.0, None), (2.0, 7.0, None), (1.0, 6.0, None)]})
    epochs["warmup"] = [True, False, False, False]
    assert list(training_curves(epochs)["c"]["elapsed"]) == [1.0, 2.0, 4.0, 5.0]


def test_titles_name_the_parameters_that_differ():
    assert default_claim("depth_helps").title == "Depth helps"
    assert ClaimSpec("depth_helps", metric="train_ppl", basis="time").title == \
        "Depth helps (metric = train_ppl, basis = time)"


def test_value_at_time_takes_the_last_value_reached():
    curve = training_curves(epochs_frame({"c": [(1.0, 5.0, None), (1.0, 4.0, 4.5), (1.0, 3.0, None)]}))["c"]
    assert value_at_time(curve, 2.0, "train_ppl") == 4.0
    assert value_at_time(curve, 2.5, "causal_ppl") == 4.5
    assert math.isnan(value_at_time(curve, 0.5, "train_ppl"))


# --- bidirectional is slow --------------------------------------------------------------------------------


def direction_rows(uni_sec, bi_sec, uni_causal=(8.0, 8.2, 7.9), bi_causal=(16.0, 16.5, 15.8), layers=(1, 2)):
    rows = []
    for depth in layers:
        for seed in range(len(uni_sec)):
            rows.append(("gru", depth, "uni", seed, uni_causal[seed], uni_causal[seed] * 0.97, 6.0, uni_sec[seed] * depth,
                         1e6 * depth))
            rows.append(("gru", depth, "bi", seed, bi_causal[seed], 1.3, 1.2, bi_sec[seed] * depth, 1.9e6 * depth))
    return rows


def test_bidirectional_slow_supported_not_supported_and_inconclusive():
    spec = default_claim("bidirectional_slow")
    slow = run(cells_frame(direction_rows([1.0, 1.1, 0.9], [2.0, 2.3, 1.8])), spec)
    assert slow.verdict == SUPPORTED, slow.summary
    deciding = slow.evidence[slow.evidence.metric == "sec_per_epoch"]
    assert len(deciding) == 2 and deciding.effect.iloc[0] == pytest.approx((2.0 * 2.3 / 1.1 * 1.8 / 0.9) ** (1 / 3))

    fast = run(cells_frame(direction_rows([2.0, 2.3, 1.8], [1.0, 1.1, 0.9])), spec)
    assert fast.verdict == NOT_SUPPORTED and set(fast.evidence.query("metric == 'sec_per_epoch'").outcome) == {"not slower"}

    noisy = run(cells_frame(direction_rows([1.0, 1.0, 1.0], [0.5, 3.0, 1.2])), spec)
    assert noisy.verdict == INCONCLUSIVE and noisy.reason.startswith("spread too wide")

    single = run(cells_frame(direction_rows([1.0], [2.0], (8.0,), (16.0,))), spec)
    assert single.verdict == INCONCLUSIVE and single.reason.startswith("too few seeds")

    # A few words for a table of claims: the gist and the count that decided, or why undecided.
    ratio = (2.0 * 2.3 / 1.1 * 1.8 / 0.9) ** (1 / 3)
    assert slow.short == f"bi/uni s/epoch x{ratio:.3g}; above x1.1 in 2 of 2"
    assert fast.short == f"bi/uni s/epoch x{1 / ratio:.3g}; below x1.1 in 2 of 2"
    assert noisy.short.endswith("; " + noisy.reason) and single.short.endswith(single.reason)


def test_bidirectional_slow_threshold_and_memory_metric():
    cells = cells_frame(direction_rows([1.0, 1.1, 0.9], [2.0, 2.3, 1.8]))
    assert run(cells, ClaimSpec("bidirectional_slow", metric="sec_per_epoch", threshold=3.0)).verdict == NOT_SUPPORTED
    memory = run(cells, ClaimSpec("bidirectional_slow", metric="peak_mem_bytes", threshold=1.5))
    assert memory.verdict == SUPPORTED and "x1.9" in memory.summary


def test_slowdown_pairs_only_cells_timed_on_the_same_machine():
    # A Ray run over a fast and a three times slower machine: uni seeds 0-2 ran on the fast one and bi
    # seeds 0-2 on the slow one, the other way round for seeds 3-5. Pairing seed 0 with seed 0 would
    # compare machines (x3 and x1/3); on each machine bi is as fast as uni.
    fast, slow = "Fast CPU", "Slow CPU"
    uni = [1.0, 1.02, 0.98]
    bi = [1.01, 0.99, 1.0]
    rows, machines = [], []
    for seed in range(6):
        on_fast = seed < 3
        rows.append(("gru", 1, "uni", seed, 8.0, 7.8, 6.0, uni[seed % 3] * (1 if on_fast else 3), 1e6))
        machines.append(fast if on_fast else slow)
        rows.append(("gru", 1, "bi", seed, 16.0, 1.3, 1.2, bi[seed % 3] * (3 if on_fast else 1), 1.9e6))
        machines.append(slow if on_fast else fast)
    cells = cells_frame(rows).assign(cpu_model=machines, gpu_name=None)
    result = run(cells, default_claim("bidirectional_slow"))
    assert result.verdict == NOT_SUPPORTED, result.summary
    deciding = result.evidence[result.evidence.metric == "sec_per_epoch"]
    assert list(deciding.machine) == [fast, slow] and set(deciding.pairing) == {"unpaired"}
    assert deciding.effect.to_numpy() == pytest.approx([1.0, 1.0], abs=0.02)
    # Without the machines the same numbers pair across them: ratios x3 and x1/3, no verdict.
    assert run(cells.drop(columns=["cpu_model", "gpu_name"]), default_claim("bidirectional_slow")).verdict == INCONCLUSIVE
    # Perplexity does not depend on the machine: those pairs stay by seed across machines.
    useless = run(cells, default_claim("bidirectional_useless"))
    causal = useless.evidence[useless.evidence.metric == "causal_ppl"]
    assert len(causal) == 1 and causal.n.iloc[0] == 6 and causal.pairing.iloc[0] == "paired"
    assert "machine" not in useless.evidence


def test_equal_time_depth_comparisons_stay_on_one_machine():
    curves, rows, machines = {}, [], []
    for seed in range(4):
        for depth, sec in ((1, 1.0), (2, 2.0)):
            on_a = (seed + depth) % 2 == 0
            curves[f"lstm-l{depth}-uni-cpu-s{seed}"] = [(sec * (1 if on_a else 2), 10.0 - depth - e, 10.0 - depth)
                                                       for e in range(3)]
            rows.append(("lstm", depth, "uni", seed, 9.0 - depth + seed / 10, 8.8, 8.0 - depth + seed / 10, sec, 1e6))
            machines.append("CPU A" if on_a else "CPU B")
    cells = cells_frame(rows).assign(cpu_model=machines)
    result = run(cells, ClaimSpec("depth_helps", metric="causal_ppl", basis="time"), epochs_frame(curves))
    by_time = result.evidence[(result.evidence.basis == "time") & (result.evidence.metric == "causal_ppl")]
    by_epochs = result.evidence[(result.evidence.basis == "epochs") & (result.evidence.metric == "causal_ppl")]
    assert list(by_time.machine) == ["CPU A", "CPU B"] and list(by_time.n) == [2, 2]
    assert len(by_epochs) == 1 and by_epochs.n.iloc[0] == 4 and by_epochs.machine.isna().all()


def test_bidirectional_claims_need_both_directions():
    only_uni = cells_frame(depth_rows(IMPROVING))
    for name in ("bidirectional_slow", "bidirectional_useless"):
        result = run(only_uni, default_claim(name))
        assert result.verdict == INCONCLUSIVE and "cells missing" in result.reason


# --- bidirectional is useless -----------------------------------------------------------------------------


def samples_frame(cells: pd.DataFrame, uni_text: str, bi_text: str) -> pd.DataFrame:
    return pd.DataFrame({"cell_id": cells.cell_id, "prefix": "time traveller",
                         "text": ["time traveller" + (bi_text if d == "bi" else uni_text) for d in cells.direction]})


WORDS = {"the", "time", "traveller", "was", "expounding", "a", "matter", "to", "us"}


def test_bidirectional_useless_supported_with_leak_and_quality():
    cells = cells_frame(direction_rows([1.0, 1.1, 0.9], [2.0, 2.3, 1.8]))
    samples = samples_frame(cells, " was expounding a matter to us", " travellererererererer")  # "ererererererer": 14 characters
    result = run(cells, default_claim("bidirectional_useless"), samples=samples, words=WORDS)
    assert result.verdict == SUPPORTED, result.summary
    leak = result.evidence[result.evidence.comparison == "bi: causal / teacher-forced"]
    assert (leak.outcome == "leak").all() and leak.effect.iloc[0] > 10
    words = result.evidence[result.evidence.metric == "word_share"].iloc[0]
    assert words.mean_a == 1.0 and words.mean_b == 0.0
    repeat = result.evidence[result.evidence.metric == "longest_repeat"].iloc[0]
    assert repeat.mean_b == 14 and repeat.outcome == "bi higher"
    assert "words found in the corpus uni 100% vs bi 0%" in result.summary


def test_bidirectional_useless_not_supported_when_bi_predicts_better():
    cells = cells_frame(direction_rows([1.0, 1.1, 0.9], [2.0, 2.3, 1.8], uni_causal=(16.0, 16.5, 15.8),
                                       bi_causal=(8.0, 8.2, 7.9)))
    result = run(cells, default_claim("bidirectional_useless"))
    assert result.verdict == NOT_SUPPORTED
    assert set(result.evidence.query("metric == 'causal_ppl'").outcome) == {"bi better"}


def test_bidirectional_useless_inconclusive_and_words_unavailable():
    cells = cells_frame(direction_rows([1.0], [2.0], (8.0,), (16.0,)))
    result = run(cells, default_claim("bidirectional_useless"), samples=samples_frame(cells, " the", " the"))
    assert result.verdict == INCONCLUSIVE and result.reason.startswith("too few seeds")
    assert "unavailable" in result.summary


def test_no_cells_gives_inconclusive_claims_not_errors():
    results = evaluate_claims(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), None, None)
    assert [r.name for r in results] == ["depth_helps", "bidirectional_slow", "bidirectional_useless"]
    assert all(r.verdict == INCONCLUSIVE and r.reason for r in results)


# --- text quality -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("travellerererer", 8),  # "erererer"
    ("abcdefg", 0),
    ("aaaa", 4),
    ("time traveller", 2),  # "ll"
    ("the the the the", 15),  # unit "the " (period 4)
    ("abcdeabcde", 0),  # a unit of 5 is longer than the longest unit counted
    ("", 0),
])
def test_longest_repeat(text, expected):
    assert longest_repeat(text) == expected


def test_word_share_leaves_out_the_cut_off_last_word():
    assert word_share("the time machin", {"the", "time"}) == 1.0
    assert word_share("the tiem was", {"the", "was"}) == 0.5
    assert word_share("the", {"the"}) == 1.0
    assert math.isnan(word_share("   ", {"the"}))
