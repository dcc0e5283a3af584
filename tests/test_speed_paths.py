"""The fast training paths compute what the plain recipe computes.

Tolerance: the optimised step and a straightforward reference step (F.one_hot, nn.CrossEntropyLoss, the
seed's ``if norm > theta: g *= theta / norm``, plain torch.optim.SGD) agree in loss, clipped gradients and
updated weights to rtol 1e-5 / atol 1e-7 in float32: the only differences are the order in which the
global norm is summed and fused against unfused kernels, i.e. rounding.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from harness.host.calibration import calibrate, matmul_rate
from harness.results.calibration import flops_utilization
from harness.cli import main as cli_main
from harness.spec.config import CellConfig
from harness.cell.batches import BATCHERS, load_corpus
from harness.cell.model import CharRNN
from harness.cell.profiling import PHASES, phase_shares
from harness.cell.precision import cpu_has_native_bf16
from harness.cell.train import Trainer, clip_global_norm_, run_cell

RTOL, ATOL = 1e-5, 1e-7
VOCAB, HIDDEN, BATCH, STEPS = 11, 8, 4, 6
TINY = dict(hidden=8, max_tokens=1500, val_tokens=300, eval_every=0, sample_chars=5, threads=1,
            prefixes=("time",))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


def reference_step(model: CharRNN, optimizer, tokens, targets, state, theta: float):
    """The seed's step, written out plainly."""
    x = F.one_hot(tokens.T, VOCAB).float()
    y, state = model.rnn(x, state)
    logits = model.head(y.reshape(-1, y.shape[-1]))
    loss = nn.CrossEntropyLoss()(logits, targets.T.reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))
    if norm > theta:
        for p in params:
            p.grad[:] *= theta / norm
    optimizer.step()
    return loss.detach(), state, float(norm)


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


