"""Suite parsing, validation and grid expansion on literal suites."""

import subprocess
import sys
import textwrap

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.spec.config import CellConfig
from harness.spec.suite import expand, filter_cells, load_suite, parse_suite

from conftest import REPO


def suite_of(text: str, tmp_path, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_matrix_product_with_exclude_and_include(tmp_path):
    path = suite_of("""
        name: t
        model: {hidden: 8}
        matrix:
          cell: [rnn, lstm]
          layers: [1, 2]
          direction: [uni, bi]
        exclude:
          - {cell: rnn, direction: bi}
        include:
          - {cell: gru, layers: 3, direction: bi}
          - {cell: lstm, layers: 1, direction: uni}
    """, tmp_path)
    cells = expand(load_suite(path))
    ids = [c.cell_id for c in cells]
    # 2*2*2 = 8, minus rnn x bi (2 cells), plus one new gru cell; the lstm include already exists.
    assert len(ids) == 7
    assert "rnn-l1-bi-cpu-s0" not in ids and "rnn-l2-bi-cpu-s0" not in ids
    assert "gru-l3-bi-cpu-s0" in ids
    assert ids.count("lstm-l1-uni-cpu-s0") == 1
    assert all(c.config.hidden == 8 for c in cells)


def test_an_include_entry_with_lists_adds_every_combination_of_them(tmp_path):
    path = suite_of("""
        name: t
        model: {hidden: 8}
        matrix: {cell: [gru], layers: [1, 2]}
        include:
          - {optimizer: sgd, cell: [gru, lstm], layers: [1, 4], seed: [0, 1], betas: [0.9, 0.999]}
          - {optimizer: adam, cell: gru, betas: [[0.9, 0.99], [0.8, 0.9]]}
    """, tmp_path)
    cells = expand(load_suite(path))
    sgd = [c for c in cells if c.config.optimizer == "sgd" and c.cell_id not in
           ("gru-l1-uni-cpu-s0-optimizersgd-betas0.9+0.999", "gru-l2-uni-cpu-s0-optimizersgd-betas0.9+0.999")]
    # 2 cells x 2 depths x 2 seeds, one of which (gru, 1 layer, seed 0) the matrix already has.
    assert len(sgd) == 7 and {(c.config.cell, c.config.layers, c.config.seed) for c in sgd} == {
        (cell, n, seed) for cell in ("gru", "lstm") for n in (1, 4) for seed in (0, 1)} - {("gru", 1, 0)}
    assert all(c.config.betas == (0.9, 0.999) for c in sgd)  # a list of numbers is betas' value
    adam = [c.config.betas for c in cells if c.config.optimizer == "adam"]
    assert adam == [(0.9, 0.99), (0.8, 0.9)]  # a list of lists: its alternatives
    assert len(cells) == 2 + 7 + 2


def test_defaults_from_sections_and_extra_axes_in_ids(tmp_path):
    path = suite_of("""
        name: t
        train: {epochs: 7, precision: fp32}
        eval: {every: 3}
        matrix:
          precision: [fp32, bf16]
          seed: [0, 1]
    """, tmp_path)
    cells = expand(load_suite(path))
    assert {c.cell_id for c in cells} == {
        "lstm-l2-uni-cpu-s0-precisionfp32", "lstm-l2-uni-cpu-s0-precisionbf16",
        "lstm-l2-uni-cpu-s1-precisionfp32", "lstm-l2-uni-cpu-s1-precisionbf16"}
    assert all(c.config.epochs == 7 and c.config.eval_every == 3 for c in cells)
    assert cells[0].axes["precision"] == "fp32"


def test_set_overrides_default_and_axis(tmp_path):
    path = suite_of("""
        name: t
        train: {epochs: 500}
        matrix: {layers: [1, 2, 3]}
    """, tmp_path)
    suite = load_suite(path, ["train.epochs=20", "model.layers=4"])
    cells = expand(suite)
    assert [(c.config.epochs, c.config.layers) for c in cells] == [(20, 4)]


def test_only_filters_with_several_values(tmp_path):
    path = suite_of("""
        name: t
        matrix: {cell: [rnn, gru, lstm], layers: [1, 2, 3]}
    """, tmp_path)
    cells = filter_cells(expand(load_suite(path)), ["cell=lstm", "layers=1,2"])
    assert [c.cell_id for c in cells] == ["lstm-l1-uni-cpu-s0", "lstm-l2-uni-cpu-s0"]
    with pytest.raises(HarnessError, match="no cell has layers = 9"):
        filter_cells(expand(load_suite(path)), ["layers=9"])


def test_only_filters_that_exclude_each_other_are_an_error(tmp_path):
    path = suite_of("""
        name: t
        matrix: {cell: [rnn, lstm], layers: [1, 2]}
        exclude: [{cell: lstm, layers: 2}]
    """, tmp_path)
    with pytest.raises(HarnessError, match="no cell matches all --only filters"):
        filter_cells(expand(load_suite(path)), ["cell=lstm", "layers=2"])


def test_cell_ids_that_would_collide_are_an_error(tmp_path):
    path = suite_of("""
        name: t
        matrix: {corpus: [/a/b.txt, /ab.txt]}
    """, tmp_path)
    with pytest.raises(HarnessError, match="both get the id"):
        load_suite(path)


def test_config_hash_changes_with_the_suite(tmp_path):
    a = load_suite(suite_of("name: t\nmatrix: {layers: [1, 2]}\n", tmp_path, "a.yaml"))
    b = load_suite(suite_of("name: t\nmatrix: {layers: [1, 2]}\n", tmp_path, "b.yaml"))
    c = load_suite(suite_of("name: t\nmatrix: {layers: [1, 3]}\n", tmp_path, "c.yaml"))
    assert a.config_hash() == b.config_hash() != c.config_hash()


@pytest.mark.parametrize("name", ["full", "full-timing", "seed", "quick", "smoke", "regression"])
def test_shipped_suites_are_valid(name):
    path = REPO / "suites" / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"{path.name} not shipped")
    assert expand(load_suite(path))


