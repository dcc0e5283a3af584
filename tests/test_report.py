"""The report on small results folders built from literal numbers (tests/fixtures.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness import cli
from harness.errors import HarnessError
from harness.figures import (FIGURES, cost_against_depth, final_perplexity_figure, learning_curves_figure,
                             pareto_points, slowdown_table)
from harness.claims import corpus_word_set, evaluate_claims
from harness.data import clean_lines, read_corpus_lines
from harness.report import (build_report, claim_specs, configuration_table, corpus_words, default_out_dir,
                            fill_flops_utilization, fmt, fmt_mean_ci, load_run, samples_table, visible_spaces)

from fixtures import make_run_folder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DECLARED = ["depth_helps", {"name": "bidirectional_slow", "threshold": 1.5}, "bidirectional_useless"]
NOT_OK = {"lstm-l2-uni-cpu-s2": ("failed", "RuntimeError: out of memory\nlast line"),
          "rnn-l1-bi-cpu-s0": ("diverged", "training loss became nan in epoch 2")}


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    run_dir = make_run_folder(root, statuses=NOT_OK, claims=DECLARED)
    out = build_report(run_dir, root / "report")
    return run_dir, out


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(f"\n{heading}\n")
    rest = markdown[start + len(heading) + 2:]
    following = re.search(r"\n#{1,3} ", rest)
    return rest[: following.start()] if following else rest


def _table_rows(section: str) -> list[list[str]]:
    """Body rows of the first Markdown table in a section (header and rule left out)."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def _assert_real_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width >= 400 and image.height >= 250


def test_every_figure_exists_and_is_a_real_png(full_report):
    _, out = full_report
    for name in FIGURES:
        _assert_real_png(out / "figures" / f"{name}.png")


