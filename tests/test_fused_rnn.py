"""harness.cell.fused_rnn against nn.GRU / nn.RNN: the same parameters, outputs, final states, losses, gradients
(of every parameter, the input and the initial state) and weights after training steps, at float32
tolerance; and one-line errors when the extension cannot be built."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from harness.cell import fused_rnn
from harness.errors import HarnessError
from harness.cell.fused_rnn import FUSED_CLASSES, FusedGRU, FusedRNN, load_extension

from conftest import REPO

TORCH_CLASSES = {"gru": nn.GRU, "rnn": nn.RNN}
CELLS = sorted(FUSED_CLASSES)
# float32: the two implementations round differently (their own exp/tanh, other summation orders). At the
# small sizes what remains is a few 1e-7 (absolute, on values of order 1), with margin here. At the recipe
# size a weight gradient sums 1,120 products per element, and its rounding grows with the size of the
# gradient's largest elements, not with each element's own: there the absolute tolerance is relative to the
# tensor's largest element, and the error is also measured against float64.
ATOL, RTOL = 1e-5, 1e-4
# Against float64, torch's own float32 error depends on the machine's matrix-product kernels: on an Intel Xeon
# with AVX-512 it was a third of the fused one's in a few tensors (both 2-8 x 1e-7 of the tensor's largest
# element), where on an AMD EPYC with AVX2 the fused error was within twice torch's. So the fused error may also
# reach 16 float32 rounding steps (2e-6) of the largest element: a wrong formula, or a sum in a lower precision
# (bf16: ~4e-3), misses that by orders of magnitude.
ROUNDING = 2e-6


@pytest.fixture(scope="module")
def extension():
    """The compiled extension, built once for the module (cached on disk by torch after the first run).
    Skipped only where this machine has no toolchain at all; a build that fails otherwise fails the tests."""
    from torch.utils import cpp_extension

    compiler = (shlex.split(os.environ.get("CXX", "c++")) or ["c++"])[0]
    if shutil.which(compiler) is None or not cpp_extension.is_ninja_available():
        pytest.skip("no C++ compiler or no ninja: the fused extension cannot be built here")
    return load_extension()


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: these sizes gain little from a second, and OpenMP's barriers lose seconds per step when
    the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_pair(cell, input_size, hidden, layers, bidirectional, seed=0, bias=True):
    """(nn.GRU or nn.RNN, its fused twin), initialised from the same seed."""
    torch.manual_seed(seed)
    reference = TORCH_CLASSES[cell](input_size, hidden, layers, bias=bias, bidirectional=bidirectional)
    torch.manual_seed(seed)
    fused = FUSED_CLASSES[cell](input_size, hidden, layers, bias=bias, bidirectional=bidirectional)
    return reference, fused


def assert_close(actual, expected, what, scaled=False):
    atol = ATOL * max(1.0, float(expected.detach().abs().max())) if scaled else ATOL
    torch.testing.assert_close(actual, expected, atol=atol, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def forward_backward(model, x, h0, out_weight, state_weight):
    """Output, final state, a loss that reads both, and the gradients of the loss with respect to every
    parameter (by name), the input and h0."""
    x = x.clone().requires_grad_(True)
    h0 = h0.clone().requires_grad_(True)
    output, h_n = model(x, h0)
    loss = (output * out_weight).sum() + (h_n * state_weight).sum()
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(loss, [x, h0, *params])
    return output, h_n, loss, {"input": grads[0], "h0": grads[1], **dict(zip(names, grads[2:]))}


def compare(cell, steps, batch, input_size, hidden, layers, bidirectional, scaled=False, bias=True):
    """Fused against torch in float32; with ``scaled``, also both against torch in float64: the fused
    error may be at most twice torch's own float32 error, or a few float32 rounding steps of the tensor's
    largest element (``ROUNDING``), whichever is larger."""
    reference, fused = make_pair(cell, input_size, hidden, layers, bidirectional, bias=bias)
    directions = 2 if bidirectional else 1
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(steps, batch, input_size, generator=generator)
    h0 = torch.randn(layers * directions, batch, hidden, generator=generator) * 0.5
    out_weight = torch.randn(steps, batch, directions * hidden, generator=generator)
    state_weight = torch.randn(layers * directions, batch, hidden, generator=generator)
    expected = forward_backward(reference, x, h0, out_weight, state_weight)
    actual = forward_backward(fused, x, h0, out_weight, state_weight)
    for what, a, e in zip(("output", "h_n", "loss"), actual[:3], expected[:3]):
        assert a.shape == e.shape, what
        assert_close(a, e, what, scaled)
    assert actual[3].keys() == expected[3].keys()
    for name in expected[3]:
        assert_close(actual[3][name], expected[3][name], f"gradient of {name}", scaled)
    if scaled:
        exact = forward_backward(reference.double(), x.double(), h0.double(), out_weight.double(),
                                 state_weight.double())
        pairs = [*zip(("output", "h_n", "loss"), actual[:3], expected[:3], exact[:3]),
                 *((f"gradient of {n}", actual[3][n], expected[3][n], exact[3][n]) for n in exact[3])]
        for what, a, e, x64 in pairs:
            x64 = x64.detach()
            fused_error = float((a.detach().double() - x64).abs().max())
            torch_error = float((e.detach().double() - x64).abs().max())
            bound = max(2 * torch_error, ROUNDING * float(x64.abs().max()))
            assert fused_error <= bound, (what, fused_error, torch_error)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_matches_torch(extension, cell, bidirectional, layers):
    compare(cell, steps=7, batch=3, input_size=5, hidden=8, layers=layers, bidirectional=bidirectional)


@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_at_the_recipe_size(extension, cell):
    compare(cell, steps=35, batch=32, input_size=28, hidden=256, layers=2, bidirectional=True, scaled=True)


def test_one_step_and_one_row(extension):
    for cell in CELLS:
        compare(cell, steps=1, batch=1, input_size=3, hidden=4, layers=2, bidirectional=True)


def test_without_bias(extension):
    for cell in CELLS:
        compare(cell, steps=6, batch=3, input_size=5, hidden=8, layers=2, bidirectional=True, bias=False)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_training_steps_match(extension, cell, bidirectional):
    """Three SGD steps of a CharRNN-like model (one-hot input, linear head, cross-entropy, clipping at 1,
    learning rate 1) with the state carried, detached, from batch to batch."""
    vocab, hidden, layers, steps, batch = 6, 8, 2, 5, 4
    directions = 2 if bidirectional else 1
    reference, fused = make_pair(cell, vocab, hidden, layers, bidirectional)
    torch.manual_seed(2)
    head = nn.Linear(directions * hidden, vocab)
    models = [nn.ModuleDict({"rnn": rnn, "head": nn.Linear(directions * hidden, vocab)}) for rnn in (reference, fused)]
    for model in models:
        model["head"].load_state_dict(head.state_dict())
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randint(vocab, (steps + 1, batch), generator=generator) for _ in range(3)]
    losses = []
    for model in models:
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        state, curve = None, []
        for tokens in batches:
            x = F.one_hot(tokens[:-1], vocab).float()
            output, state = model["rnn"](x, state)
            loss = F.cross_entropy(model["head"](output.reshape(-1, output.shape[-1])), tokens[1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            state = state.detach()
            curve.append(loss.item())
        losses.append(curve)
    assert losses[1] == pytest.approx(losses[0], rel=RTOL, abs=ATOL)
    expected, actual = (dict(model.named_parameters()) for model in models)
    for name in expected:
        assert_close(actual[name].detach(), expected[name].detach(), f"{name} after 3 steps")


@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_and_unbatched(extension, cell):
    reference, fused = make_pair(cell, 5, 8, 2, True)
    x, h0 = torch.randn(6, 5), torch.randn(4, 8)
    with torch.no_grad():
        for args in ((x,), (x, h0), (x[:, None], h0[:, None]), (x[:, None],)):
            for a, e in zip(fused(*args), reference(*args)):
                assert a.shape == e.shape
                assert_close(a, e, f"no_grad forward of shapes {[t.shape for t in args]}")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_same_parameters_as_torch(cell, bidirectional):
    """Same names, shapes, initial values and state_dict keys: a checkpoint moves between the two."""
    reference, fused = make_pair(cell, 5, 8, 3, bidirectional, seed=7)
    assert isinstance(fused, TORCH_CLASSES[cell])
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert list(fused.state_dict()) == list(reference.state_dict())
    for name, value in reference.state_dict().items():
        assert torch.equal(fused.state_dict()[name], value), name
    fused.load_state_dict(reference.state_dict())


@pytest.mark.parametrize("cell", CELLS)
def test_other_dtypes_run_the_parents_forward(cell):
    """float64 is not fused: the result is nn.GRU's / nn.RNN's own, bit for bit (no extension needed)."""
    reference, fused = make_pair(cell, 5, 8, 2, True)
    reference.double()
    fused.double()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    for a, e in zip(fused(x), reference(x)):
        assert torch.equal(a, e)


@pytest.mark.parametrize("cell", CELLS)
def test_autocast_and_cast_weights_run_the_parents_forward(cell):
    """What CharRNN does for bf16: CPU autocast, or the weights cast and passed with functional_call."""
    reference, fused = make_pair(cell, 5, 8, 2, False)
    x = torch.randn(4, 3, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for a, e in zip(fused(x), reference(x)):
            assert torch.equal(a, e)
    expected, actual = (
        torch.func.functional_call(model, {name: p.to(torch.bfloat16) for name, p in model.named_parameters()},
                                   (x.to(torch.bfloat16),))
        for model in (reference, fused))
    for a, e in zip(actual, expected):
        assert a.dtype == torch.bfloat16 and torch.equal(a, e)


def test_unsupported_configurations_raise():
    with pytest.raises(ValueError, match="batch_first"):
        FusedGRU(5, 8, batch_first=True)
    with pytest.raises(ValueError, match="dropout"):
        FusedRNN(5, 8, 2, dropout=0.5)
    with pytest.raises(ValueError, match="tanh"):
        FusedRNN(5, 8, nonlinearity="relu")
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(4, 2, 5), [4, 3])
    with pytest.raises(NotImplementedError, match="packed"):
        FusedGRU(5, 8)(packed)


def test_bad_shapes_raise_the_parents_errors(extension):
    model = FusedGRU(5, 8, 2)
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        model(torch.randn(4, 3, 6))
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        model(torch.randn(4, 3, 5), torch.randn(1, 3, 8))


# ----------------------------------------------------------------------------------------- build errors


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """load_extension() as in a new process, building into an empty directory."""
    monkeypatch.setattr(fused_rnn, "_extension", None)
    monkeypatch.setenv("HARNESS_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    return tmp_path


def assert_one_line(error: HarnessError, *parts: str):
    message = str(error)
    assert "\n" not in message, message
    assert message.startswith("the fused recurrent implementation (impl: fused) could not be built: "), message
    for part in parts:
        assert part in message, message


def test_no_compiler_is_one_line(fresh_build, monkeypatch):
    monkeypatch.setenv("CXX", str(fresh_build / "no-such-c++"))
    with pytest.raises(HarnessError) as error:
        load_extension()
    assert_one_line(error.value, "no C++ compiler found", "no-such-c++", "set CXX")


def test_compiler_error_is_its_first_error_line(fresh_build, monkeypatch):
    """A real build (of a source that fails at once): the message is the compiler's first error."""
    from torch.utils import cpp_extension

    if shutil.which("c++") is None or not cpp_extension.is_ninja_available():
        pytest.skip("no C++ compiler or no ninja")
    monkeypatch.delenv("CXX", raising=False)
    broken = fresh_build / "broken.cpp"
    broken.write_text("int main( {\n")
    monkeypatch.setattr(fused_rnn, "SOURCE", broken)
    with pytest.raises(HarnessError) as error:
        load_extension()
    assert_one_line(error.value, "broken.cpp:1", "error")