def test_full_suite_is_the_lessons_grid():
    cells = expand(load_suite(REPO / "suites" / "full.yaml"))
    assert len(cells) == 3 * 4 * 2 * 2 * 3
    assert {c.config.epochs for c in cells} == {500}


def test_timing_pass_has_the_full_runs_cpu_cells():
    full = {c.cell_id for c in expand(load_suite(REPO / "suites" / "full.yaml")) if c.config.device == "cpu"}
    timing = expand(load_suite(REPO / "suites" / "full-timing.yaml"))
    assert {c.cell_id for c in timing} == full
    # Round-robin: every configuration's first seed before any second seed.
    assert [c.config.seed for c in timing] == sorted(c.config.seed for c in timing)
    assert {(c.config.hidden, c.config.batch_size, c.config.num_steps, c.config.threads) for c in timing} == {
        (256, 32, 35, 2)}


MALFORMED = [
    # (suite text, fragment the one-line message must contain)
    ("name: t\nmatrx: {layers: [1]}\n", "unknown top-level key 'matrx' (did you mean 'matrix'?)"),
    ("name: t\nmodel: {hiden: 8}\n", "unknown key model.hiden (did you mean 'hidden'?)"),
    ("name: t\nmodel: {epochs: 8}\n", "unknown key model.epochs (it belongs in 'train')"),
    ("name: t\nmatrix: {layer: [1, 2]}\n", "unknown key 'layer' (did you mean 'layers'?)"),
    ("name: t\nmatrix: {layers: [1, 9]}\n", "model.layers = 9"),
    ("name: t\nmatrix: {cell: [lstm, transformer]}\n", "model.cell = 'transformer'"),
    ("name: t\ntrain: {lr: fast}\n", "train.lr = 'fast'"),
    ("name: t\ntrain: {epochs: 0}\n", "train.epochs = 0"),
    ("name: t\nmatrix: {layers: []}\n", "matrix.layers = []: must be a non-empty list"),
    ("name: t\nmatrix: {layers: 2}\n", "matrix.layers = 2: must be a non-empty list"),
    ("matrix: {layers: [1]}\n", "name = None: required"),
    ("name: t\nmatrix: {layers: [1, 2\n", "invalid YAML"),
    ("- just\n- a list\n", "a suite must be a mapping"),
    ("name: t\nrun: !!python/object/apply:os.system [echo hi]\n", "invalid YAML"),
    ("name: t\nexclude: {cell: rnn}\n", "exclude must be a list"),
    ("name: t\neval: {prefixes: [Time Traveller]}\n", "eval.prefixes"),
    ("name: t\nrun: {device: tpu}\n", "run.device = 'tpu'"),
    ("name: t\nclaims: [{name: [depth_helps]}]\n", "claims[0]: unknown claim ['depth_helps']"),
    ("name: t\nmatrix: {cell: [rnn], model.cell: [gru]}\n", "matrix.model.cell: the axis cell is given twice"),
    ("name: t\nmatrix: {cell: [rnn, lstm]}\nexclude: [{cell: lsmt}]\n", "exclude[0].cell = 'lsmt': not one of"),
    ("name: t\nmatrix: {cell: [rnn, lstm]}\nexclude: [{layers: 2}]\n", "exclude[0]: layers is not a matrix axis"),
    ("name: t\ntrain: {lr: .inf}\n", "train.lr = inf"),
    ("name: t\ntrain: {clip: .nan}\n", "train.clip = nan"),
    ("name: t\nclaims: [{name: {a: 1}}]\n", "claims[0]: unknown claim {'a': 1}"),
    ("name: t\nmatrix: {seed: " + "[" * 3000 + "0" + "]" * 3000 + "}\n", "invalid YAML: nested too deeply"),
]


