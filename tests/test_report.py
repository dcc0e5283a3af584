"""The report on small results folders built from literal numbers (tests/fixtures.py): the answers come
first, each claim has its figure and deciding numbers, nothing is printed twice, the rest is folded away."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from harness import cli
from harness.analysis.claims import evaluate_claims
from harness.cell.corpus import clean_lines, read_corpus_lines
from harness.errors import HarnessError
from harness.report.figures import slowdown_table
from harness.analysis.run_text import corpus_words
from harness.report.build import build_report, claim_specs, default_out_dir
from harness.report.loading import fill_flops_utilization, load_run
from harness.report.numbers import fmt
from harness.report.tables import configuration_table, fmt_geo_ci, samples_table, visible_spaces
from harness.analysis.text_measures import corpus_word_set

from fixtures import make_run_folder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DECLARED = ["depth_helps", {"name": "bidirectional_slow", "threshold": 1.5}, "bidirectional_useless"]
NOT_OK = {"lstm-l2-uni-cpu-s2": ("failed", "RuntimeError: out of memory\nlast line"),
          "rnn-l1-bi-cpu-s0": ("diverged", "training loss became nan in epoch 2")}
BASELINES = {"uniform": 28.0, "unigram": 16.9, "bigram": 9.9, "tokens": 2000}


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    run_dir = make_run_folder(root, statuses=NOT_OK, claims=DECLARED)
    run = json.loads((run_dir / "run.json").read_text())
    run["baselines"] = BASELINES
    run["suite"]["description"] = "A literal test grid <script>alert(1)</script>"
    (run_dir / "run.json").write_text(json.dumps(run))
    out = build_report(run_dir, root / "report")
    return run_dir, out


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(f"\n{heading}\n")
    rest = markdown[start + len(heading) + 2:]
    following = re.search(r"\n#{1,3} ", rest)
    return rest[: following.start()] if following else rest


def _table_rows(section: str) -> list[list[str]]:
    """Body rows of the first Markdown table in a section (header and rule left out)."""
    lines = []
    for line in section.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def _assert_real_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width >= 400 and image.height >= 200


def test_the_answers_come_first(full_report):
    _, out = full_report
    markdown = (out / "index.md").read_text()
    first_table = _table_rows(markdown)
    assert [r[0] for r in first_table] == ["Depth helps", "Bidirectional is slow (threshold = 1.5)",
                                           "Bidirectional is useless for next-character prediction"]
    # Bidirectional cells never left the letter frequencies: their comparisons are shown, not pooled.
    assert [r[1] for r in first_table] == ["inconclusive", "supported", "inconclusive"]
    # The pooled effect with its interval, and a sentence with the number to remember.
    assert re.fullmatch(r"x1\.96\d* \[1\.9\d*, 1\.9\d*\]", first_table[1][2])
    # Where a new configuration would land: four configurations give a prediction interval.
    assert re.fullmatch(r"\[[\d.]+, [\d.]+\]", first_table[1][3])
    assert "took x1.96" in first_table[1][4] and "x2 the arithmetic" in first_table[1][4]
    assert "did not learn" in first_table[2][4]
    # Depth: two configurations (rnn, lstm) whose effects differ beyond their seeds' spread: they disagree,
    # and with two there is no prediction interval.
    assert "Inconclusive: configurations disagree (I² " in first_table[0][4] and first_table[0][3] == "-"
    assert markdown.index("| claim") < markdown.index("- **machine**") < markdown.index("## Depth helps")


def test_nothing_is_printed_twice(full_report):
    _, out = full_report
    markdown = (out / "index.md").read_text()
    paragraphs = [p for p in markdown.split("\n\n") if p.strip() and not p.startswith(("|", "!["))]
    repeated = {p for p in paragraphs if paragraphs.count(p) > 1}
    assert not repeated
    tables = re.findall(r"(?:^\|.*\n)+", markdown, flags=re.M)
    assert len(tables) == len(set(tables))


def test_each_claim_has_its_forest_plot_and_pooled_table(full_report):
    _, out = full_report
    markdown = (out / "index.md").read_text()
    for index, title in enumerate(["Depth helps", "Bidirectional is slow (threshold = 1.5)",
                                   "Bidirectional is useless for next-character prediction"]):
        section = _section(markdown, f"## {title}")
        assert f"](figures/forest_{index}.png)" in section
        _assert_real_png(out / "figures" / f"forest_{index}.png")
        rows = _table_rows(section)
        assert rows[0][1] == "all" and {r[1] for r in rows[1:]} == {"rnn", "lstm"}
        assert "Details: [" in section
    slow = _table_rows(_section(markdown, "## Bidirectional is slow (threshold = 1.5)"))
    assert slow[0][2] == "4 of 4"  # four CPU configurations (CUDA skipped)


def test_baselines_and_cells_that_did_not_learn_are_named(full_report):
    _, out = full_report
    markdown = (out / "index.md").read_text()
    learning = _section(markdown, "## Learning")
    assert "unigram (letter frequencies) 16.9" in learning and "bigram 9.9" in learning
    # Every bidirectional cell's causal perplexity (about 20) is above the unigram baseline.
    assert "11 of 22 finished cells did not learn" in learning and "lstm-l1-bi-cpu-s0" in learning
    # Only one side (bi) failed to learn: those comparisons are shown, not pooled.
    useless = _section(markdown, "## Bidirectional is useless for next-character prediction")
    assert _table_rows(useless)[0][2] == "0 of 4"
    assert "4 of 4 comparisons are shown but not counted" in useless and "in 4 the compared side did not learn" in useless


def test_figures_are_real_pngs_and_referenced_once(full_report):
    _, out = full_report
    markdown = (out / "index.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(linked) == len(set(linked)) >= 6
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == sorted(Path(p).name for p in linked)
    for link in linked:
        _assert_real_png(out / link)
    page = (out / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', page)
    assert len(sources) == len(linked)
    for source, _ in sources:
        assert base64.b64decode(source.split(",", 1)[1])[:8] == PNG_MAGIC
    assert "<script" not in page and 'href="http' not in page  # nothing fetched from elsewhere


def test_html_folds_details_and_has_anchors(full_report):
    _, out = full_report
    page = (out / "index.html").read_text()
    assert '<meta name="viewport"' in page and page.count("<details") >= 6
    for anchor in re.findall(r'<nav>.*?</nav>', page)[0].split('href="#')[1:]:
        assert f'id="{anchor.split(chr(34))[0]}"' in page
    assert '<div class="scroll"><table' in page


def test_run_text_is_escaped_in_markdown_too(full_report):
    _, out = full_report
    markdown = (out / "index.md").read_text()
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown


def test_appendix_tables(full_report):
    _, out = full_report
    markdown = (out / "index.md").read_text()
    configurations = _table_rows(_section(markdown, "### Appendix: Every configuration (geometric mean over seeds [95% interval])"))
    assert len(configurations) == 16  # 2 cell types x 2 depths x 2 directions x 2 devices
    by_key = {tuple(r[:4]): r for r in configurations}
    assert by_key[("lstm", "2", "uni", "cpu")][4] == "2/3"
    not_finished = _table_rows(_section(markdown, "### Appendix: Cells that did not finish"))
    assert len(not_finished) == 2 + 24  # the failed and diverged cells, and every CUDA cell
    samples = _table_rows(_section(markdown, "### Appendix: Samples"))
    assert len(samples) == 8 * 2  # one seed of each finished CPU configuration, two prefixes each
    assert {r[-1] for r in samples if "-bi-" in r[0]} == {"yes"}
    assert {r[-1] for r in samples if "-uni-" in r[0]} == {"no"}


def test_provenance_and_reproduce(full_report):
    run_dir, out = full_report
    markdown = (out / "index.md").read_text()
    run = json.loads((run_dir / "run.json").read_text())
    assert "(3 min 25 s)" in markdown and "Fixture CPU" in markdown and "torch 2.13.0+cpu" in markdown
    assert "cpu 10 GFLOP/s (2048x2048 float32 product, 2 threads)" in markdown
    assert "baselines recorded in run.json" in markdown
    command = " ".join(run["command"])
    assert f"Reproduce:\n\n```bash\n{command}\n```" in markdown


def test_configuration_table_uses_log_scale_intervals():
    cells = pd.DataFrame({
        "cell_id": ["a", "b", "c", "d"], "cell": "gru", "layers": [1, 1, 1, 2], "direction": "uni",
        "device": "cpu", "seed": [0, 1, 2, 0], "status": ["ok", "ok", "failed", "ok"],
        "causal_ppl": [1.5, 30.0, None, 3.0], "params": [100, 100, 100, 200],
    })
    table = configuration_table(cells)
    assert len(table) == 2 and table.iloc[0]["seeds ok"] == "2/3"
    mean, bounds = table.iloc[0]["causal ppl"].split(" [")
    low = float(bounds.split(",")[0])
    assert float(mean) == pytest.approx(math.sqrt(45), rel=1e-3) and low > 0  # never below zero
    assert table.iloc[1]["causal ppl"] == "3"  # one seed: the value, no interval
    # Perplexities no cell measured are left out; the held-out perplexity at the selected epoch is shown.
    assert "teacher-forced ppl" not in table and "causal ppl, selected epoch" not in table
    selected = configuration_table(cells.assign(causal_ppl=None, selected_causal_ppl=[2.0, 8.0, None, 5.0]))
    assert "causal ppl" not in selected and list(selected["causal ppl, selected epoch"].str[:3]) == ["4 [", "5"]
    # Timings stay out where the cells ran on several machines (compared within a machine only).
    assert "s/epoch" in table and "s/epoch" not in configuration_table(cells, timings=False)


def test_slowdown_table_carries_the_flops_ratio(tmp_path):
    data = load_run(make_run_folder(tmp_path, cells=("lstm",), layers=(1, 2), devices=("cpu",), seeds=(0, 1)))
    time, flops = slowdown_table(data.cells)
    assert time.shape == (1, 2) and (time.to_numpy() > 1.9).all()
    assert flops.to_numpy() == pytest.approx(2.0)


def test_partial_run_single_seed_single_depth_no_epochs_no_corpus(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("lstm",), layers=(2,), seeds=(0,), devices=("cpu",),
                              with_epochs_csv=False, corpus=str(tmp_path / "missing.txt"),
                              statuses={"lstm-l2-bi-cpu-s0": ("failed", "crash")})
    out = build_report(run_dir, tmp_path / "out")
    markdown = (out / "index.md").read_text()
    claims = _table_rows(markdown)
    # One depth planned: depth is no claim of this run; the bidirectional side failed: nothing to compare.
    assert [r[0] for r in claims] == ["Bidirectional is slow", "Bidirectional is useless for next-character prediction"]
    assert [r[1] for r in claims] == ["inconclusive"] * 2 and "no configurations" in claims[0][4]
    assert "epochs.csv is missing" in markdown and "baselines unavailable" in markdown
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        _assert_real_png(out / link)


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


def test_flops_utilization_of_a_one_thread_cell_is_against_the_one_thread_rate():
    # run.json's calibration is read in one place (harness.results.calibration): the report honours by_threads
    # as the stored records do.
    cells = pd.DataFrame({"device": ["cpu", "cpu"], "flops_per_sec": [2.0e9, 2.0e9], "threads": [1, 2]})
    calibration = {"cpu": {"flops_per_sec": 1.0e10, "threads": 2,
                           "by_threads": {"1": {"flops_per_sec": 5.0e9}, "2": {"flops_per_sec": 1.0e10}}}}
    filled = fill_flops_utilization(cells, calibration)["flops_utilization"]
    assert list(filled) == [0.4, 0.2]


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


def test_forest_plot_labels_lie_inside_the_figure_and_are_large_enough_to_read(tmp_path):
    # Reported: "mn uni cpu" for "rnn uni cpu" (7-point labels at 80 dpi run "rn" together), and a long label
    # must not be cut off at the figure's edge.
    import dataclasses

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from harness.report.figures import FOREST_DPI, forest_figure

    run_dir = make_run_folder(tmp_path, cells=("rnn", "gru"), devices=("cpu",), seeds=(0, 1))
    data = load_run(run_dir)
    specs, _ = claim_specs({"suite": {"claims": ["depth_helps"]}}, "x")
    depth = evaluate_claims(data.cells, data.epochs, data.samples, specs)[0]
    long_name = "a-cell-type-with-a-very-long-name-" * 3
    for result in (depth, dataclasses.replace(depth, evidence=depth.evidence.assign(cell=long_name))):
        fig = forest_figure(result)
        FigureCanvasAgg(fig)
        fig.set_dpi(FOREST_DPI)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        labels = fig.axes[0].get_yticklabels()
        assert any(label.get_text().startswith("rnn uni cpu" if result is depth else long_name) for label in labels)
        for label in labels:
            box = label.get_window_extent(renderer)
            assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, (label.get_text(), box, fig.bbox)
            assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1, (label.get_text(), box, fig.bbox)
            assert label.get_fontsize() * FOREST_DPI / 72 >= 11, label.get_fontsize()  # pixels
        # Laid out by hand: the title above the axes, the legend below the axis label, all inside the figure.
        ax = fig.axes[0]
        title, xlabel = ax.title.get_window_extent(renderer), ax.xaxis.label.get_window_extent(renderer)
        legend = fig.legends[0].get_window_extent(renderer)
        assert ax.bbox.y1 <= title.y0 and title.y1 <= fig.bbox.y1
        assert fig.bbox.y0 <= legend.y0 and legend.y1 <= xlabel.y0 and xlabel.y1 <= ax.bbox.y0


def test_default_out_dir_is_named_after_the_run(tmp_path):
    assert default_out_dir(tmp_path / "results" / "quick-20250101-000000/") == tmp_path / "report/quick-20250101-000000"


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
    assert fmt_geo_ci([2.0, 8.0], 3) .startswith("4 [")  # geometric mean
    assert visible_spaces("the time") == "the time"
    assert visible_spaces(" the  end ") == "␣the␣␣end␣"


def test_sample_text_is_read_as_text(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("gru",), layers=(1,), directions=("uni",), devices=("cpu",),
                              seeds=(0,))
    pd.DataFrame({"cell_id": ["gru-l1-uni-cpu-s0"], "cell": "gru", "layers": 1, "direction": "uni",
                  "device": "cpu", "seed": 0, "prefix": ["nan"], "text": ["nan null"]}).to_csv(
        run_dir / "samples.csv", index=False)
    # The cell's record says the same (samples.csv is checked against it).
    record_path = run_dir / "cells" / "gru-l1-uni-cpu-s0.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "samples": [{"prefix": "nan", "text": "nan null"}]}))
    samples = load_run(run_dir).samples
    assert list(samples["prefix"]) == ["nan"] and list(samples["text"]) == ["nan null"]


def test_corpus_words_never_download(tmp_path, monkeypatch):
    import harness.cell.corpus

    def no_network(*args, **kwargs):
        raise AssertionError("a report must not download")

    monkeypatch.setattr(harness.cell.corpus, "download", no_network)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    words, note = corpus_words(pd.DataFrame({"corpus": [str(tmp_path / "gone.txt")]}))
    assert words is None and "unavailable" in note
    # A named corpus ships with the package: its words are there without any download.
    words, _ = corpus_words(pd.DataFrame({"corpus": ["gutenberg-35"]}))
    assert {"time", "traveller"} <= words


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


def test_moved_calibration_is_flagged_and_timing_claims_are_not_decided(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn", "lstm"), devices=("cpu",), claims=DECLARED)
    run = json.loads((run_dir / "run.json").read_text())
    run["calibration_end"] = json.loads(json.dumps(run["calibration"]))
    run["calibration_end"]["cpu"]["flops_per_sec"] *= 0.7  # the machine got 30% slower during the run
    (run_dir / "run.json").write_text(json.dumps(run))
    markdown = (build_report(run_dir, tmp_path / "out") / "index.md").read_text()
    summary = {r[0]: r for r in _table_rows(markdown)}
    slow = summary["Bidirectional is slow (threshold = 1.5)"]
    assert slow[1] == "inconclusive" and "timings unreliable" in slow[4]
    assert summary["Bidirectional is useless for next-character prediction"][1] == "supported"  # not a timing
    assert "Note: Timings unreliable:" in markdown.split("## Depth helps")[0]


def test_timings_from_a_quiet_timing_pass(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn", "lstm"), devices=("cpu",), claims=DECLARED)
    timing_dir = make_run_folder(tmp_path, cells=("rnn", "lstm"), devices=("cpu",), name="timing-20250102-000000")
    cells = pd.read_csv(timing_dir / "cells.csv")
    cells.loc[cells["direction"] == "bi", "sec_per_epoch"] *= 1.5  # bi 3x as slow in the quiet pass
    cells.to_csv(timing_dir / "cells.csv", index=False)
    for path in (timing_dir / "cells").glob("*.json"):  # the records say the same (the tables are checked)
        record = json.loads(path.read_text())
        if record["direction"] == "bi":
            path.write_text(json.dumps({**record, "sec_per_epoch": record["sec_per_epoch"] * 1.5}))
    assert cli.main(["report", str(run_dir), "--out", str(tmp_path / "out"), "--timings", str(timing_dir)]) == 0
    markdown = (tmp_path / "out" / "index.md").read_text()
    slow = {r[0]: r for r in _table_rows(markdown)}["Bidirectional is slow (threshold = 1.5)"]
    assert slow[2].startswith("x2.9") and "come from a separate timing pass: timing-20250102-000000" in markdown
    assert cli.main(["report", str(run_dir), "--timings", str(tmp_path / "nowhere")]) == 2


def test_a_run_resumed_on_another_cpu_keeps_its_timings_apart(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn", "lstm"), devices=("cpu",), claims=DECLARED)
    run = json.loads((run_dir / "run.json").read_text())
    run["resumes"] = [{"started": "2025-01-02T00:00:00+00:00", "git": {"commit": "abcdef1234567"},
                       "machine": {"hostname": "other-host", "cpu_model": "Other CPU"}}]
    (run_dir / "run.json").write_text(json.dumps(run))
    cells = pd.read_csv(run_dir / "cells.csv")
    cells["cpu_model"] = ["Other CPU" if d == "bi" else "Fixture CPU" for d in cells["direction"]]
    cells.to_csv(run_dir / "cells.csv", index=False)
    for path in (run_dir / "cells").glob("*.json"):  # the records say the same (the tables are checked)
        record = json.loads(path.read_text())
        if record["direction"] == "bi":
            path.write_text(json.dumps({**record, "cpu_model": "Other CPU"}))
    markdown = (build_report(run_dir, tmp_path / "out") / "index.md").read_text()
    assert "**resumed**: 1 time: 2025-01-02T00:00:00+00:00 on other-host (Other CPU)" in markdown
    assert "**CPU models**: Fixture CPU, Other CPU" in markdown
    # Every bi cell was timed on the other CPU: no bi/uni timing pair is left.
    slow = {r[0]: r for r in _table_rows(markdown)}["Bidirectional is slow (threshold = 1.5)"]
    assert slow[1] == "inconclusive" and "no configurations" in slow[4]


def test_a_cell_with_noisy_timings_is_left_out_not_the_whole_run(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn", "lstm"), devices=("cpu",), claims=DECLARED)
    cells = pd.read_csv(run_dir / "cells.csv")
    noisy = cells["cell_id"] == "lstm-l2-bi-cpu-s1"
    cells.loc[noisy, "sec_per_epoch_iqr"] = cells.loc[noisy, "sec_per_epoch"] * 0.5  # epochs spread 50%
    cells.to_csv(run_dir / "cells.csv", index=False)
    for path in (run_dir / "cells").glob("lstm-l2-bi-cpu-s1.json"):  # the record is the source of truth
        record = json.loads(path.read_text())
        record["sec_per_epoch_iqr"] = record["sec_per_epoch"] * 0.5
        path.write_text(json.dumps(record))
    markdown = (build_report(run_dir, tmp_path / "out") / "index.md").read_text()
    slow = {r[0]: r for r in _table_rows(markdown)}["Bidirectional is slow (threshold = 1.5)"]
    assert slow[1] == "supported"
    assert "The timings of 1 of 24 cells are unreliable (epoch-time spread above 20% of the median)" in markdown
    assert "1 of 24 cells left out for unreliable timings (lstm-l2-bi-cpu-s1)" in markdown


def test_an_unfinished_run_is_reported_as_preliminary(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn",), layers=(1,), directions=("uni", "bi"), devices=("cpu",),
                              seeds=(0, 1), claims=[])
    finished = (build_report(run_dir, tmp_path / "finished") / "index.md").read_text()
    assert "Preliminary" not in finished and "planned" not in finished
    run = json.loads((run_dir / "run.json").read_text())
    stored = sorted(p.stem for p in (run_dir / "cells").glob("*.json"))
    run.update(cells=stored + ["rnn-l1-uni-cpu-s2", "rnn-l1-bi-cpu-s2"], finished=None)
    (run_dir / "run.json").write_text(json.dumps(run))
    text = (build_report(run_dir, tmp_path / "unfinished") / "index.md").read_text()
    assert f"Preliminary: {len(stored)} of the run's {len(stored) + 2} cells have finished and 2 are still" in text
    assert f"**cells**: {len(stored)} of {len(stored) + 2} planned (ok {len(stored)})" in text
    assert "Every cell trained so far finished; 2 planned cells are still to train." in text
    assert "Every cell finished." in finished and "still to train" not in finished


def test_a_claim_on_a_second_metric_folds_its_figure(tmp_path):
    # The same configurations drawn again would make the page long: the second metric's figure is folded.
    run_dir = make_run_folder(tmp_path, devices=("cpu",), seeds=(0, 1),
                              claims=["depth_helps", {"name": "depth_helps", "metric": "train_ppl"}])
    out = build_report(run_dir, tmp_path / "out")
    markdown = (out / "index.md").read_text()
    first = _section(markdown, "## Depth helps")
    second = _section(markdown, "## Depth helps (metric = train_ppl)")
    assert "](figures/forest_0.png)" in first
    assert "forest_1.png" not in second and "Details: [Depth helps (metric = train_ppl): figure]" in second
    appendix = markdown[markdown.index("### Appendix: Depth helps (metric = train_ppl): figure"):]
    assert "](figures/forest_1.png)" in appendix
    _assert_real_png(out / "figures" / "forest_1.png")
    page = (out / "index.html").read_text()
    folded = page[page.index('<details id="appendix-depth-helps-metric--train_ppl-figure">'):]
    assert folded.index("<img") < folded.index("</details>")


def test_an_unfinished_runs_conditions_say_where_something_to_compare_is_still_to_come(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn",), layers=(1, 2), directions=("uni", "bi"), devices=("cpu",),
                              seeds=(0, 1), claims=["bidirectional_useless", "depth_helps"])
    run = json.loads((run_dir / "run.json").read_text())
    # The suite also plans 3-layer cells, none trained yet.
    run["suite"]["matrix"]["layers"] = [1, 2, 3]
    run["suite"]["conditions"] = [{"name": "every cell"}, {"name": "unidirectional", "where": {"direction": "uni"}},
                                  {"name": "2-3 layers", "where": {"layers": [2, 3]}}]
    stored = sorted(p.stem for p in (run_dir / "cells").glob("*.json"))
    planned = stored + [f"rnn-l3-{d}-cpu-s{s}" for d in ("uni", "bi") for s in (0, 1)]
    run.update(cells=planned, finished=None)
    (run_dir / "run.json").write_text(json.dumps(run))
    markdown = (build_report(run_dir, tmp_path / "out") / "index.md").read_text()

    def versus(title: str) -> list[str]:
        rows = _table_rows(_section(markdown, f"### {title}, by condition"))
        return [row[-1] for row in rows]

    # No bidirectional cell will ever be unidirectional: final. The 2-layer cells compare already.
    assert versus("Bidirectional is useless for next-character prediction")[1] == "nothing to compare"
    # One depth trained of the two planned there: a step to compare is still to come.
    assert versus("Depth helps")[2] == "nothing to compare yet"


def test_a_failed_report_leaves_the_one_there_whole_and_a_new_one_drops_stale_figures(tmp_path):
    run_dir = make_run_folder(tmp_path, cells=("rnn",), devices=("cpu",), seeds=(0, 1), claims=DECLARED)
    out = build_report(run_dir, tmp_path / "out")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("figures/forest_2.png") in before
    run = json.loads((run_dir / "run.json").read_text())
    run["suite"]["claims"] = [{"name": "depth_helpz"}]
    (run_dir / "run.json").write_text(json.dumps(run))
    with pytest.raises(HarnessError, match="depth_helpz"):
        build_report(run_dir, out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # A report of one claim draws one forest plot: the earlier third one must not survive beside it.
    run["suite"]["claims"] = ["depth_helps"]
    (run_dir / "run.json").write_text(json.dumps(run))
    build_report(run_dir, out)
    after = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert "figures/forest_0.png" in after and "figures/forest_2.png" not in after and "index.html" in after
    assert not [name for name in after if name.startswith(".report-")]  # no staging folder left


def test_a_file_given_as_the_results_folder_is_named_as_not_a_folder(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x\n")
    assert cli.main(["report", str(tmp_path / "a-file"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'a-file'}: not a folder\n"
    assert cli.main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'}: no such results folder\n"


def test_a_suite_without_claims_gets_only_the_lessons_claims_on_the_axes_it_varies(tmp_path):
    run_dir = make_run_folder(tmp_path / "a", cells=("gru",), layers=(1,), directions=("uni",), devices=("cpu",),
                              precisions=("fp32", "bf16"))
    markdown = (build_report(run_dir, tmp_path / "report-a") / "index.md").read_text()
    assert "varies neither depth nor direction, so none of the lesson's claims applies" in markdown
    assert "## Depth helps" not in markdown and "## Bidirectional" not in markdown
    # Depth varies, direction does not: depth alone.
    data = load_run(make_run_folder(tmp_path / "b", cells=("gru",), layers=(1, 2), directions=("uni",),
                                    devices=("cpu",)))
    specs, origin = claim_specs(data.run, "run.json", data.cells)
    assert [s.name for s in specs] == ["depth_helps"] and "on the axes it varies" in origin


def test_a_swept_key_is_drawn_apart_never_averaged(tmp_path):
    from harness.report.figures import variants

    run_dir = make_run_folder(tmp_path, cells=("gru",), devices=("cpu",), precisions=("fp32", "bf16"))
    data = load_run(run_dir)
    keys, combos = variants(data.cells[data.cells["status"] == "ok"])
    assert keys == ["precision"] and combos == [("bf16",), ("fp32",)]
    out = build_report(run_dir, tmp_path / "report")
    with Image.open(out / "figures" / "heldout_curves.png") as image:
        tall = image.height
    plain = build_report(make_run_folder(tmp_path / "plain", cells=("gru",), devices=("cpu",)), tmp_path / "r2")
    with Image.open(plain / "figures" / "heldout_curves.png") as image:
        assert tall >= image.height  # one row per precision, in place of the epochs and time rows


@pytest.mark.parametrize("figure", ["heldout_curves", "train_vs_heldout"])
def test_the_panel_figures_laid_out_by_hand_keep_every_text_inside_and_the_legend_below(tmp_path, monkeypatch,
                                                                                          figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from harness.report import figures

    run_dir = make_run_folder(tmp_path, cells=("rnn", "gru"), devices=("cpu",), seeds=(0, 1))
    data = load_run(run_dir)
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, dpi=figures.DPI: drawn.append(fig) or path)
    getattr(figures, figure)(data.cells, data.epochs, None, tmp_path / "f.png")
    fig = drawn[0]
    FigureCanvasAgg(fig)
    fig.set_dpi(figures.DPI)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    def drawn_ticks(ax):  # tick labels outside the view limits exist but are not drawn
        for label in ax.get_xticklabels():
            middle = (label.get_window_extent(renderer).x0 + label.get_window_extent(renderer).x1) / 2
            if ax.bbox.x0 - 1 <= middle <= ax.bbox.x1 + 1:
                yield label
        for label in ax.get_yticklabels():
            middle = (label.get_window_extent(renderer).y0 + label.get_window_extent(renderer).y1) / 2
            if ax.bbox.y0 - 1 <= middle <= ax.bbox.y1 + 1:
                yield label

    texts = [t for ax in fig.axes if ax.get_visible()
             for t in (ax.title, ax.xaxis.label, ax.yaxis.label, *drawn_ticks(ax))
             if t.get_visible() and t.get_text()]
    assert texts
    for text in texts:
        box = text.get_window_extent(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1, \
            (text.get_text(), box)
    legend = fig.legends[0].get_window_extent(renderer)
    lowest = min(t.get_window_extent(renderer).y0 for t in texts)
    assert fig.bbox.y0 <= legend.y0 and legend.y1 <= lowest + 1  # below every panel's text
    # A title does not run into the panel above it.
    panels = [ax for ax in fig.axes if ax.get_visible()]
    for ax in panels:
        title = ax.title.get_window_extent(renderer)
        above = [other for other in panels if other.bbox.y0 > ax.bbox.y1]
        assert all(title.y1 <= other.bbox.y0 for other in above)


def test_figure_panels_split_by_the_keys_that_make_a_configuration_not_by_those_that_follow():
    from harness.report.figures import panel_title, variant_label, variants

    rows = []
    for cell, hidden_at in (("gru", {1: 436, 2: 256}), ("lstm", {1: 380, 2: 256})):
        for layers in (1, 2):
            rows.append({"cell": cell, "layers": layers, "direction": "uni", "seed": 0, "lr": 0.003,
                         "hidden": 256, "target_params": None, "optimizer": "adam", "dropout": 0.3})
            rows.append({"cell": cell, "layers": layers, "direction": "uni", "seed": 0, "lr": 0.003,
                         "hidden": hidden_at[layers], "target_params": 621596.0, "optimizer": "adam", "dropout": 0.3})
            rows.append({"cell": cell, "layers": layers, "direction": "uni", "seed": 0, "lr": 1.0,
                         "hidden": 256, "target_params": None, "optimizer": "sgd", "dropout": 0.0})
    keys, combos = variants(pd.DataFrame(rows))
    # hidden follows the parameter target; lr, optimizer and dropout follow one another: one of them is kept.
    assert keys[0] == "target_params" and len(keys) == 2 and keys[1] in ("lr", "optimizer", "dropout")
    assert [combo[0] for combo in combos] == ["621596.0", "none", "none"] and len(set(combos)) == 3
    keys, combos = variants(pd.DataFrame([r for r in rows if r["lr"] == 0.003]))
    assert keys == ["target_params"] and combos == [("621596.0",), ("none",)]
    assert variant_label(["target_params", "lr"], ("621596.0", "0.003")) == "target_params 621596, lr 0.003"
    # Only what differs among the combinations shown: target_params is none in both.
    assert variant_label(["target_params", "lr"], ("none", "1.0"), [("none", "1.0"), ("none", "0.003")]) == "lr 1"
    assert panel_title("gru, uni", "lr 1") == "gru, uni, lr 1"
    long = panel_title("gru, uni", "train_text first, target_params 621596, lr 0.003, optimizer adam")
    assert long.startswith("gru, uni,\ntrain_text first") and all(len(line) <= 52 for line in long.splitlines())


def test_the_slowdown_rows_name_only_the_keys_that_differ_among_them():
    cells = pd.DataFrame([{"cell_id": f"{c}-{d}-{s}", "cell": c, "layers": 2, "direction": d, "device": "cpu",
                           "seed": s, "status": "ok", "sec_per_epoch": (2.0 if d == "bi" else 1.0) * (1 + s / 100),
                           "flops_per_epoch": 2.0 if d == "bi" else 1.0, "lr": 0.003, "optimizer": "adam",
                           "hidden": 256 if c == "gru" else 128}
                          for c in ("gru", "lstm") for d in ("uni", "bi") for s in (0, 1)])
    time, _ = slowdown_table(cells)
    # hidden differs between the rows and is named; lr and optimizer are the same in every row.
    assert sorted(time.index) == ["gru, cpu, hidden=256", "lstm, cpu, hidden=128"]


def test_a_panel_of_cells_trained_on_the_book_is_drawn_against_the_books_baselines():
    from harness.report.figures import panel_baselines

    main = {"uniform": 28.0, "unigram": 17.3, "bigram": 10.9, "5-gram": 7.4, "6-gram": 7.31}
    cells = pd.DataFrame({"cell_id": ["a", "b", "c"], "unigram_baseline": [17.3, 17.2, 17.2],
                          "bigram_baseline": [10.9, 10.2, 10.2], "ngram_baseline": [7.31, 4.58, 4.58],
                          "ngram_baseline_order": ["6-gram", "6-gram", "6-gram"]})
    assert panel_baselines(main, cells, ["b", "c"]) == {"uniform": 28.0, "unigram": 17.2, "bigram": 10.2, "6-gram": 4.58}
    assert panel_baselines(main, cells, ["a"]) is main  # the run's own text
    assert panel_baselines(main, cells, ["a", "b"]) is main  # two texts in one panel: the run's lines


def test_the_training_figure_names_only_the_measures_it_draws(tmp_path, monkeypatch):
    from harness.report import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or path)
    cells = pd.DataFrame([{"cell_id": f"gru-{s}", "cell": "gru", "layers": 1, "direction": "uni", "device": "cpu",
                           "seed": s, "status": "ok"} for s in (0, 1)])
    epochs = pd.DataFrame([{"cell_id": f"gru-{s}", "epoch": e, "train_ppl": 20.0 / e, "sec": 1.0,
                            "causal_ppl": None} for s in (0, 1) for e in (1, 2, 3)])
    figures.train_vs_heldout(cells, epochs, None, tmp_path / "f.png")
    labels = [t.get_text() for legend in drawn[0].legends for t in legend.get_texts()]
    assert "training" in labels and "held-out causal" not in labels
    figures.train_vs_heldout(cells, epochs.assign(causal_ppl=9.0), None, tmp_path / "f.png")
    assert "held-out causal" in [t.get_text() for legend in drawn[1].legends for t in legend.get_texts()]
