"""Turn a results folder into a report: ``index.md`` (GitHub), ``index.html`` (self-contained) and figures.

The report is assembled once as a list of blocks (headings, paragraphs, tables, figures, folded details)
and rendered twice, so the Markdown and the HTML say the same thing: the answers first (one row per claim),
the run's provenance, then one section per claim with the figure and numbers that decided it, and the
rest folded away (``<details>`` in HTML, an appendix at the end of the Markdown). Whatever the run lacks (cells that did not
finish, one seed, one depth, no CUDA, no declared claims, no corpus file) is said in the report rather
than raised, as long as the folder holds cells at all.

Here the run is evaluated and the report written; reading the folder is ``harness.report.loading``'s job, the
document ``harness.report.document``'s and its two renderings ``harness.report.render``'s.
"""

from __future__ import annotations

import gc
import tempfile
from dataclasses import replace
from pathlib import Path

from harness.analysis.claims import evaluate_claims, learning_status
from harness.analysis.conditions import depth_profile, evaluate_conditions
from harness.analysis.run_text import (cell_baselines, corpus_words, other_text_baselines, recorded_corpus,
                                      run_baselines, table_splits)
from harness.analysis.timing_trust import distinct_reasons
from harness.report.conditions_section import suite_conditions
from harness.report.document import ReportContext, build_blocks
from harness.report.drawing import FigureDrawer
from harness.report.captions import FIGURES_MODULE, figure_tasks
from harness.report.loading import apply_timings, load_run, timing_flags_of
from harness.report.publish import (STAGE_PREFIX, clear_stage, default_out_dir, owned_files, publish_report,
                                    remove_created, report_writes)
from harness.report.render import render_html, render_markdown
from harness.results.atomic import write_text_atomic
from harness.spec.claims import default_claims, parse_claims


# The axis each of the lesson's claims varies: tested by default only where the run varies it.
LESSON_AXES = {"depth_helps": "layers", "bidirectional_slow": "direction", "bidirectional_useless": "direction"}


def claim_specs(run: dict, where: str, cells=None) -> tuple[list, str]:
    """The claims the suite declared; when it declared none, those of the lesson's three whose axis varies
    among ``cells`` (all three without a table to tell)."""
    raw = (run.get("suite") or {}).get("claims") if isinstance(run.get("suite"), dict) else None
    specs = parse_claims(raw, where) if raw else []
    if specs:
        return specs, "The claims are those the suite declares."
    lesson = default_claims()
    if cells is not None:
        lesson = [s for s in lesson if LESSON_AXES[s.name] in cells and cells[LESSON_AXES[s.name]].nunique() > 1]
    if not lesson:
        return [], ("The suite declares no claims and varies neither depth nor direction, so none of the lesson's "
                    "claims applies; declare a claim on the axes it varies (docs/claims.md).")
    return lesson, ("The suite declares no claims, so the lesson's claims on the axes it varies are tested with "
                    "default parameters.")