def test_markdown_and_html_reference_only_existing_images(full_report):
    _, out = full_report
    markdown = (out / "index.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(linked) == sorted(f"figures/{name}.png" for name in FIGURES)
    for link in linked:
        _assert_real_png(out / link)

    page = (out / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(FIGURES)
    for source in sources:
        if source.startswith("data:image/png;base64,"):
            assert base64.b64decode(source.split(",", 1)[1])[:8] == PNG_MAGIC
        else:
            _assert_real_png(out / source)
    assert "<script" not in page and 'href="http' not in page  # nothing fetched from elsewhere


def test_tables_have_the_expected_rows(full_report):
    run_dir, out = full_report
    markdown = (out / "index.md").read_text()
    # 2 cell types x 2 depths x 2 directions x 2 devices, seeds aggregated.
    configurations = _table_rows(_section(markdown, "## Configurations"))
    assert len(configurations) == 16
    header = [line for line in _section(markdown, "## Configurations").splitlines() if line.startswith("|")][0]
    for column in ("params", "FLOPs/epoch", "train ppl", "causal ppl", "s/epoch", "tokens/s", "FLOP util. (%)",
                   "peak mem (MiB)", "status"):
        assert column in header
    utilization = [c.strip() for c in header.strip("|").split("|")].index("FLOP util. (%)")
    by_key = {tuple(r[:4]): r for r in configurations}
    assert by_key[("lstm", "2", "uni", "cpu")][-1] == "ok 2, failed 1"
    assert by_key[("lstm", "2", "uni", "cuda")][-1] == "skipped 3"
    assert by_key[("lstm", "2", "uni", "cuda")][5] == "-"  # no perplexity for skipped cells
    # lstm, 2 layers: 8,000 parameters x 6 x 10,000 tokens in 0.05 x 2 x (1 + 0.02 k) s, over 1e10 FLOP/s
    assert by_key[("lstm", "2", "uni", "cpu")][utilization].startswith("45.")
    assert by_key[("rnn", "1", "uni", "cpu")][utilization].startswith("11.")
    assert by_key[("lstm", "2", "uni", "cuda")][utilization] == "-"

    claims = _table_rows(_section(markdown, "## Claims"))
    assert [r[0] for r in claims] == ["Depth helps", "Bidirectional is slow (threshold = 1.5)",
                                      "Bidirectional is useless for next-character prediction"]
    assert [r[1] for r in claims] == ["supported", "supported", "supported"]
    # The table stays narrow: the gist in a few words; the deciding numbers are in each claim's section.
    # CPU cells only (CUDA skipped): 2 cell types x 1 depth step; 2 cell types x 2 depths for bi/uni
    assert re.fullmatch(r"causal ppl lower with more layers in 2 of 2 \(-1[2-4]\.\d% per step\)", claims[0][2])
    assert claims[1][2] == "bi/uni s/epoch x1.96; above x1.5 in 4 of 4"
    assert claims[2][2] == "bi/uni causal ppl x2.2; bi no better in 4 of 4"
    assert all(len(r[2]) <= 70 for r in claims)
    depth = _section(markdown, "### Depth helps")
    assert "**Verdict: supported.** held-out causal perplexity at equal epochs: lower with more layers in 2 of 2" in depth
    assert "change per depth step" in depth and "(range " in depth
    assert "x1.96 on average (range x1.96 to x1.96)" in _section(markdown, "### Bidirectional is slow (threshold = 1.5)")

    not_finished = _table_rows(_section(markdown, "## Cells that did not finish"))
    assert len(not_finished) == 2 + 24  # the failed and diverged cells, and every CUDA cell
    assert ["rnn-l1-bi-cpu-s0", "diverged"] == not_finished[[r[0] for r in not_finished].index("rnn-l1-bi-cpu-s0")][:2]

    samples = _table_rows(_section(markdown, "## Generated samples"))
    assert len(samples) == 8 * 2  # one seed of each finished configuration, two prefixes each
    uni = [r for r in samples if "-uni-" in r[0]]
    bi = [r for r in samples if "-bi-" in r[0]]
    assert {r[3] for r in uni} == {"100%"} and {r[3] for r in bi} == {"0%"}
    assert {int(r[4]) for r in bi} == {60}


def test_header_and_footer_carry_provenance(full_report):
    run_dir, out = full_report
    markdown = (out / "index.md").read_text()
    run = json.loads((run_dir / "run.json").read_text())
    assert "| total time     | 3 min 25 s" in markdown
    assert "Fixture CPU" in markdown and "torch 2.13.0+cpu" in markdown and "none (CUDA not available)" in markdown
    assert "| calibration    | cpu 10 GFLOP/s (2048x2048 float32 product, 2 threads); cuda unavailable (CUDA not" \
        in markdown
    command = " ".join(run["command"])
    assert markdown.rstrip().endswith(f"```bash\n{command}\n```")
    assert command in (out / "index.html").read_text()
    assert "The claims are those the suite declares." in markdown
    assert "threshold = 1.5" in markdown and "slower by more than x1.5" in markdown


def test_configuration_table_from_literal_cells():
    cells = pd.DataFrame({
        "cell_id": ["a", "b", "c", "d"], "cell": "gru", "layers": [1, 1, 1, 2], "direction": "uni",
        "device": "cpu", "seed": [0, 1, 2, 0], "status": ["ok", "ok", "failed", "ok"],
        "causal_ppl": [4.0, 6.0, None, 3.0], "params": [100, 100, 100, 200],
    })
    table = configuration_table(cells)
    assert len(table) == 2
    first = table.iloc[0]
    assert first["seeds ok"] == "2/3" and first["status"] == "ok 2, failed 1"
    assert first["causal ppl"].startswith("5 ± ")  # mean 5 with an interval over two seeds
    assert table.iloc[1]["causal ppl"] == "3"  # one seed: the value, no interval


def test_flops_utilization_from_the_calibration_only_for_results_without_the_column():
    cells = pd.DataFrame({"device": ["cpu", "cpu", "cuda"], "flops_per_sec": [2.0e9, 5.0e9, 1.0e12],
                          "hostname": ["here", "elsewhere", "here"]})
    calibration = {"cpu": {"flops_per_sec": 1.0e10, "size": 2048, "samples_sec": [1.7], "threads": 2},
                   "cuda": {"flops_per_sec": None, "size": 2048, "samples_sec": [], "threads": None}}
    filled = fill_flops_utilization(cells, calibration, "here")["flops_utilization"]
    assert filled.iloc[0] == 0.2
    assert math.isnan(filled.iloc[1])  # ran on another host than the calibrated one
    assert math.isnan(filled.iloc[2])  # no CUDA rate
    assert fill_flops_utilization(cells, calibration)["flops_utilization"].iloc[1] == 0.5  # hosts unknown
    recorded = cells.assign(flops_utilization=[0.3, None, None])
    assert fill_flops_utilization(recorded, calibration, "here") is recorded  # blanks are deliberate
    assert fill_flops_utilization(cells, {"cpu": 1.0e10}) is cells  # not a calibration record


def test_flops_utilization_figure_and_column_for_results_without_the_column(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("gru",), devices=("cpu",), seeds=(0, 1))
    cells = pd.read_csv(run_dir / "cells.csv").drop(columns="flops_utilization")
    cells.to_csv(run_dir / "cells.csv", index=False)
    out = build_report(run_dir, tmp_path / "out")
    _assert_real_png(out / "figures" / "flops_utilization.png")
    section = _section((out / "index.md").read_text(), "## Configurations")
    header_line = next(line for line in section.splitlines() if line.startswith("|"))
    header = [c.strip() for c in header_line.strip("|").split("|")]
    values = [r[header.index("FLOP util. (%)")] for r in _table_rows(section)]
    # gru: 3,000 parameters per layer and direction, 6 x 10,000 tokens per parameter and epoch, over 1e10 FLOP/s
    uni = (3000 * 60_000 / (0.05 * 1.06) + 3000 * 60_000 / (0.05 * 1.04)) / 2 / 1e10 * 100
    bi = (6000 * 60_000 / (0.1 * 1.04) + 6000 * 60_000 / (0.1 * 1.02)) / 2 / 1e10 * 100
    assert [float(v.split(" ± ")[0]) for v in values] == pytest.approx([bi, uni, bi, uni], abs=0.05)


def test_partial_run_single_seed_single_depth_no_epochs_no_corpus(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("lstm",), layers=(2,), seeds=(0,), devices=("cpu",),
                              with_epochs_csv=False, corpus=str(tmp_path / "missing.txt"),
                              statuses={"lstm-l2-bi-cpu-s0": ("failed", "crash")})
    out = build_report(run_dir, tmp_path / "out")
    markdown = (out / "index.md").read_text()
    claims = _table_rows(_section(markdown, "## Claims"))
    assert [r[1] for r in claims] == ["inconclusive"] * 3
    assert "only one depth" in claims[0][2] and "cells missing" in claims[1][2]
    assert "epochs.csv is missing" in markdown
    assert "Share of generated words found in the corpus: unavailable" in markdown
    assert len(_table_rows(_section(markdown, "## Configurations"))) == 2
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        _assert_real_png(out / link)
    assert not (out / "figures" / "learning_curves.png").exists()
    assert "### Learning curves\n\nNo data for this figure" in markdown


def test_declared_claims_are_the_ones_evaluated(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("gru",), devices=("cpu",),
                              claims=[{"name": "bidirectional_slow", "threshold": 5.0}])
    data = load_run(run_dir)
    specs, origin = claim_specs(data.run, "run.json")
    (result,) = evaluate_claims(data.cells, data.epochs, data.samples, specs)
    assert origin.startswith("The claims are those") and result.name == "bidirectional_slow"
    assert result.verdict == "not supported"  # twice as slow, but not five times
    assert [s.name for s in claim_specs({}, "run.json")[0]] == ["depth_helps", "bidirectional_slow",
                                                                "bidirectional_useless"]


def test_cells_only_in_json_records_are_read(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("gru",), layers=(1,), devices=("cpu",), seeds=(0, 1))
    cells = pd.read_csv(run_dir / "cells.csv")
    cells[cells["cell_id"] != "gru-l1-bi-cpu-s1"].to_csv(run_dir / "cells.csv", index=False)
    data = load_run(run_dir)
    assert len(data.cells) == 4 and "gru-l1-bi-cpu-s1" in set(data.cells["cell_id"])
    assert any("cells/*.json only" in note for note in data.notes)
    assert not samples_table(data.samples, data.cells, None).empty


def test_default_out_dir_is_named_after_the_run(tmp_path):
    assert default_out_dir(tmp_path / "quick-20250101-000000/") == Path("report/quick-20250101-000000")


def test_cli_exit_codes(tmp_path, capsys):
    run_dir = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), directions=("uni",), devices=("cpu",),
                              seeds=(0,))
    assert cli.main(["report", str(run_dir), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "index.md").is_file()
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "elsewhere" / "index.md"),
                                                    str(tmp_path / "elsewhere" / "index.html")]

    empty = tmp_path / "empty"
    empty.mkdir()
    broken = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), directions=("uni",), devices=("cpu",),
                             seeds=(0,), name="broken")
    (broken / "run.json").write_text("{not json")
    for bad in (tmp_path / "missing", empty, broken):
        assert cli.main(["report", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_bad_claims_in_run_json_are_bad_input(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), devices=("cpu",), seeds=(0,),
                              claims=["depth_helps", "wider_helps"])
    with pytest.raises(HarnessError, match=r"claims\[1\]: unknown claim 'wider_helps'"):
        build_report(run_dir, tmp_path / "out")


def test_number_formatting_and_visible_spaces():
    assert fmt(2850.4) == "2850" and fmt(28504.2) == "28,504" and fmt(0.12345) == "0.1235" and fmt(12_419_072) == "12,419,072"
    assert fmt(float("nan")) == "-" and fmt(None) == "-" and fmt([2]) == "2" and fmt(float("inf")) == "inf"
    assert fmt_mean_ci([2800.0, 2900.0], 3) == "2,850 ± 635"  # t(0.975, 1) x 50
    assert visible_spaces("the time") == "the time"
    assert visible_spaces(" the  end ") == "␣the␣␣end␣"


def test_sample_text_is_read_as_text(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("gru",), layers=(1,), directions=("uni",), devices=("cpu",),
                              seeds=(0,))
    pd.DataFrame({"cell_id": ["gru-l1-uni-cpu-s0"], "cell": "gru", "layers": 1, "direction": "uni",
                  "device": "cpu", "seed": 0, "prefix": ["nan"], "text": ["nan null"]}).to_csv(
        run_dir / "samples.csv", index=False)
    samples = load_run(run_dir).samples
    assert list(samples["prefix"]) == ["nan"] and list(samples["text"]) == ["nan null"]


def test_corpus_words_never_download(tmp_path, monkeypatch):
    import harness.data

    def no_network(*args, **kwargs):
        raise AssertionError("a report must not download")

    monkeypatch.setattr(harness.data, "download", no_network)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    words, note = corpus_words(pd.DataFrame({"corpus": ["gutenberg-35"]}))
    assert words is None and "not downloaded" in note

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pg35.txt").write_text("the time traveller\n")
    words, note = corpus_words(pd.DataFrame({"corpus": ["gutenberg-35"]}))
    assert words == {"the", "time", "traveller"} and note == str(tmp_path / "data" / "pg35.txt")


def test_corpus_words_split_lines_as_training_does(tmp_path):
    # A form feed does not end a line for training (the seed's readlines), so this text has no START
    # marker at the start of a line and nothing is stripped; str.splitlines would strip the zebra away.
    text = ("zebra preface\f*** START OF THE PROJECT GUTENBERG EBOOK X ***\nthe time traveller\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nyak\n")
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    cells = pd.DataFrame({"corpus": [str(path)], "strip_boilerplate": [True],
                          "corpus_sha256": [hashlib.sha256(path.read_bytes()).hexdigest()]})
    words, _ = corpus_words(cells)
    assert {"zebra", "yak", "traveller"} <= words
    assert words == corpus_word_set(clean_lines(read_corpus_lines(path, True)))
    cells["corpus_sha256"] = "0" * 64
    assert corpus_words(cells)[0] is None  # not the text the cells were trained on


# --- figures of a run with another matrix axis (precision) ---------------------------------------------


@pytest.fixture(scope="module")
def precision_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    run_dir = make_run_folder(root, cells=("lstm",), layers=(1, 2), devices=("cpu",), seeds=(0, 1),
                              precisions=("fp32", "bf16"))
    return load_run(run_dir)


def test_learning_curves_draw_one_line_per_cell(precision_run):
    fig = learning_curves_figure(precision_run.cells, precision_run.epochs)
    lines = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata()) > 1]
    # 2 depths x 2 directions x 2 seeds x 2 precisions, each its own line of 4 epochs (two cells sharing
    # a seed drawn as one line would run back from epoch 4 to epoch 1).
    assert len(lines) == 16
    assert all(list(line.get_xdata()) == [1, 2, 3, 4] for line in lines)
    assert {line.get_linestyle() for line in lines} == {"-", "--"}  # fp32 and bf16 told apart