COMPILE_LOG = """Error building extension 'harness_fused_rnn_x': [1/2] c++ -MMD -MF fused_rnn.o.d -O3 -c fused_rnn.cpp
FAILED: fused_rnn.o
c++ -MMD -MF fused_rnn.o.d -O3 -c fused_rnn.cpp -o fused_rnn.o
In file included from fused_rnn.cpp:3:
fused_rnn.cpp:40:5: error: 'foo' was not declared in this scope
fused_rnn.cpp:41:5: error: expected ';'
ninja: build stopped: subcommand failed.
"""
LINK_LOG = """Error building extension 'harness_fused_rnn_x': [1/2] c++ -c fused_rnn.cpp -o fused_rnn.o
[2/2] c++ fused_rnn.o -shared -lc10 -o harness_fused_rnn_x.so
FAILED: harness_fused_rnn_x.so
c++ fused_rnn.o -shared -lc10 -o harness_fused_rnn_x.so
/usr/bin/ld: cannot find -lc10: No such file or directory
collect2: error: ld returned 1 exit status
ninja: build stopped: subcommand failed.
"""


@pytest.mark.parametrize("log, line", [
    (COMPILE_LOG, "fused_rnn.cpp:40:5: error: 'foo' was not declared in this scope"),
    (LINK_LOG, "/usr/bin/ld: cannot find -lc10: No such file or directory"),
    ("ImportError: /tmp/x/harness_fused_rnn_x.so: undefined symbol: _ZN3c10foo", "undefined symbol: _ZN3c10foo"),
], ids=["compiler", "linker", "loader"])
def test_build_log_is_reduced_to_one_line(fresh_build, monkeypatch, log, line):
    from torch.utils import cpp_extension

    def fail(*args, **kwargs):
        raise RuntimeError(log)

    monkeypatch.setattr(cpp_extension, "load", fail)
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    monkeypatch.setenv("CXX", shutil.which("sh") or "/bin/sh")  # any program on PATH passes the first check
    with pytest.raises(HarnessError) as error:
        load_extension()
    assert_one_line(error.value, line)