def build_report(run_dir, out_dir=None, timing_notes: list[str] | None = None, timing_dirs=()) -> Path:
    """Write ``index.md``, ``index.html`` and ``figures/*.png`` for a results folder into ``out_dir``
    (default: beside the run, ``harness.report.publish.default_out_dir``) and return that folder.
    ``timing_dirs``: results folders of quiet timing passes whose timings replace the run's own. Only the
    report's own files in ``out_dir`` are replaced (``harness.report.publish``)."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir)
    owned_files(out)  # a folder holding files no report wrote is refused before any work
    # The drawing workers start now and import matplotlib and the figures while this process reads the run and
    # computes its baselines, which use one CPU only. scipy.special (the t quantiles of the claims and of one
    # figure's intervals, a third of a second to import) is imported first, so that the workers share it.
    import scipy.special  # noqa: F401

    # What exists now outlives the report: the collector need not walk it at each collection while the report's
    # tables come and go, here or in the workers forked from here. Handed back to it when the report is done.
    gc.freeze()
    try:
        with FigureDrawer(preload=(FIGURES_MODULE,)) as drawer:
            return _build_report(drawer, run_dir, out, timing_notes, timing_dirs)
    finally:
        gc.unfreeze()


def _build_report(drawer: FigureDrawer, run_dir, out: Path, timing_notes, timing_dirs) -> Path:
    data = load_run(run_dir)
    own_flags, own_cells = timing_flags_of(data)
    data, conditions, (timing_flags, timing_cells) = apply_timings(data, list(timing_dirs))
    created = [p for p in (out, *out.parents) if not p.exists()]
    stage = None
    # Everything is drawn and written in a staging folder first, so that bad input, a full disk or a crash
    # leaves the report already there whole; only a finished report replaces it.
    try:
        with report_writes(out):
            out.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
        with report_writes(out, stage):
            _write_report(drawer, data, stage, out, conditions, list(timing_notes or []) + (
                timing_flags if timing_dirs else own_flags), timing_cells if timing_dirs else own_cells)
    except BaseException:
        clear_stage(stage)
        remove_created(created)
        raise
    clear_stage(stage)
    return out


def _write_report(drawer: FigureDrawer, data, stage: Path, out: Path, conditions: list[str], warnings: list[str],
                  flagged: dict[str, str]) -> None:
    figures_dir = stage / "figures"
    figures_dir.mkdir()
    specs, origin = claim_specs(data.run, f"{data.folder / 'run.json'}: suite", data.cells)
    condition_specs = suite_conditions(data.run, f"{data.folder / 'run.json'}: suite")
    words, words_note = corpus_words(data.cells)
    splits, sha256s = table_splits(data.cells), recorded_corpus(data.cells)[2]
    baselines, baselines_note = run_baselines(splits, data.run.get("baselines"), sha256s)
    # Each cell is held to the baselines of the text it trained on (the book's, for cells trained on it).
    others = other_text_baselines(splits, data.run.get("text_baselines"), sha256s)
    data = replace(data, cells=data.cells.assign(**cell_baselines(data.cells, baselines, others)))
    planned: dict[str, Path] = {}  # figure name -> the file it is being drawn into

    def draw(name: str, function: str, *args) -> None:  # every drawing function's last argument is its file
        planned[name] = args[-1]
        drawer.draw(name, function, *args)

    # The figures of the tables are drawn while the claims are evaluated, those of the claims after.
    for name, function, args in figure_tasks(data.cells, data.epochs, baselines, figures_dir):
        draw(name, function, *args)
    # Each claim's figure is drawn as soon as the claim is decided, while the next ones are evaluated.
    results = evaluate_claims(data.cells, data.epochs, data.samples, specs, words, baselines, warnings,
                              flagged, data.losses, on_result=lambda index, result: draw(
                                  f"forest_{index}", f"{FIGURES_MODULE}:forest_plot", result,
                                  figures_dir / f"forest_{index}.png"))
    ok = learning_status(data.cells, data.epochs, baselines)
    condition_results = evaluate_conditions(
        data.cells, data.epochs, data.samples, specs, condition_specs, corpus_words=words,
        baselines=baselines, timing_warnings=warnings, flagged_cells=flagged,
        losses=data.losses) if condition_specs else []
    profile = None
    if condition_results:
        profile = depth_profile(data.cells, data.epochs, condition_specs, baselines)
        draw("condition_depth", f"{FIGURES_MODULE}:condition_depth", profile, baselines, figures_dir / "condition_depth.png")
    notes = conditions + [f"Timings unreliable: {w}." for w in warnings]
    if flagged:
        notes.append(f"The timings of {len(flagged)} of {len(data.cells)} cells are unreliable "
                     f"({'; '.join(distinct_reasons(flagged.values()))}) and left out of timing comparisons.")

    def document(figures: dict) -> list[tuple]:
        return build_blocks(ReportContext(
            data=data, results=results, claims_origin=origin, figures=figures, ok=ok, words=words,
            words_note=words_note, baselines=baselines, baselines_note=baselines_note, notes=notes,
            conditions=condition_results, profile=profile, text_baselines=others))

    # The document is written while the last figures are drawn, as if each had data; it is written again
    # in the rare case that one had none (its place then says so).
    blocks = document(planned)
    markdown = render_markdown(blocks)
    figures = drawer.paths()
    if figures != planned:
        blocks = document(figures)
        markdown = render_markdown(blocks)
    write_text_atomic(stage / "index.md", markdown)
    write_text_atomic(stage / "index.html", render_html(blocks, stage, blocks[0][1]))
    publish_report(stage, out)