@pytest.mark.parametrize("text,fragment", MALFORMED)
def test_malformed_suite_is_one_line_exit_2(text, fragment, tmp_path, capsys):
    path = suite_of(text, tmp_path)
    code = main(["run", str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {path}") and fragment in err, err


def test_bad_command_line_values_are_one_line_exit_2(tmp_path, capsys):
    path = suite_of("name: t\nmatrix: {layers: [1, 2]}\n", tmp_path)
    for argv, fragment in [
        (["--set", "train.epoch=3"], "unknown key 'train.epoch'"),
        (["--set", "epochs"], "expected SECTION.KEY=VALUE"),
        (["--only", "layers=5"], "no cell has layers = 5"),
        (["--only", "layers=[1]"], "no cell has layers = [1]"),
        (["--only", "cell={a: 1}"], "no cell has cell = {'a': 1}"),
        (["--only", "layers=true"], "no cell has layers = True"),
        (["--set", "train.epochs=-1"], "train.epochs = -1"),
    ]:
        assert main(["list", str(path), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, err
    assert main(["list", str(tmp_path / "missing.yaml")]) == 2
    assert "suite file not found" in capsys.readouterr().err


def test_a_boolean_is_not_a_number_in_a_suite_or_a_set(tmp_path, capsys):
    for text, argv, fragment in [
        ("name: t\nmodel: {hidden: true}\n", [], "model.hidden = True: a boolean is not a number"),
        ("name: t\nmatrix: {lr: [0.5, false]}\n", [], "train.lr = False: a boolean is not a number"),
        ("name: t\ninclude: [{threads: true}]\n", [], "run.threads = True: a boolean is not a number"),
        ("name: t\n", ["--set", "model.hidden=true"], "model.hidden = True: a boolean is not a number"),
        ("name: t\n", ["--set", "train.clip=no"], "train.clip = False: a boolean is not a number"),
    ]:
        path = suite_of(text, tmp_path)
        assert main(["list", str(path), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {path}") and fragment in err, err
    # Boolean keys still take booleans, and a number's hash is what it always was.
    cells = expand(load_suite(suite_of("name: t\ntrain: {cuda_graphs: false}\nmodel: {hidden: 8}\n", tmp_path)))
    assert cells[0].config.hidden == 8 and cells[0].config.cuda_graphs is False
    assert CellConfig(hidden=8).config_hash() == "1ce8797f3f0d"  # as before booleans were refused


def test_no_traceback_from_a_real_process(tmp_path):
    path = suite_of("name: t\nmatrix: {layers: [0]}\n", tmp_path)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(path)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "results").exists()  # nothing written for bad input


def test_parse_suite_rejects_unknown_claim_names():
    with pytest.raises(HarnessError):
        parse_suite({"name": "t", "claims": ["the moon is cheese"]}, "inline")


def nested_alias_bomb(levels: int = 8) -> str:
    """A few hundred bytes whose matrix.seed names 9**levels values through nested anchors."""
    rows = ["name: bomb", "matrix:", "  seed:", "    - &a0 [0, 1, 2, 3, 4, 5, 6, 7, 8]"]
    rows += [f"    - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(rows) + "\n"


def test_a_yaml_alias_bomb_is_refused_before_it_is_walked(tmp_path, capsys):
    path = suite_of(nested_alias_bomb(), tmp_path)
    assert path.stat().st_size < 1000
    assert main(["list", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than 100,000 values" in err, err[:300]


def test_a_self_referencing_alias_is_refused(tmp_path):
    with pytest.raises(HarnessError, match="more than 100,000 values"):
        load_suite(suite_of("name: t\nmatrix:\n  seed: &a [1, *a]\n", tmp_path))


def test_a_grid_of_too_many_cells_is_refused_before_expansion(tmp_path):
    axis = "[" + ", ".join(map(str, range(1, 101))) + "]"
    path = suite_of(f"name: t\nmatrix: {{seed: {axis}, hidden: {axis}, epochs: {axis}}}\n", tmp_path)
    with pytest.raises(HarnessError, match="1,000,000 cells, more than 10,000"):
        load_suite(path)


def test_values_quoted_in_errors_are_shortened(tmp_path, capsys):
    # Within the value bound, but each repeated value quoted whole would be a 40 kB "line".
    big = "[" + ", ".join(["[" + ", ".join(["12345678"] * 500) + "]"] * 2) + "]"
    path = suite_of(f"name: t\nmatrix: {{prefixes: {big}}}\n", tmp_path)
    assert main(["list", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "values repeat" in err and len(err) < 300, len(err)
    path = suite_of("name: t\n", tmp_path, "ok.yaml")
    assert main(["list", str(path), "--only", "seed=" + "9" * 5000]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no cell has seed" in err and len(err) < 400, len(err)


def test_every_error_message_is_one_bounded_line(capsys, monkeypatch):
    from harness import cli
    from harness.commands import list as list_command

    def fail(args):
        raise HarnessError("x" * 10_000 + "\nsecond line")

    monkeypatch.setattr(list_command, "main", fail)
    assert cli.main(["list", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) <= cli.MAX_MESSAGE + len("error: \n"), len(err)