# --- as a cell's implementation (model.impl: fused) ------------------------------------------------------


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_a_cell_trains_the_same_with_either_implementation(extension, cell, tmp_path):
    from harness.spec.config import CellConfig
    from harness.cell.train import run_cell

    book = tmp_path / "book.txt"
    book.write_text("the time traveller for so it will be convenient to speak of him was expounding " * 40)
    values = dict(corpus=str(book), max_tokens=2000, val_tokens=300, cell=cell, layers=2, direction="bi", hidden=16,
                  epochs=3, batch_size=8, num_steps=35, eval_every=1, sample_chars=10, threads=1)
    torch_run = run_cell(CellConfig(**values))
    fused_run = run_cell(CellConfig(**values, impl="fused"))
    for a, b in zip(torch_run["epoch_log"], fused_run["epoch_log"]):
        for key in ("train_ppl", "val_ppl", "causal_ppl"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key
    assert fused_run["sample"] == torch_run["sample"] and fused_run["params"] == torch_run["params"]


def test_a_run_that_cannot_build_it_stops_before_training(monkeypatch, tmp_path, capsys):
    from harness import cli

    def cannot_build():
        raise HarnessError("the fused recurrent implementation (impl: fused) could not be built: no C++ compiler "
                           "found: 'c++' is not on PATH (install one or set CXX)")

    monkeypatch.setattr(fused_rnn, "load_extension", cannot_build)
    suite = tmp_path / "fused.yaml"
    suite.write_text("name: fused\ndata: {max_tokens: 1500, val_tokens: 200}\nmodel: {hidden: 8, impl: fused}\n"
                     "train: {epochs: 1}\nrun: {threads: 1}\nmatrix: {cell: [gru, lstm]}\n")
    code = cli.main(["run", str(suite), "--out", str(tmp_path / "run"), "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.endswith("(1 cell to train needs it; nothing was trained)")
    assert "could not be built: no C++ compiler found" in err
    assert not (tmp_path / "run" / "cells").exists() or not any((tmp_path / "run" / "cells").iterdir())


# --- the cache on disk -----------------------------------------------------------------------------------


def load_in_a_new_process(extensions_dir):
    """load_extension() in a fresh interpreter (a damaged library can kill the process that loads it)."""
    code = "from harness.cell.fused_rnn import load_extension; print(load_extension().__file__)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HARNESS_EXTENSIONS_DIR": str(extensions_dir)})


def test_a_damaged_cached_library_is_built_again(extension, tmp_path):
    """The library cut short after it was built (a full disk, `truncate -s 1000`): ninja sees it newer than
    its sources and would hand it to the loader, which dies of a bus error. It is built again instead; a
    verified one is loaded as it is."""
    built = Path(extension.__file__)
    folder = tmp_path / "extensions" / built.parent.name
    shutil.copytree(built.parent, folder)  # copy2: the times are kept, so ninja finds it up to date
    library = folder / built.name
    with open(library, "r+b") as f:
        f.truncate(1000)
    proc = load_in_a_new_process(tmp_path / "extensions")
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == str(library) and library.stat().st_size > 1000
    record = json.loads((folder / fused_rnn.BUILD_RECORD).read_text())
    assert record == {"library": built.name, "sha256": hashlib.sha256(library.read_bytes()).hexdigest()}

    rebuilt = library.stat().st_mtime_ns
    proc = load_in_a_new_process(tmp_path / "extensions")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert library.stat().st_mtime_ns == rebuilt  # verified: loaded, not built again


def test_a_library_without_its_record_is_not_loaded(tmp_path, monkeypatch):
    """No record, or another digest: the folder is emptied before torch sees it (no compiler needed)."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("HARNESS_EXTENSIONS_DIR", str(tmp_path))
    name = fused_rnn._extension_name(fused_rnn.SOURCE)
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"{name}.so").write_bytes(b"\x7fELF cut short")
    (folder / "fused_rnn.o").write_bytes(b"")
    seen = []

    def build(**kwargs):  # what torch finds, then a library built
        seen.append(sorted(os.listdir(folder)))
        (folder / f"{name}.so").write_bytes(b"\x7fELF built")
        return types.SimpleNamespace(__file__=str(folder / f"{name}.so"))

    monkeypatch.setattr(cpp_extension, "load", build)
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    monkeypatch.setenv("CXX", shutil.which("sh") or "/bin/sh")
    monkeypatch.setattr(fused_rnn, "_extension", None)
    load_extension()
    assert seen == [[]]
    record = json.loads((folder / fused_rnn.BUILD_RECORD).read_text())
    assert record["sha256"] == hashlib.sha256(b"\x7fELF built").hexdigest()
    monkeypatch.setattr(fused_rnn, "_extension", None)
    load_extension()  # verified: torch sees the folder as it was
    assert seen[1] == sorted([f"{name}.so", fused_rnn.BUILD_RECORD])
    (folder / f"{name}.so").write_bytes(b"\x7fELF changed")
    monkeypatch.setattr(fused_rnn, "_extension", None)
    load_extension()
    assert seen[2] == []


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_bad_extensions_folder_is_one_line(tmp_path, where):
    """HARNESS_EXTENSIONS_DIR naming a file (`/etc/hostname`), or a folder under one: the run stops before
    training with one line naming the variable and the folder."""
    plain = tmp_path / "hostname"
    plain.write_text("host\n")
    folder = plain if where == "a file" else plain / "extensions"
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(REPO / "suites" / "smoke.yaml"),
                           "--only", "cell=gru", "--only", "direction=uni", "--set", "model.impl=fused",
                           "--out", str(out), "--no-report"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HARNESS_EXTENSIONS_DIR": str(folder)}, cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    assert f"HARNESS_EXTENSIONS_DIR={folder}: cannot write {folder}/" in errors[0], errors[0]
    assert "Not a directory" in errors[0] and errors[0].endswith("nothing was trained)"), errors[0]
    assert not (out / "cells").exists() or not any((out / "cells").iterdir())
