"""The report as one list of blocks (``harness.report.render`` says what a block is), rendered the same
way as Markdown and HTML: the answers first (one row per claim), the run's provenance and notes, then one
section per claim, the conditions, learning, cost, generated text and an appendix."""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass, field

import pandas as pd

from harness.analysis.claims import ClaimResult
from harness.report.claim_sections import claim_sections
from harness.report.conditions_section import condition_blocks, planned_frame
from harness.report.captions import FIGURES
from harness.report.loading import RunData
from harness.report.numbers import fmt, fmt_duration, gib, sig
from harness.report.render import slug
from harness.report.tables import (baseline_sentence, claims_summary, configuration_table, first_declarations, learning_sentence, learning_table,
                                   machine_label, run_machines, samples_table, status_counts, status_table,
                                   timings_by_machine)
from harness.results.calibration import device_rates


@dataclass(frozen=True)
class ReportContext:
    """What the document says: the run, its claims' and conditions' results, the figures drawn for them, and
    the corpus words and no-learning baselines they were evaluated with."""
    data: RunData
    results: list[ClaimResult]
    claims_origin: str  # whose claims these are: the suite's, or the lesson's by default
    figures: dict  # figure name -> its file (None: not drawn)
    ok: pd.DataFrame  # the finished cells, with whether each learned
    words: set[str] | None  # the training text's words, to check generated text against
    words_note: str  # why there are no words, when there are none
    baselines: dict | None  # the no-learning perplexities of the held-out text
    baselines_note: str  # where the baselines come from, or why there are none
    notes: list[str] = field(default_factory=list)  # on the timings: where they come from, which are unreliable
    conditions: list = field(default_factory=list)  # the claims' results under each of the suite's conditions
    profile: pd.DataFrame | None = None  # the depth figure's points, under each condition
    text_baselines: list = field(default_factory=list)  # the baselines of the other training texts (run_text)


def build_blocks(context: ReportContext) -> list[tuple]:
    """The whole document, section by section."""
    return (opening_section(context) + claim_sections(context.results, context.figures)
            + conditions_section(context) + learning_section(context) + cost_section(context)
            + generated_text_section(context) + appendix_section(context))


def opening_section(context: ReportContext) -> list[tuple]:
    """Title, the answers (one row per claim), the run's provenance and notes, and the contents."""
    data = context.data
    suite = data.run.get("suite") or {}
    blocks: list[tuple] = [("h1", f"Report: {suite.get('name') or data.folder.name}")]
    blocks.append(("p", f"Results folder `{data.folder.name}`. {context.claims_origin} Each verdict follows from "
                        "one pooled ratio across configurations with its 95% interval (details: each claim's "
                        "section)."))
    missing = unfinished_cells(data.run, data.cells)
    if missing:
        done = planned_cells(data.run) - missing
        blocks.append(("p", f"Preliminary: {done} of the run's {planned_cells(data.run)} cells "
                            f"{'has' if done == 1 else 'have'} finished and {missing} "
                            f"{'is' if missing == 1 else 'are'} still to train; the verdicts rest on the finished "
                            "ones and may change when the run is complete."))
    first, variants = first_declarations(context.results)
    blocks.append(("summary", claims_summary(first)))
    if variants:
        blocks.append(("details", "Other readings of the same claims",
                       [("table", claims_summary(variants))]))
    facts = baseline_sentence(context.ok, context.baselines, context.text_baselines)
    if facts:
        blocks.append(("p", facts))
    blocks.append(("facts", provenance(data, context.baselines_note)))
    for note in data.notes + context.notes:
        blocks.append(("p", f"Note: {note}"))
    sections = [(r.title, slug(r.title)) for r in context.results] + (
        [("Under each condition", "under-each-condition")] if context.conditions else []) + [
        ("Learning", "learning"), ("Cost", "cost"), ("Generated text", "generated-text"), ("Appendix", "appendix")]
    blocks.append(("toc", sections))
    return blocks


def conditions_section(context: ReportContext) -> list[tuple]:
    """The claims under each condition; in an unfinished run, which conditions may still get a verdict."""
    run, conditions = context.data.run, context.conditions
    missing = unfinished_cells(run, context.data.cells)
    return condition_blocks(conditions, context.figures, complete=not missing,
                            planned=planned_frame(run) if missing and conditions else None, profile=context.profile)


