"""Tiny real training runs on the CPU: determinism, the record, warm-up, skips, divergence, precision,
sampling, and the `cell` command."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from harness import cli
from harness.host import machine
from harness.cell import train
from harness.spec.config import CellConfig
from harness.cell.batches import load_corpus, random_batches, sequential_batches
from harness.cell.model import CharRNN, count_params, training_flops
from harness.cell.train import EXTRA_COLUMNS, RESULT_COLUMNS, Trainer, run_cell

ROOT = Path(__file__).resolve().parents[1]

PARAGRAPH = """The Time Traveller (for so it will be convenient to speak of him) was expounding a
recondite matter to us. His grey eyes shone and twinkled, and his usually pale face was flushed
and animated. The fire burned brightly, and the soft radiance of the incandescent lights in the
lilies of silver caught the bubbles that flashed and passed in our glasses. Our chairs, being his
patents, embraced and caressed us rather than submitted to be sat upon, and there was that
luxurious after-dinner atmosphere when thought roams gracefully free of the trammels of precision.
"""


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "book.txt"
    path.write_text(PARAGRAPH * 6, encoding="utf-8")  # 3,276 character tokens, 25 in the vocabulary
    return path


@pytest.fixture(scope="module")
def corpus(book):
    return load_corpus(str(book), max_tokens=2000, val_tokens=500)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


def tiny(book: Path, **overrides) -> CellConfig:
    """A cell that trains in well under a second: 7 batches of 8 x 35 tokens per epoch."""
    values = dict(corpus=str(book), max_tokens=2000, val_tokens=500, cell="lstm", layers=2, hidden=16,
                  epochs=3, batch_size=8, num_steps=35, eval_every=1, sample_chars=20, threads=1)
    values.update(overrides)
    return CellConfig(**values)


def curves(record: dict) -> list[tuple]:
    return [(row["train_ppl"], row["val_ppl"], row["causal_ppl"]) for row in record["epoch_log"]]


# --- determinism ----------------------------------------------------------------------------------------


def test_same_cell_and_seed_give_identical_perplexities(book, corpus):
    first = run_cell(tiny(book), corpus=corpus)
    torch.manual_seed(12345)  # the global random state must not matter
    torch.rand(100)
    second = run_cell(tiny(book), corpus=corpus)
    other_seed = run_cell(tiny(book, seed=1), corpus=corpus)
    assert first["status"] == second["status"] == other_seed["status"] == "ok"
    assert curves(first) == curves(second)
    assert first["samples"] == second["samples"]
    assert curves(other_seed) != curves(first)


# --- the record -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def record(book, corpus):
    threads = torch.get_num_threads()
    try:
        return run_cell(tiny(book, epochs=4, eval_every=2), corpus=corpus)
    finally:
        torch.set_num_threads(threads)


def test_record_has_every_column_with_sane_values(record, corpus):
    cfg_vocab = len(corpus.vocab)
    assert set(RESULT_COLUMNS) | set(EXTRA_COLUMNS) <= set(record)
    assert record["status"] == "ok" and record["reason"] == ""
    assert (record["cell"], record["layers"], record["direction"], record["device"], record["seed"]) == (
        "lstm", 2, "uni", "cpu", 0)
    assert record["hidden"] == 16 and record["epochs"] == 4 and record["epochs_done"] == 4
    assert record["cell_id"] == "lstm-l2-uni-cpu-s0"
    # a barely trained model: better than uniform over the vocabulary, far from perfect
    for key in ("train_ppl", "val_ppl", "causal_ppl"):
        assert 1.0 < record[key] < cfg_vocab, key
    assert record["train_ppl"] == record["epoch_log"][-1]["train_ppl"]
    assert record["sec_per_epoch"] > 0 and record["sec_per_epoch_iqr"] >= 0
    # every epoch sees whole batches of 8 x 35 tokens
    assert record["tokens_per_epoch"] % (8 * 35) == 0 and 0 < record["tokens_per_epoch"] <= 2000
    assert record["tokens_per_sec"] == pytest.approx(record["tokens_per_epoch"] / record["sec_per_epoch"])
    assert record["params"] == count_params(CharRNN(cfg_vocab, "lstm", 2, False, 16))
    assert record["flops_per_epoch"] == training_flops(cfg_vocab, "lstm", 2, False, 16,
                                                       int(record["tokens_per_epoch"]))
    assert record["flops_per_sec"] == pytest.approx(record["flops_per_epoch"] / record["sec_per_epoch"])
    assert record["peak_mem_bytes"] == record["peak_rss_bytes"] - record["rss_before_bytes"] >= 0
    assert record["rss_before_bytes"] > 0
    assert record["vocab_size"] == cfg_vocab
    assert record["corpus_sha256"] == corpus.sha256
    assert record["threads"] == 1 and record["precision"] == "fp32"
    assert record["torch_version"] == torch.__version__ and record["gpu_name"] is None
    assert [s["prefix"] for s in record["samples"]] == ["time traveller", "traveller"]
    assert record["sample"] == record["samples"][0]["text"]
    for sample in record["samples"]:
        assert sample["text"].startswith(sample["prefix"])
        assert len(sample["text"]) == len(sample["prefix"]) + 20
        assert set(sample["text"]) <= set(corpus.vocab.idx_to_token[1:])
    json.loads(json.dumps({key: record[key] for key in RESULT_COLUMNS}))


def test_warmup_epoch_is_excluded_from_sec_per_epoch(record):
    log = record["epoch_log"]
    assert [row["epoch"] for row in log] == [1, 2, 3, 4]
    assert [row["warmup"] for row in log] == [True, False, False, False]
    assert all(row["sec"] > 0 for row in log)  # every raw epoch time is kept
    assert record["sec_per_epoch"] == statistics.median(row["sec"] for row in log[1:])


def test_evaluation_runs_every_eval_every_epochs_and_at_the_end(record, book, corpus):
    evaluated = [row["epoch"] for row in record["epoch_log"] if row["val_ppl"] is not None]
    assert evaluated == [2, 4]
    assert all((row["causal_ppl"] is None) == (row["val_ppl"] is None) for row in record["epoch_log"])
    only_last = run_cell(tiny(book, epochs=2, eval_every=0), corpus=corpus)
    assert [row["val_ppl"] is not None for row in only_last["epoch_log"]] == [False, True]


def test_val_tokens_0_trains_without_held_out_evaluation(book):
    record = run_cell(tiny(book, val_tokens=0, epochs=2))
    assert record["status"] == "ok" and record["train_ppl"] > 1
    assert record["val_ppl"] is None and record["causal_ppl"] is None
    assert all(row["val_ppl"] is None and row["causal_ppl"] is None for row in record["epoch_log"])


def clear_refs_writable() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def test_record_says_whether_peak_memory_is_the_epochs_own(book, corpus, monkeypatch):
    assert run_cell(tiny(book, epochs=1), corpus=corpus)["peak_mem_exact"] is clear_refs_writable()

    real_open = open

    def no_clear_refs(path, *args, **kwargs):
        if str(path) == "/proc/self/clear_refs":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(machine, "open", no_clear_refs, raising=False)
    assert run_cell(tiny(book, epochs=1), corpus=corpus)["peak_mem_exact"] is False


def test_run_cell_loads_the_corpus_named_by_the_config(book, corpus):
    cfg = tiny(book, cell="rnn", layers=1, epochs=1)
    assert curves(run_cell(cfg)) == curves(run_cell(cfg, corpus=corpus))


# --- cells that do not train normally -------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present, so a CUDA cell is not skipped")
def test_cuda_cell_is_skipped_with_a_reason_on_a_machine_without_cuda(book):
    record = run_cell(tiny(book, device="cuda", corpus=str(book.parent / "not-needed.txt")))
    assert set(RESULT_COLUMNS) <= set(record)
    assert record["status"] == "skipped"
    assert "CUDA" in record["reason"]
    assert record["device"] == "cuda" and record["cell"] == "lstm" and record["layers"] == 2
    assert record["epochs_done"] == 0 and record["epoch_log"] == []
    assert record["train_ppl"] is None and record["sec_per_epoch"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_cell_trains_like_the_cpu_one(book, corpus, cuda_graphs):
    # Same seed: the same initial weights (made on the CPU) and the same batches, so the first epochs agree
    # up to floating-point (and TF32) differences.
    cpu = run_cell(tiny(book), corpus=corpus)
    cuda = run_cell(tiny(book, device="cuda", cuda_graphs=cuda_graphs), corpus=corpus)
    assert cuda["status"] == "ok" and cuda["epochs_done"] == 3
    assert cuda["gpu_name"] and cuda["peak_mem_bytes"] > 0
    assert cuda["epoch_log"][0]["train_ppl"] == pytest.approx(cpu["epoch_log"][0]["train_ppl"], rel=2e-2)
    assert cuda["causal_ppl"] == pytest.approx(cpu["causal_ppl"], rel=5e-2)


@pytest.mark.parametrize("lr", [1e30, 1e38])
def test_a_huge_learning_rate_is_reported_as_diverged(book, corpus, lr):
    # Clipping bounds the gradient norm at 1, so the step is lr: 1e30 drives the loss far past the
    # ~709 nats at which exp() overflows, 1e38 to an infinite loss.
    record = run_cell(tiny(book, lr=lr), corpus=corpus)
    assert record["status"] == "diverged"
    assert "epoch 1" in record["reason"]
    assert record["epochs_done"] == len(record["epoch_log"]) == 1
    assert not math.isfinite(record["train_ppl"])
    assert record["sample"] == "" and record["samples"] == []
    assert record["sec_per_epoch"] == record["epoch_log"][0]["sec"]


def test_divergence_in_a_later_epoch_keeps_the_epochs_before_it(book, corpus, monkeypatch):
    models = []

    class RecordedCharRNN(CharRNN):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            models.append(self)

    def poison_after_first_epoch(row):
        if row["epoch"] == 1:
            with torch.no_grad():
                models[0].head.bias.fill_(float("nan"))

    monkeypatch.setattr(train, "CharRNN", RecordedCharRNN)
    record = run_cell(tiny(book, epochs=4), corpus=corpus, on_epoch=poison_after_first_epoch)
    assert record["status"] == "diverged" and "epoch 2" in record["reason"]
    assert record["epochs_done"] == 2
    first, second = record["epoch_log"]
    assert math.isfinite(first["train_ppl"]) and first["val_ppl"] is not None
    assert math.isnan(second["train_ppl"]) and second["val_ppl"] is None
    assert record["val_ppl"] == first["val_ppl"]  # the last evaluation that happened
    assert record["sec_per_epoch"] == second["sec"]  # epoch 1 is warm-up


# --- precision and sampling -----------------------------------------------------------------------------


def _cpu_bf16_supported() -> bool:
    try:
        x = torch.ones(2, 2, dtype=torch.bfloat16)
        return bool(torch.isfinite((x @ x).float()).all())
    except RuntimeError:
        return False


@pytest.mark.skipif(not _cpu_bf16_supported(), reason="this CPU build of torch has no bfloat16 arithmetic")
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bf16_trains_and_is_recorded(book, corpus, cell):
    cfg = tiny(book, cell=cell, layers=1, epochs=2)
    fp32 = run_cell(cfg, corpus=corpus)
    bf16 = run_cell(cfg.model_copy(update={"precision": "bf16"}), corpus=corpus)
    assert bf16["status"] == "ok" and bf16["precision"] == "bf16"
    assert all(math.isfinite(value) for row in curves(bf16) for value in row if value is not None)
    assert curves(bf16) != curves(fp32)  # the lower precision is actually in use
    assert bf16["train_ppl"] == pytest.approx(fp32["train_ppl"], rel=0.1)


def test_random_sampling_trains_differently_from_sequential(book, corpus):
    sequential = run_cell(tiny(book, cell="gru", layers=1, epochs=2), corpus=corpus)
    random = run_cell(tiny(book, cell="gru", layers=1, epochs=2, sampling="random"), corpus=corpus)
    assert random["status"] == "ok"
    assert curves(random) != curves(sequential)


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_trainer_carries_state_only_for_sequential_batches(corpus, sampling):
    # With a vanishing learning rate the weights stay put, so the epoch's loss can be recomputed.
    torch.manual_seed(0)
    # Short windows: most predictions then depend on whether the state came from the previous batch.
    cfg = CellConfig(cell="lstm", layers=1, hidden=16, lr=1e-30, batch_size=8, num_steps=5, sampling=sampling)
    model = CharRNN(len(corpus.vocab), "lstm", 1, False, 16)
    batcher = sequential_batches if sampling == "sequential" else random_batches
    xs, ys = batcher(corpus.train, 8, 5, torch.Generator().manual_seed(0))
    with torch.no_grad():  # larger weights: a longer memory, so that the carried state matters
        for p in model.parameters():
            p.mul_(4)
    weights = [p.detach().clone() for p in model.parameters()]
    total, tokens = Trainer(model, cfg, torch.device("cpu")).epoch(xs, ys)
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters()))
    assert tokens == xs.numel()

    def loss_sum(carry: bool) -> float:
        state, result = None, 0.0
        with torch.no_grad():
            for x, y in zip(xs, ys):
                logits, state = model(x, state if carry else None)
                result += float(F.cross_entropy(logits, y.T.reshape(-1), reduction="sum"))
        return result

    carried, reset = loss_sum(carry=True), loss_sum(carry=False)
    assert abs(carried - reset) > 1e-2 * reset  # the two ways are distinguishable
    expected = carried if sampling == "sequential" else reset
    assert float(total) == pytest.approx(expected, rel=1e-5)


# --- the command ----------------------------------------------------------------------------------------


def _harness(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


TINY_FLAGS = ("--hidden", "16", "--epochs", "2", "--max-tokens", "2000", "--val-tokens", "400",
              "--eval-every", "1", "--batch-size", "8", "--threads", "1", "--sample-chars", "10")


def test_cell_command_prints_one_json_object_of_result_columns(book):
    done = _harness("cell", "--cell", "gru", "--layers", "1", "--direction", "bi", "--seed", "3",
                    "--corpus", str(book), *TINY_FLAGS, "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(RESULT_COLUMNS) <= set(result)
    assert result["status"] == "ok" and result["reason"] == ""
    assert (result["cell"], result["layers"], result["direction"], result["device"], result["seed"]) == (
        "gru", 1, "bi", "cpu", 3)
    assert result["hidden"] == 16 and result["epochs"] == 2
    assert 1.0 < result["train_ppl"] < 25 and 1.0 < result["causal_ppl"]
    assert result["sample"].startswith("time traveller") and len(result["sample"]) == 24
    assert "Traceback" not in done.stderr


def test_cell_command_rejects_a_bad_value_in_one_line(book):
    done = _harness("cell", "--corpus", str(book), *TINY_FLAGS, "--direction", "sideways", "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: command line: --direction = 'sideways'")


@pytest.mark.parametrize("flags, message", [
    (("--layers", "0"), "--layers = '0'"),
    (("--hidden", "many"), "--hidden"),
    (("--cell", "transformer"), "--cell"),
    (("--max-tokens", "3000"), "exceeds"),  # 3000 + 400 held out > 3276 tokens
    (("--max-tokens", "300"), "command line: max_tokens = 300 is too small"),  # one batch is 8 x 35 + 36
    (("--corpus", "/no/such/book.txt"), "neither a known corpus"),
])
def test_cell_command_reports_bad_input_without_a_traceback(book, flags, message, capsys):
    code = cli.main(["cell", "--corpus", str(book), *TINY_FLAGS, *flags, "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], captured.err


def test_cell_command_summary_and_result_file(book, tmp_path, capsys):
    result_file = tmp_path / "out" / "cell.json"
    code = cli.main(["cell", "--cell", "rnn", "--layers", "1", "--corpus", str(book), *TINY_FLAGS,
                     "--result-file", str(result_file)])
    captured = capsys.readouterr()
    assert code == 0
    assert "train_ppl" in captured.out and "sample[time traveller]: time traveller" in captured.out
    saved = json.loads(result_file.read_text())
    assert saved["status"] == "ok" and len(saved["epoch_log"]) == 2
    assert set(RESULT_COLUMNS) <= set(saved)


def test_cell_flags_show_their_choices_and_booleans_are_switches():
    from harness.cli import build_parser
    from harness.commands.cell import config_from_args

    parser = build_parser()
    help_text = next(a for a in parser._actions if a.dest == "command").choices["cell"].format_help()
    assert "--direction {uni,bi}" in help_text and "--cell {rnn,gru,lstm}|PACKAGE.MODULE:FACTORY" in help_text
    assert "--strip-boilerplate, --no-strip-boilerplate" in help_text
    args = parser.parse_args(["cell", "--no-strip-boilerplate", "--cuda-graphs", "--direction", "bi"])
    config = config_from_args(args)
    assert config.strip_boilerplate is False and config.cuda_graphs is True and config.direction == "bi"
    assert config_from_args(parser.parse_args(["cell"])).strip_boilerplate is True