def test_cost_figures_keep_precisions_apart_on_one_scale(precision_run):
    fig = cost_against_depth(precision_run.cells, "sec_per_epoch", 1.0, "s", "Time per epoch")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {"lstm, cpu, precision=bf16", "lstm, cpu, precision=fp32"}
    bf16, fp32 = panels["lstm, cpu, precision=bf16"], panels["lstm, cpu, precision=fp32"]
    assert bf16.get_ylim() == fp32.get_ylim()  # one device: one scale

    def plotted(ax):
        return np.concatenate([np.asarray(c.get_offsets())[:, 1] for c in ax.collections if len(c.get_offsets())])

    # fixture: bf16 epochs take 0.4 of the fp32 time; each panel holds only its own precision's seeds
    assert np.sort(plotted(bf16)) == pytest.approx(0.4 * np.sort(plotted(fp32)))
    assert plotted(fp32).max() == pytest.approx(0.05 * 2 * 2 * 1.04)  # 2 layers, bi, slowest seed


def test_final_perplexity_and_slowdown_rows_per_precision(precision_run):
    titles = {ax.get_title() for ax in final_perplexity_figure(precision_run.cells).axes if ax.get_title()}
    assert titles == {"lstm, uni, precision=fp32", "lstm, uni, precision=bf16", "lstm, bi, precision=fp32",
                      "lstm, bi, precision=bf16"}
    table = slowdown_table(precision_run.cells)
    assert list(table.index) == ["lstm, cpu, precision=bf16", "lstm, cpu, precision=fp32"]
    assert table.to_numpy() == pytest.approx(np.full((2, 2), (1.04 * 1.02) ** 0.5 * 2 / (1.06 * 1.04) ** 0.5))