def learning_section(context: ReportContext) -> list[tuple]:
    """Whether the cells learned: the baselines, the learning curves and the cells that did not."""
    figures = context.figures
    blocks: list[tuple] = [("h2", "Learning")]
    blocks.append(("p", learning_sentence(context.ok, context.baselines, context.baselines_note, context.text_baselines)))
    if figures.get("heldout_curves") is not None:
        blocks.append(("figure", f"figures/{figures['heldout_curves'].name}", FIGURES["heldout_curves"]))
    if figures.get("train_vs_heldout") is not None:  # a panel per direction and swept setting: folded
        blocks.append(("details", "Training against held-out perplexity, by epoch",
                       [("figure", f"figures/{figures['train_vs_heldout'].name}", FIGURES["train_vs_heldout"])]))
    not_learned = learning_table(context.ok, context.baselines)
    if not not_learned.empty:
        blocks.append(("details", "Cells that did not learn", [("table", not_learned)]))
    return blocks


def cost_section(context: ReportContext) -> list[tuple]:
    """Time per epoch, and the timings of each machine apart when the cells ran on several."""
    figures = context.figures
    blocks: list[tuple] = [("h2", "Cost")]
    for name in ("slowdown_heatmap", "seconds_per_epoch"):
        if figures.get(name) is not None:
            blocks.append(("figure", f"figures/{figures[name].name}", FIGURES[name]))
    if not any(figures.get(n) for n in ("slowdown_heatmap", "seconds_per_epoch")):
        blocks.append(("p", "No timings to show."))
    by_machine = timings_by_machine(context.data.cells)
    if not by_machine.empty:
        blocks.append(("details", "Timings by machine", [
            ("p", "The cells ran on several machines; timings are compared only within a machine."),
            ("table", by_machine)]))
    return blocks


def generated_text_section(context: ReportContext) -> list[tuple]:
    """Each configuration's generated samples with their measured quality."""
    blocks: list[tuple] = [("h2", "Generated text")]
    samples = samples_table(context.data.samples, context.data.cells, context.words)
    if samples.empty:
        blocks.append(("p", "No generated samples in this run."))
    else:
        blocks.append(("p", "Greedy generation of each configuration's lowest finished seed, after the prompt. "
                            "Words in text: share of generated words (the cut-off last one left out) found in the "
                            "training text" + ("" if context.words else f" (unavailable: {context.words_note})")
                            + "; distinct words: distinct over all; compression: deflate bytes per character "
                            "(repetition at any period compresses well); longest repeat: longest substring "
                            "occurring twice. '␣' marks spaces a page would not show."))
        blocks.append(("details", "Samples", [("table", samples)]))
    return blocks


def appendix_section(context: ReportContext) -> list[tuple]:
    """Every configuration's numbers, the cells that did not finish, and the command that reproduces the run."""
    data = context.data
    blocks: list[tuple] = [("h2", "Appendix")]
    several_machines = not timings_by_machine(data.cells).empty
    blocks.append(("details", "Every configuration (geometric mean over seeds [95% interval])",
                   ([("p", "The cells ran on several machines: their timings are in the table of each machine's "
                           "(Cost).")] if several_machines else [])
                   + [("table", configuration_table(data.cells, timings=not several_machines))]))
    status = status_table(data.cells)
    missing = unfinished_cells(data.run, data.cells)
    untrained = f"{missing} planned {'cell is' if missing == 1 else 'cells are'} still to train."
    if status.empty:
        shown = [("p", f"Every cell trained so far finished; {untrained}" if missing else "Every cell finished.")]
    else:
        shown = [("table", status)] + ([("p", untrained[0].upper() + untrained[1:])] if missing else [])
    blocks.append(("details", "Cells that did not finish", shown))
    blocks.append(("p", "Reproduce:"))
    blocks.append(("code", reproduce_command(data.run)))
    return blocks


