"""Character n-gram models with interpolated Kneser-Ney smoothing, on literal texts whose probabilities are
computed by hand (harness.analysis.ngram's formula)."""

import math
from fractions import Fraction

import pytest

from harness.analysis.ngram import KneserNey, ngram_baselines
from harness.analysis.no_learning import best_ngram, corpus_baselines
from harness.cell.corpus import EMBEDDED_DIR

VOCAB = ["a", "b", "<unk>"]


def test_a_bigram_model_of_abab_by_hand():
    # Bigrams ab x2, ba x1: counted once and twice, so D2 = 1 / (1 + 2) = 1/3. Below them, continuation
    # counts: b after one distinct token, a after one: both counted once, so D1 = 2 / 2 = 1 and
    # P1(w) = (max(c - 1, 0) + 1 * 2 * 1/3) / 2 = 1/3 for every token.
    model = KneserNey(list("abab"), 2, VOCAB)
    assert model.discounts == {2: pytest.approx(1 / 3), 1: 1.0}
    assert model.prob(["a"], "b") == pytest.approx(float(Fraction(8, 9)))  # (2 - 1/3 + 1/3 * 1 * 1/3) / 2
    assert model.prob(["a"], "a") == pytest.approx(1 / 18)  # (0 + 1/3 * 1 * 1/3) / 2
    assert model.prob(["b"], "a") == pytest.approx(7 / 9)  # (1 - 1/3 + 1/3 * 1/3) / 1
    assert model.prob(["b"], "<unk>") == pytest.approx(1 / 9)
    assert model.prob(["<unk>"], "a") == pytest.approx(1 / 3)  # a context never seen: the order below


def test_a_fixed_discount_by_hand():
    model = KneserNey(list("abab"), 2, VOCAB, discount=0.5)
    # P1: a and b (0.5 + 0.5 * 2 * 1/3) / 2 = 5/12, <unk> (0 + 1/3) / 2 = 1/6
    assert [model._prob(1, (), w) for w in VOCAB] == pytest.approx([5 / 12, 5 / 12, 1 / 6])
    assert model.prob(["a"], "b") == pytest.approx(41 / 48)  # (1.5 + 0.5 * 1 * 5/12) / 2


def test_the_perplexity_of_a_held_out_text_by_hand():
    model = KneserNey(list("abab"), 2, VOCAB)
    # "ba" after the training text's last token b: P(b | b) = 1/9, then P(a | b) = 7/9
    assert model.perplexity(list("abab"), list("ba")) == pytest.approx(math.exp(-(math.log(1 / 9) + math.log(7 / 9)) / 2))


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 6])
def test_every_distribution_sums_to_one(order):
    text = (EMBEDDED_DIR / "pg35.txt").read_text(encoding="utf-8")[20000:23000].lower()
    tokens = [c if "a" <= c <= "z" else " " for c in text]
    vocab = sorted(set(tokens)) + ["<unk>"]
    model = KneserNey(tokens, order, vocab)
    for start in (0, 101, 1777, 2990):
        history = tokens[max(0, start - 6):start] + list("xq")  # ends in contexts seen and never seen
        assert sum(model.prob(history, w) for w in vocab) == pytest.approx(1.0, abs=1e-12)


def test_the_recorded_baselines_name_each_order_and_the_best():
    path = EMBEDDED_DIR / "pg35.txt"
    baselines = corpus_baselines(path, True, 10_000, 5_000)
    assert [k for k in baselines if k.endswith("-gram")] == [f"{n}-gram" for n in range(1, 7)]
    name, value = best_ngram(baselines)
    assert value == min(baselines[f"{n}-gram"] for n in range(1, 7)) and baselines[name] == value
    # Counted on the same text and scored on the same held-out tokens as the add-one models beside them:
    # the order-1 Kneser-Ney model is letter frequencies too.
    assert baselines["1-gram"] == pytest.approx(baselines["unigram"], rel=0.01)
    assert baselines["3-gram"] < baselines["bigram"]


def test_no_training_or_held_out_text_is_an_error():
    with pytest.raises(ValueError):
        ngram_baselines(list("abab"), 4, 3, VOCAB)


def test_a_run_recorded_before_the_ngram_models_gets_them_beside_its_own_baselines():
    from harness.analysis.run_text import run_baselines

    recorded = {"uniform": 28.0, "unigram": 17.0, "bigram": 10.1, "tokens": 5000}
    baselines, note = run_baselines([("gutenberg-35", True, 10_000, 5_000)], recorded)
    assert baselines["unigram"] == 17.0 and baselines["bigram"] == 10.1  # its own, as recorded
    assert baselines["1-gram"] > baselines["3-gram"] > baselines["6-gram"] > 1
    assert "n-gram models computed from the corpus file" in note
    complete = {**recorded, **{k: v for k, v in baselines.items() if k.endswith("-gram")}}
    assert run_baselines([("gutenberg-35", True, 10_000, 5_000)], complete) == (complete, "recorded in run.json")


def test_the_first_screen_places_the_best_network_against_the_best_ngram():
    import pandas as pd

    from harness.report.tables import baseline_sentence

    ok = pd.DataFrame({"cell_id": ["gru-a", "gru-b", "lstm-c"], "best_causal_ppl": [7.2, 5.0, 17.0],
                       "learned": [True, True, False]})
    baselines = {"unigram": 17.0, "bigram": 10.0, "5-gram": 5.5, "6-gram": 5.4}
    text = baseline_sentence(ok, baselines)
    assert text.startswith("The best network, gru-b, reached a held-out causal perplexity of 5;")
    assert "the 6-gram (Kneser-Ney), 5.4: 1 of 3 finished cells is below it." in text
    assert "1 of 3 finished cells did not learn (best held-out causal perplexity above 16.1" in text
    assert "n-gram" not in baseline_sentence(ok, {"unigram": 17.0, "bigram": 10.0})