@pytest.mark.parametrize("theta", [0.05, 1e3], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("direction", ["uni", "bi"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_optimised_step_matches_reference_step(cell, direction, theta):
    torch.manual_seed(1)
    fast = CharRNN(VOCAB, cell, 2, direction == "bi", HIDDEN)
    slow = copy.deepcopy(fast)
    cfg = CellConfig(cell=cell, direction=direction, hidden=HIDDEN, lr=0.7, clip=theta)
    trainer = Trainer(fast, cfg, torch.device("cpu"))
    optimizer = torch.optim.SGD(slow.parameters(), lr=0.7, foreach=False)
    fast_state = slow_state = None
    for _ in range(2):  # the second step carries the state, as sequential sampling does
        tokens = torch.randint(0, VOCAB, (BATCH, STEPS))
        targets = torch.randint(0, VOCAB, (BATCH, STEPS))
        fast_loss, fast_state = trainer.step(fast.one_hot(tokens), targets.T.reshape(-1), fast_state)
        slow_loss, slow_state, norm = reference_step(slow, optimizer, tokens, targets, slow_state, theta)
        fast_state, slow_state = detach(fast_state), detach(slow_state)
        assert (norm > theta) == (theta < 1), "the case must exercise (or skip) clipping as named"
        torch.testing.assert_close(fast_loss, slow_loss, rtol=RTOL, atol=ATOL)
        for (name, p), q in zip(fast.named_parameters(), slow.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=RTOL, atol=ATOL, msg=f"gradient of {name}")
            torch.testing.assert_close(p, q, rtol=RTOL, atol=ATOL, msg=f"updated {name}")


def test_clipping_follows_the_seed_rule_on_known_numbers():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    norm = clip_global_norm_(grads, 1.0)
    assert float(norm) == 5.0
    torch.testing.assert_close(grads[0], torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(grads[1], torch.tensor([[0.8]]))
    untouched = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    clip_global_norm_(untouched, 5.0)  # norm == theta: the seed clips only when norm > theta
    assert untouched[0].tolist() == [3.0, 0.0] and untouched[1].tolist() == [[4.0]]


@pytest.fixture
def small_corpus():
    return load_corpus(max_tokens=TINY["max_tokens"], val_tokens=TINY["val_tokens"])


@pytest.mark.parametrize("sampling", ["sequential", "random"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_static_buffer_step_equals_the_eager_epoch(small_corpus, cell, sampling):
    """The CUDA-graph path runs the same step on fixed buffers (a fresh state as zeros); on a CPU it runs
    eagerly and must give bit-identical losses and weights."""
    results = []
    for static in (False, True):
        torch.manual_seed(0)
        model = CharRNN(len(small_corpus.vocab), cell, 2, True, 8)
        trainer = Trainer(model, CellConfig(cell=cell, hidden=8, sampling=sampling), torch.device("cpu"))
        trainer.use_static_step = static
        generator = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(2):
            xs, ys = BATCHERS[sampling](small_corpus.train[:500], 8, 10, generator)
            losses.append(float(trainer.epoch(xs, ys)[0]))
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    assert results[1][0] == results[0][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_cuda_graphs_flag_is_ignored_on_cpu_with_a_note(small_corpus):
    plain = run_cell(CellConfig(epochs=2, **TINY), corpus=small_corpus)
    flagged = run_cell(CellConfig(epochs=2, cuda_graphs=True, **TINY), corpus=small_corpus)
    assert flagged["status"] == "ok"
    assert any("cuda_graphs ignored" in note for note in flagged["notes"])
    assert plain["notes"] == []
    assert flagged["train_ppl"] == plain["train_ppl"]
    assert Trainer(CharRNN(5, hidden=4), CellConfig(cuda_graphs=True), torch.device("cpu")).use_cuda_graphs is False


def _bf16_available() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.mm(torch.ones(2, 2), torch.ones(2, 2))
        return True
    except RuntimeError:
        return False


class MatmulDtypes(TorchDispatchMode):
    """Records the floating dtypes entering every matrix-product or recurrent-layer kernel."""

    KERNELS = ("aten.mm", "aten.addmm", "aten.bmm", "aten.mkldnn_rnn_layer", "aten._thnn_fused", "aten._cudnn_rnn")

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, set]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name.startswith(self.KERNELS):
            flat = [a for a in args if isinstance(a, torch.Tensor)]
            flat += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
            self.seen.append((name, {t.dtype for t in flat if t.is_floating_point()}))
        return func(*args, **(kwargs or {}))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.skipif(not _bf16_available(), reason="bf16 autocast is not supported on this CPU")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_bf16_runs_the_recurrent_layers_in_bf16_with_float32_master_weights(cell, device):
    """CPU autocast leaves GRU's state in float32 and fails for LSTM without native bf16; CUDA autocast
    runs cuDNN in float16. The model runs every recurrent kernel in bf16 on both."""
    torch.manual_seed(0)
    model = CharRNN(VOCAB, cell, 2, True, HIDDEN).to(device)
    tokens = torch.randint(0, VOCAB, (BATCH, STEPS), device=device)
    targets = torch.randint(0, VOCAB, (BATCH * STEPS,), device=device)
    with torch.no_grad():
        fp32_loss = F.cross_entropy(model(tokens)[0], targets)
    with MatmulDtypes() as recorded:
        with torch.autocast(device, dtype=torch.bfloat16):
            logits, state = model(tokens)
        loss = F.cross_entropy(logits.float(), targets)
        loss.backward()
    kernels = [name for name, _ in recorded.seen]
    assert kernels, "no matrix-product kernel was seen"
    assert all(dtypes == {torch.bfloat16} for _, dtypes in recorded.seen), recorded.seen
    for s in state if isinstance(state, tuple) else (state,):
        assert s.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert abs(float(loss.detach()) - float(fp32_loss)) < 0.05 * float(fp32_loss)


@pytest.mark.skipif(not _bf16_available(), reason="bf16 autocast is not supported on this CPU")
def test_bf16_precision_trains_and_is_recorded(small_corpus):
    record = run_cell(CellConfig(cell="lstm", epochs=2, precision="bf16", **TINY), corpus=small_corpus)
    assert record["status"] == "ok", record["reason"]
    assert record["precision"] == "bf16"
    assert math.isfinite(record["train_ppl"]) and record["train_ppl"] < len(small_corpus.vocab) * 2


def test_matmul_rate_is_positive_and_keeps_its_samples():
    before = torch.get_num_threads()
    rate = matmul_rate("cpu", threads=1, size=96, repeats=3)
    assert set(rate) == {"flops_per_sec", "size", "samples_sec", "threads"}
    assert rate["flops_per_sec"] > 0 and rate["size"] == 96 and rate["threads"] == 1
    assert len(rate["samples_sec"]) == 3 and all(s > 0 for s in rate["samples_sec"])
    assert torch.get_num_threads() == before


def test_calibrate_covers_each_device_once():
    result = calibrate(["cpu", "cpu"], threads=1, size=64, repeats=2)
    assert list(result) == ["cpu"]
    assert result["cpu"]["flops_per_sec"] > 0 and result["cpu"]["threads"] == 1


def test_flops_utilization_divides_by_the_devices_rate():
    calibration = {"cpu": {"flops_per_sec": 200.0}, "cuda": {"flops_per_sec": None}}
    assert flops_utilization({"device": "cpu", "flops_per_sec": 50.0}, calibration) == 0.25
    assert flops_utilization({"device": "cuda", "flops_per_sec": 50.0}, calibration) is None
    assert flops_utilization({"device": "cpu", "flops_per_sec": None}, calibration) is None
    assert flops_utilization({"device": "cpu", "flops_per_sec": 50.0}, None) is None


def test_calibrate_measures_each_thread_count_the_cells_use():
    result = calibrate(["cpu"], threads=2, size=64, repeats=2, thread_counts=[1, 2])
    by_threads = result["cpu"]["by_threads"]
    assert list(by_threads) == ["1", "2"] and by_threads["1"]["threads"] == 1
    assert by_threads["2"]["flops_per_sec"] == result["cpu"]["flops_per_sec"]  # the top-level rate, not re-measured
    assert "by_threads" not in calibrate(["cpu"], threads=1, size=64, repeats=1, thread_counts=[1])["cpu"]


def test_flops_utilization_uses_the_rate_of_the_cells_thread_count():
    calibration = {"cpu": {"flops_per_sec": 200.0, "threads": 2,
                           "by_threads": {"1": {"flops_per_sec": 100.0}, "2": {"flops_per_sec": 200.0}}}}
    assert flops_utilization({"device": "cpu", "flops_per_sec": 50.0, "threads": 1}, calibration) == 0.5
    assert flops_utilization({"device": "cpu", "flops_per_sec": 50.0, "threads": 2}, calibration) == 0.25
    # A thread count not calibrated (an older run folder, a record without threads): the top-level rate.
    assert flops_utilization({"device": "cpu", "flops_per_sec": 50.0, "threads": 8}, calibration) == 0.25
    assert flops_utilization({"device": "cpu", "flops_per_sec": 50.0}, calibration) == 0.25


def test_the_runner_calibrates_the_thread_counts_of_its_cpu_cells(monkeypatch, tmp_path):
    import harness.host.calibration
    from harness.grid.runner import calibrate_cells
    from harness.spec.suite import expand, load_suite

    path = tmp_path / "s.yaml"
    path.write_text("name: t\nmatrix: {threads: [2, 1], device: [cpu, cuda]}\n")
    seen = {}
    monkeypatch.setattr(harness.host.calibration, "calibrate",
                        lambda devices, threads, thread_counts=(): seen.update(threads=threads, counts=thread_counts))
    calibrate_cells(expand(load_suite(path)))
    assert seen == {"threads": 2, "counts": [1, 2]}


def test_phase_shares_leave_the_rest_to_other():
    shares = phase_shares({"forward": 0.3, "backward": 0.5, "clip": 0.1}, 1.0)
    assert list(shares) == ["forward", "backward", "clip", "other"]
    assert shares["other"] == pytest.approx(0.1)
    assert set(PHASES) >= {"data", "forward", "backward", "clip", "optimizer"}


def test_profile_command_prints_phases_and_operators(capsys):
    code = cli_main(["profile", "--cell", "gru", "--hidden", "8", "--epochs", "1", "--max-tokens", "1500",
                     "--val-tokens", "300", "--threads", "1", "--warmup-epochs", "0", "--top", "5"])
    out = capsys.readouterr().out
    assert code == 0
    for word in ("forward", "backward", "clip", "optimizer", "data", "other", "aten::"):
        assert word in out, word


def test_profile_command_rejects_bad_flags_in_one_line(capsys):
    assert cli_main(["profile", "--layers", "0", "--epochs", "1"]) == 2
    assert "--layers" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("cell,direction", [("lstm", "uni"), ("lstm", "bi"), ("gru", "uni"), ("rnn", "bi")])
def test_cuda_graph_epochs_match_eager_epochs(cell, direction, precision):
    """The captured step replays what the eager step computes, and the warm-up before capture leaves the
    weights untouched."""
    device = torch.device("cuda")
    tokens = torch.randint(0, VOCAB, (3000,), generator=torch.Generator().manual_seed(0)).to(device)
    results = []
    for graphs in (False, True):
        torch.manual_seed(0)
        model = CharRNN(VOCAB, cell, 2, direction == "bi", 32).to(device)
        cfg = CellConfig(cell=cell, direction=direction, hidden=32, device="cuda", cuda_graphs=graphs,
                         precision=precision)
        trainer = Trainer(model, cfg, device)
        generator = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(3):
            xs, ys = BATCHERS["sequential"](tokens, 16, 20, generator)
            losses.append(float(trainer.epoch(xs, ys)[0]))
        assert (trainer.static_step is not None and trainer.static_step.graph is not None) == graphs
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=RTOL, atol=ATOL)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(b, a, rtol=RTOL, atol=ATOL)


@pytest.mark.skipif(cpu_has_native_bf16() is not True, reason="needs a CPU with native bf16 (AVX512-BF16/AMX)")
@pytest.mark.parametrize("direction", ["uni", "bi"])
def test_explicit_bf16_lstm_is_what_autocast_runs_where_onednn_has_bf16(direction):
    """Where CPU autocast works for nn.LSTM (oneDNN with bf16), the model's explicit bf16 path makes the
    same oneDNN call: same outputs and gradients."""
    torch.manual_seed(0)
    model = CharRNN(VOCAB, "lstm", 2, direction == "bi", HIDDEN)
    x = model.one_hot(torch.randint(0, VOCAB, (BATCH, STEPS)))
    outputs, grads = [], []
    for explicit in (True, False):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, _ = model._recurrent_in(torch.bfloat16, x, None) if explicit else model.rnn(x)
        y.float().square().sum().backward()
        outputs.append(y.detach())
        grads.append([p.grad.clone() for p in model.rnn.parameters()])
    assert torch.equal(outputs[0], outputs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