def provenance(data: RunData, baselines_note: str) -> list[tuple[str, str]]:
    """The run's facts as (name, text): suite, when, machine, versions, calibration, cells, corpus, and where
    it applies how often it was resumed, how run.json was rebuilt and which machines the cells ran on."""
    run, cells = data.run, data.cells
    suite = run.get("suite") or {}
    machine = run.get("machine") or {}
    git = run.get("git") or {}
    started, finished = _parse_time(run.get("started")), _parse_time(run.get("finished"))
    total = (finished - started).total_seconds() if started and finished else None
    versions = ", ".join(f"{k} {machine.get(k) or '-'}" for k in ("python", "torch", "cuda", "cudnn"))
    facts = [
        ("suite", f"{suite.get('name', '-')} ({suite.get('file', '-')}): {suite.get('description') or '-'}".strip()),
        ("when", f"{run.get('started') or '-'} to {run.get('finished') or 'unfinished'} UTC"
                 + (f" ({fmt_duration(total)})" if total is not None else "")),
        ("machine", f"{machine.get('hostname', '-')}: {machine.get('cpu_model', '-')}, {machine.get('cpu_count', '-')} "
                    f"CPUs, {gib(machine.get('memory_bytes'))}; GPU {machine.get('gpu_name') or 'none'}"),
        ("versions", f"{versions}; threads {fmt(run.get('threads'))}; git {git.get('commit', '-')}"
                     f"{' (dirty)' if git.get('dirty') else ''}"),
        ("calibration", calibration_text(run.get("calibration"))),
        ("cells", (f"{len(cells)} of {planned_cells(run)} planned" if unfinished_cells(run, cells) else f"{len(cells)}")
                  + f" ({status_counts(cells['status'])})"),
        ("corpus", f"{corpus_text(run, cells)}; baselines {baselines_note}"),
    ]
    parts = [p for p in run.get("resumes") or [] if isinstance(p, dict)]
    if parts:
        described = []
        for part in parts:
            where = part.get("machine") or {}
            commit = str((part.get("git") or {}).get("commit") or "-")[:10]
            described.append(f"{part.get('started', '-')} on {where.get('hostname', '-')} "
                             f"({where.get('cpu_model', '-')}), git {commit}")
        facts.append(("resumed", f"{len(parts)} time{'s' if len(parts) > 1 else ''}: " + "; ".join(described)))
    recovered = run.get("recovered")
    if isinstance(recovered, dict):
        facts.append(("run.json", f"lost and rebuilt at {recovered.get('at', '-')} from {recovered.get('records', '-')} "
                                  "stored cells: " + ("the start, machine and calibration above are those the cells "
                                                      "recorded" if recovered.get("facts") else
                                                      "the start of the run is unknown, the machine is the cells' own, "
                                                      "and the calibration was measured at the rebuild")))
    trained = data.trained if data.trained is not None else cells  # where they ran, not where they were timed
    models = sorted({str(m) for m in trained.get("cpu_model", pd.Series(dtype=object)).dropna() if str(m)})
    if len(models) > 1:
        facts.append(("CPU models", f"{', '.join(models)}: " + (
            "where the cells trained; their timings come from the timing pass" if data.trained is not None
            else "timings are compared only between cells of one model")))
    machines = run_machines(trained)
    if len(machines) > 1 or "node" in trained and machines:
        facts.append(("cells ran on", "; ".join(machine_label(m) for m in machines)))
    return facts


def _parse_time(text) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def calibration_text(calibration) -> str:
    """run.json's ``calibration`` in a line: each device's matrix-product rate, size and threads."""
    if not isinstance(calibration, dict) or not calibration:
        return "not recorded"
    rates = device_rates(calibration)
    parts = []
    for device, entry in calibration.items():
        entry = entry if isinstance(entry, dict) else {}
        if device in rates:
            size, threads = entry.get("size"), entry.get("threads")
            detail = ", ".join(([f"{size}x{size} float32 product"] if size else [])
                               + ([f"{threads} threads"] if threads else []))
            parts.append(f"{device} {sig(rates[device] / 1e9, 3)} GFLOP/s" + (f" ({detail})" if detail else ""))
        else:
            parts.append(f"{device} unavailable" + (f" ({entry['reason']})" if entry.get("reason") else ""))
    return "; ".join(parts)


def reproduce_command(run: dict) -> str:
    """The command that started the run, as a shell line."""
    command = run.get("command")
    if isinstance(command, list) and command:
        return shlex.join(str(c) for c in command)
    if isinstance(command, str) and command:
        return command
    return "(not recorded in run.json)"


def planned_cells(run: dict) -> int:
    """How many cells the run (all its parts) set out to train, as run.json lists them."""
    return len(run.get("cells") or [])


def unfinished_cells(run: dict, cells: pd.DataFrame) -> int:
    """How many of the run's planned cells have no result yet (0 for a finished run)."""
    stored = set(cells["cell_id"].astype(str)) if "cell_id" in cells else set()
    return len([c for c in run.get("cells") or [] if str(c) not in stored])


def corpus_text(run: dict, cells: pd.DataFrame) -> str:
    """The corpus name and the SHA-256 of the text the cells were trained on (from the cells when the run
    has not finished and run.json does not list them yet)."""
    names = sorted({str(v) for v in cells.get("corpus", pd.Series(dtype=object)).dropna()})
    digests = run.get("corpus_sha256") or sorted({str(v) for v in cells.get("corpus_sha256", pd.Series(dtype=object)).dropna()})
    digests = [digests] if isinstance(digests, str) else list(digests)
    shown = ", ".join(f"{d[:16]}..." for d in digests) or "unrecorded"
    return f"{', '.join(names) or '-'} (SHA-256 {shown})"