def test_pareto_points_per_precision(precision_run):
    cells, configs = pareto_points(precision_run.cells, precision_run.epochs)
    assert len(configs) == 8 and len(cells) == 16
    assert sorted(configs["label"])[:2] == ["lstm-l1-bi precision=bf16", "lstm-l1-bi precision=fp32"]
    by_label = configs.set_index("label")
    assert by_label.loc["lstm-l2-uni precision=bf16", "train_sec"] == pytest.approx(
        0.4 * by_label.loc["lstm-l2-uni precision=fp32", "train_sec"])
    assert by_label.loc["lstm-l2-uni precision=bf16", "causal_ppl"] == pytest.approx(
        by_label.loc["lstm-l2-uni precision=fp32", "causal_ppl"] + 0.5)


def test_cost_figures_and_slowdown_split_by_machine():
    rows = []
    for seed, machine in enumerate(["Fast CPU", "Fast CPU", "Slow CPU", "Slow CPU"]):
        for direction, factor in (("uni", 1.0), ("bi", 2.0)):
            rows.append({"cell_id": f"gru-l1-{direction}-cpu-s{seed}", "cell": "gru", "layers": 1,
                         "direction": direction, "device": "cpu", "seed": seed, "status": "ok",
                         "sec_per_epoch": factor * (1.0 if machine == "Fast CPU" else 3.0) * (1 + seed / 100),
                         "cpu_model": machine, "gpu_name": None})
    cells = pd.DataFrame(rows)
    titles = {ax.get_title() for ax in cost_against_depth(cells, "sec_per_epoch", 1.0, "s", "t").axes}
    assert {"gru, cpu, Fast CPU", "gru, cpu, Slow CPU"} <= titles
    table = slowdown_table(cells)
    assert list(table.index) == ["gru, cpu, Fast CPU", "gru, cpu, Slow CPU"]
    assert table.to_numpy().ravel() == pytest.approx([2.0, 2.0])
