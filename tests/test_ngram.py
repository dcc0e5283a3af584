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
    # With selection text the network is held at the epoch chosen there, not at its best held-out evaluation
    # (which would choose the epoch on the text that reports it).
    ok["selected_causal_ppl"] = [7.3, 5.6, 17.1]
    text = baseline_sentence(ok, baselines)
    assert text.startswith("The best network, gru-b, reached a held-out causal perplexity of 5.6 at the epoch "
                           "chosen on selection text;")
    assert "5.4: 0 of 3 finished cells are below it." in text
    ok.loc[1, "selected_causal_ppl"] = float("nan")  # gru-b had no selection text: its best evaluation, 5
    text = baseline_sentence(ok, baselines)
    assert "of 5 at the epoch chosen on selection text (cells without selection text: at their best" in text


def test_baselines_of_a_text_in_pieces_count_no_gram_across_the_gap():
    from harness.analysis.ngram import gram_counts, ngram_baselines_of, pieces_gram_counts
    from harness.analysis.no_learning import text_baselines

    counts = pieces_gram_counts([list("ab"), list("ba")], 2)
    assert counts[2] == gram_counts(list("ab"), 2)[2] + gram_counts(list("ba"), 2)[2]
    assert ("b", "b") not in counts[2]  # the end of one piece and the start of the next
    # Unigrams a2 b2 (4 tokens), bigrams ab, ba; "b" has one successor counted, as has "a".
    # Held-out "ab" after "...b": P(a | b) = (1 + 1) / (1 + 3), P(b | a) = (1 + 1) / (1 + 3).
    baselines = text_baselines([list("ab"), list("ba")], list("ab"), 3, before=list("ab"))
    assert baselines["bigram"] == pytest.approx(2.0)
    assert baselines["unigram"] == pytest.approx(7 / 3)  # (2 + 1) / (4 + 3) for each
    assert "2 + 2" in baselines["counted_on"]
    one_piece = ngram_baselines_of([list("abba")], list("ab"), list("ab"), VOCAB, orders=[2])
    two_pieces = ngram_baselines_of([list("ab"), list("ba")], list("ab"), list("ab"), VOCAB, orders=[2])
    assert one_piece["2-gram"] != two_pieces["2-gram"]  # "bb" is counted only when the pieces touch


def test_the_book_text_baselines_are_counted_on_the_book_and_scored_on_the_same_held_out_text(tmp_path):
    from harness.cell.corpus import training_pieces

    tokens = list(range(100))
    first = training_pieces(tokens, 10, 20)
    book = training_pieces(tokens, 10, 20, "book", select_tokens=5)
    assert first == [tokens[:10]]
    # After held-out (10-29) and selection (30-34): 65 tokens, six whole chunks of 10.
    assert book == [tokens[:10], tokens[35:95]]
    path = EMBEDDED_DIR / "pg35.txt"
    on_first = corpus_baselines(path, True, 2_000, 2_000)
    on_book = corpus_baselines(path, True, 2_000, 2_000, "book", 1_000)
    assert on_first["tokens"] == on_book["tokens"] == 2_000
    assert "the 2000 training tokens" not in on_book["counted_on"] and "2000 + " in on_book["counted_on"]
    # Fifty times the text: the book's n-gram model is far better than the first 2,000 characters'.
    assert best_ngram(on_book)[1] < 0.8 * best_ngram(on_first)[1]


def test_each_cell_is_held_to_the_baselines_of_its_own_training_text():
    import pandas as pd

    from harness.analysis.claims import learning_status
    from harness.analysis.run_text import cell_baselines

    main = {"uniform": 28.0, "unigram": 17.0, "bigram": 10.0, "6-gram": 7.3}
    book = {"uniform": 28.0, "unigram": 16.0, "bigram": 9.0, "5-gram": 4.6, "6-gram": 4.5}
    common = {"corpus": "c.txt", "max_tokens": 100, "val_tokens": 50, "status": "ok", "causal_ppl": 15.5,
              "selected_causal_ppl": 15.5}
    cells = pd.DataFrame([{**common, "cell_id": "first", "train_text": "first", "select_tokens": 20},
                          {**common, "cell_id": "book", "train_text": "book", "select_tokens": 20},
                          {**common, "cell_id": "other-book", "train_text": "book", "select_tokens": 40}])
    entry = {"corpus": "c.txt", "strip_boilerplate": True, "max_tokens": 100, "val_tokens": 50,
             "train_text": "book", "select_tokens": 20, "baselines": book}
    columns = cell_baselines(cells, main, [entry])
    assert columns["unigram_baseline"][:2] == [17.0, 16.0]
    assert columns["ngram_baseline"][:2] == [7.3, 4.5] and columns["ngram_baseline_order"][:2] == ["6-gram", "6-gram"]
    # A book split whose baselines are unknown (another selection text) has none, never the first text's.
    assert math.isnan(columns["unigram_baseline"][2]) and columns["ngram_baseline_order"][2] is None
    ok = learning_status(cells.assign(**columns), pd.DataFrame(), main)
    learned = dict(zip(ok["cell_id"], ok["learned"]))
    # 15.5 is below 0.95 x 17 = 16.15 but above 0.95 x 16 = 15.2.
    assert learned["first"] == True  # noqa: E712
    assert learned["book"] == False  # noqa: E712
    assert learned["other-book"] != learned["other-book"]  # NaN: no bound to hold it to


def test_a_run_records_the_baselines_of_each_training_text(tmp_path):
    from harness.analysis.run_text import other_text_baselines

    path = EMBEDDED_DIR / "pg35.txt"
    first = (str(path), True, 2_000, 2_000, "first", 500)
    book = (str(path), True, 2_000, 2_000, "book", 500)
    entries = other_text_baselines([first, first, book])
    assert [e["train_text"] for e in entries] == ["book"]
    assert entries[0]["baselines"] == corpus_baselines(path, True, 2_000, 2_000, "book", 500)
    # Recorded entries are kept as they are, not computed again.
    recorded = [{**entries[0], "baselines": {**entries[0]["baselines"], "unigram": 1.5}}]
    assert other_text_baselines([first, book], recorded)[0]["baselines"]["unigram"] == 1.5
    assert other_text_baselines([first, first]) == []


def test_the_first_screen_places_each_network_against_the_ngram_of_its_own_text():
    import pandas as pd

    from harness.report.tables import baseline_sentence, learning_sentence

    ok = pd.DataFrame({"cell_id": ["gru-first", "gru-book"], "best_causal_ppl": [7.2, 5.0],
                       "ngram_baseline": [7.3, 4.5], "ngram_baseline_order": ["6-gram", "6-gram"],
                       "learned": [True, True]})
    main = {"uniform": 28.0, "unigram": 17.0, "bigram": 10.0, "tokens": 50, "6-gram": 7.3}
    entry = {"max_tokens": 100, "train_text": "book", "baselines": {"unigram": 16.0, "bigram": 9.0, "6-gram": 4.5}}
    text = baseline_sentence(ok, main, [entry])
    # gru-book (5.0) is below the first text's 7.3 but not below its own book's 4.5.
    assert "the best character n-gram model of its own training text, the 6-gram (Kneser-Ney), 4.5" in text
    assert "1 of 2 finished cells is below the n-gram model of their own training text" in text
    words = learning_sentence(ok, main, "", [entry])
    assert "Cells trained on the whole book" in words and "best n-gram model the 6-gram at 4.5" in words
