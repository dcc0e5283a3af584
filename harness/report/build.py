"""Turn a results folder into a report: ``index.md`` (GitHub), ``index.html`` (self-contained) and figures.

The report is assembled once as a list of blocks (headings, paragraphs, tables, figures, folded details)
and rendered twice, so the Markdown and the HTML say the same thing: the answers first (one row per claim),
the run's provenance, then one section per claim with the figure and numbers that decided it, and the
rest folded away (``<details>`` in HTML, an appendix at the end of the Markdown). Whatever the run lacks (cells that did not
finish, one seed, one depth, no CUDA, no declared claims, no corpus file) is said in the report rather
than raised, as long as the folder holds cells at all.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.report import wording as claim_wording
from harness.analysis import claims as claims_mod
from harness.analysis import text_measures
from harness.spec.claims import BEST_METRIC, SELECTED_METRIC
from harness.analysis.claims import ClaimResult, ClaimSpec, configuration_keys, evaluate_claims, ok_cells, parse_claims
from harness.spec.config import GRID_KEYS
from harness.errors import HarnessError
from harness.report.figures import FIGURES, MIB
from harness.analysis.stats import log_interval
from harness.results.calibration import device_rate, device_rates
from harness.results.run_folder import frames_from_records, read_checked_table, read_records, read_run_json
from harness.results.atomic import write_text_atomic
from harness.analysis.run_text import corpus_words, recorded_corpus, run_baselines, table_splits
from harness.report.numbers import fmt, fmt_duration, gib, sig

STATUSES = ("ok", "skipped", "diverged", "failed", "timeout")


# --- loading ------------------------------------------------------------------------------------------


@dataclass
class RunData:
    folder: Path
    run: dict
    cells: pd.DataFrame
    epochs: pd.DataFrame
    samples: pd.DataFrame
    notes: list[str] = field(default_factory=list)  # what was missing or repaired while loading
    trained: pd.DataFrame | None = None  # the cells where they trained, when a timing pass replaced their timings


def load_run(run_dir) -> RunData:
    """Read a results folder. Raises HarnessError when it is missing, its run.json unreadable, or it holds
    no cells; damaged or missing records and table rows are repaired where the records allow and named
    in ``notes`` (``harness.results.run_folder.read_checked_table``)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise HarnessError(f"{folder}: {'not a folder' if folder.exists() else 'no such results folder'}")
    notes = []
    run = read_run_json(folder)
    if run is None:
        run = {}
        notes.append("run.json is missing: provenance unknown.")
    records, damaged = read_records(folder)
    cells, cell_notes = read_checked_table(folder, "cells.csv", records, missing_ok=True)
    epochs, epoch_notes = read_checked_table(folder, "epochs.csv", records, missing_ok=True)
    samples, sample_notes = read_checked_table(folder, "samples.csv", records, text=True, missing_ok=True)
    if cells is None and not records:
        if damaged:
            raise HarnessError(next(iter(damaged.values())))
        raise HarnessError(f"{folder}: not a results folder (no cells.csv and no cells/*.json)")
    if cells is None:
        # A run stopped before its first table was written: the records are the source of truth.
        made = frames_from_records(records)
        cells = made[0]
        epochs = epochs if epochs is not None else made[1]
        samples = samples if samples is not None else made[2]
        cell_notes = [f"{len(records)} cells were read from cells/*.json only (cells.csv is missing)."]
    known = set(cells["cell_id"].astype(str)) if "cell_id" in cells else set()
    for cell_id, problem in damaged.items():
        notes.append(f"{problem}: " + ("its row of cells.csv is used as it is." if cell_id in known
                                       else "the cell is left out."))
    notes += cell_notes + epoch_notes + sample_notes
    if epochs is None:
        notes.append("epochs.csv is missing: no learning curves and no equal-time comparison.")
    if samples is None:
        notes.append("samples.csv is missing: no generated text.")
    if cells.empty:
        raise HarnessError(f"{folder}: cells.csv holds no cells")
    machine = run.get("machine") if isinstance(run.get("machine"), dict) else {}
    cells = fill_flops_utilization(cells, run.get("calibration"), machine.get("hostname"))
    missing = [c for c in ("cell_id", "status") + GRID_KEYS if c not in cells]
    if missing:
        raise HarnessError(f"{folder / 'cells.csv'}: missing columns {', '.join(missing)}")
    return RunData(folder, run, cells, epochs if epochs is not None else pd.DataFrame(),
                   samples if samples is not None else pd.DataFrame(), notes)


def fill_flops_utilization(cells: pd.DataFrame, calibration, hostname: str | None = None) -> pd.DataFrame:
    """``cells`` with ``flops_utilization`` computed from ``flops_per_sec`` and run.json's calibration when the
    results predate that column. A column that is present is kept as recorded: its empty values are cells
    that ran on another host than the calibrated one (Ray). Only cells that ran on ``hostname`` (run.json's
    machine, when the cells record theirs) are computed."""
    if "flops_utilization" in cells or "flops_per_sec" not in cells or "device" not in cells \
            or not device_rates(calibration):
        return cells
    threads = cells["threads"] if "threads" in cells else pd.Series(None, index=cells.index, dtype=object)
    rates = [device_rate(calibration, str(device), None if pd.isna(count) else int(count))
             for device, count in zip(cells["device"], pd.to_numeric(threads, errors="coerce"))]
    computed = pd.to_numeric(cells["flops_per_sec"], errors="coerce") / pd.Series(rates, index=cells.index, dtype=float)
    if hostname and "hostname" in cells:
        computed = computed.where(cells["hostname"].astype(str) == str(hostname))
    return cells.assign(flops_utilization=computed)


def claim_specs(run: dict, where: str) -> tuple[list, str]:
    """The claims the suite declared, or the lesson's three when it declared none."""
    raw = (run.get("suite") or {}).get("claims") if isinstance(run.get("suite"), dict) else None
    specs = parse_claims(raw, where) if raw else []
    if specs:
        return specs, "The claims are those the suite declares."
    return claims_mod.default_claims(), ("The suite declares no claims, so the lesson's three are tested with "
                                         "default parameters.")


# --- formatting -----------------------------------------------------------------------------------------


def _parse_time(text) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


# --- tables ---------------------------------------------------------------------------------------------


def _status_counts(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    order = [s for s in STATUSES if s in counts] + [s for s in counts.index if s not in STATUSES]
    return ", ".join(f"{s} {int(counts[s])}" for s in order)


def fmt_geo_ci(values, digits: int = 4) -> str:
    """Geometric mean over seeds of positive values with its 95% interval computed on the log scale (just
    the mean for one seed): never an impossible bound below zero."""
    mean, low, high = log_interval(list(values))
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(low):
        return sig(mean, digits)
    shown = 3
    while shown < 7 and sig(low, shown) == sig(high, shown):  # seeds that agree closely: more digits
        shown += 1
    if sig(low, shown) == sig(high, shown):
        return f"{sig(mean, digits)} (seeds equal)"  # no interval of zero width
    return f"{sig(mean, max(digits, shown))} [{sig(low, shown)}, {sig(high, shown)}]"


def _status_counts(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    order = [s for s in STATUSES if s in counts] + [s for s in counts.index if s not in STATUSES]
    return ", ".join(f"{s} {int(counts[s])}" for s in order)


def configuration_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: geometric mean over finished seeds [95% interval on the log scale]."""
    keys = configuration_keys(cells)
    numeric = ("params", "flops_per_epoch", "train_ppl", "val_ppl", "causal_ppl", "sec_per_epoch",
               "flops_utilization", "peak_mem_bytes")
    frame = cells.copy()
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    rows = []
    for key, group in frame.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok = group[group["status"] == "ok"]
        finite = {c: ok[c][np.isfinite(ok[c])] for c in numeric}
        row = {k: fmt(v) for k, v in zip(keys, key)}
        row.update({
            "seeds ok": f"{len(ok)}/{len(group)}",
            "params": fmt(finite["params"].median() if len(finite["params"]) else math.nan),
            "FLOPs/epoch": fmt(finite["flops_per_epoch"].median() if len(finite["flops_per_epoch"]) else math.nan, 3),
            "train ppl": fmt_geo_ci(finite["train_ppl"]),
            "teacher-forced ppl": fmt_geo_ci(finite["val_ppl"]),
            "causal ppl": fmt_geo_ci(finite["causal_ppl"]),
            "s/epoch": fmt_geo_ci(finite["sec_per_epoch"], 3),
            "FLOP util. (%)": fmt_geo_ci(finite["flops_utilization"] * 100, 3),
            "peak mem (MiB)": fmt_geo_ci(finite["peak_mem_bytes"] / MIB, 3),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def learning_table(ok: pd.DataFrame, baselines: dict | None) -> pd.DataFrame:
    """The finished cells that did not learn: best held-out causal perplexity not below the unigram baseline."""
    if ok.empty or "learned" not in ok or baselines is None:
        return pd.DataFrame()
    bad = ok[ok["learned"] == False]  # noqa: E712 - NaN (no baseline) is neither
    return pd.DataFrame({"cell": bad["cell_id"].astype(str),
                         "best causal ppl": [fmt(v) for v in bad["best_causal_ppl"]],
                         "final causal ppl": [fmt(v) for v in bad["causal_ppl"]],
                         "final training ppl": [fmt(v) for v in bad["train_ppl"]]})


def learning_sentence(ok: pd.DataFrame, baselines: dict | None, note: str) -> str:
    if baselines is None:
        return f"No-learning baselines unavailable ({note}): every comparison counts."
    text = (f"No-learning baselines of the held-out text ({fmt(baselines.get('tokens'))} characters; counted on "
            f"the training split, add-one smoothed): uniform {fmt(baselines['uniform'], 3)}, unigram (letter "
            f"frequencies) {fmt(baselines['unigram'], 3)}, bigram {fmt(baselines['bigram'], 3)}. ")
    if ok.empty or "learned" not in ok:
        return text
    bad = ok[ok["learned"] == False]  # noqa: E712
    if bad.empty:
        return text + f"Every one of the {len(ok)} finished cells learned (best held-out causal perplexity below the unigram baseline)."
    names = ", ".join(bad["cell_id"].astype(str).head(12)) + (" ..." if len(bad) > 12 else "")
    return text + (f"{len(bad)} of {len(ok)} finished cells did not learn (best held-out causal perplexity not "
                   f"below the unigram baseline): {names}.")


def claims_summary(results: list[ClaimResult]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": r.title, "verdict": r.verdict,
                          "pooled effect [95% CI]": claim_wording.effect_text(r),
                          "in one sentence": claim_wording.summary_sentence(r)} for r in results])


def pooled_table(table: pd.DataFrame, confidence: float) -> pd.DataFrame:
    if table.empty:
        return table
    return pd.DataFrame({
        "measure": claim_wording.measure_labels(table), "cells": table["cells"],
        "configurations": [f"{k} of {n}" for k, n in zip(table["pooled_configurations"], table["configurations"])],
        f"ratio [{confidence:.0%} CI]": [claim_wording.ratio_text(r, lo, hi) for r, lo, hi
                                          in zip(table["ratio"], table["ci_low"], table["ci_high"])],
        "I²": [f"{v:.0%}" if math.isfinite(v) else "-" for v in table["i2"]],
        "spread between configurations": [f"x{v:.3g}" if math.isfinite(v) else "-" for v in table["tau_factor"]],
        "sign test p": [fmt(v, 2) for v in table["sign_p"]],
    })


def evidence_table(evidence: pd.DataFrame, spec: ClaimSpec) -> pd.DataFrame:
    """Per-configuration rows of ``spec``'s claim: context, comparison, seeds, the two sides, the ratio with
    its interval."""
    if evidence.empty:
        return pd.DataFrame()
    base = {"comparison", "metric", "basis", "role", "seeds", "pairing", "reference", "compared", "ratio",
            "ci_low", "ci_high", "log_effect", "log_se", "bounded", "learned_reference", "learned_compared",
            "counted", "outcome", "bearing", "flops_ratio"}
    context = [c for c in evidence.columns if c not in base]
    rows = []
    for _, row in evidence.iterrows():
        scale, unit = (MIB, " MiB") if row["metric"] == "peak_mem_bytes" else (1, "")
        out = {c: fmt(row[c]) for c in context}
        out.update({
            "comparison": row["comparison"],
            "measure": claim_wording.SHORT_LABELS.get(row["metric"], row["metric"]),
            "seeds": f"{int(row['seeds'])}" + (" (unpaired)" if row["pairing"] == "unpaired" else ""),
            "reference": fmt(row["reference"] / scale, 4) + (unit if math.isfinite(row["reference"]) else ""),
            "compared": fmt(row["compared"] / scale, 4) + (unit if math.isfinite(row["compared"]) else ""),
            f"ratio [{spec.confidence:.0%} CI]": claim_wording.ratio_text(row["ratio"], row["ci_low"], row["ci_high"])
            + (" †" if row["bounded"] else ""),
        })
        if "flops_ratio" in row and math.isfinite(row.get("flops_ratio", math.nan)):
            out["FLOPs ratio"] = f"x{row['flops_ratio']:.3g}"
        out["outcome"] = claim_wording.outcome_text(row["outcome"], spec.min_seeds)
        rows.append(out)
    return pd.DataFrame(rows)


def machine_label(node: str) -> str:
    """``host|cpu|gpu`` (the ``node`` column of Ray runs) as ``host: cpu, gpu``."""
    host, cpu, gpu = (str(node).split("|") + ["", "", ""])[:3]
    return f"{host}: {cpu or '?'}" + (f", {gpu}" if gpu else "")


def cell_machines(cells: pd.DataFrame) -> pd.Series:
    """Per cell, the machine it ran on as ``host|cpu|gpu``: a Ray run's ``node`` column, else the cell's own
    ``hostname``, ``cpu_model`` and ``gpu_name`` (a run resumed elsewhere has cells of two machines); empty
    where not recorded."""
    def column(name):
        return claims_mod.text_column(cells, name)

    own = column("hostname") + "|" + column("cpu_model") + "|" + column("gpu_name")
    node = column("node")
    label = node.where(node != "", own)
    if "device" in cells:
        # A machine is its host and CPU; its GPU names it only for the cells that used it (a node's label
        # carries its GPU for every cell, a cell's own record only for CUDA cells).
        parts = label.str.split("|", n=2, expand=True).reindex(columns=range(3)).fillna("")
        gpu = parts[2].where(column("device") == "cuda", "")
        label = parts[0] + "|" + parts[1] + "|" + gpu
    return label.where(label.str.strip("|") != "", "")


def run_machines(cells: pd.DataFrame) -> list[str]:
    """The machines the cells ran on (``cell_machines``); empty when not recorded."""
    return sorted({m for m in cell_machines(cells) if m})


def timings_by_machine(cells: pd.DataFrame) -> pd.DataFrame:
    """Epoch time and throughput per machine and configuration (geometric mean with its 95% interval over
    that machine's finished seeds). Empty unless the cells ran on more than one machine: timings are never pooled across
    machines silently."""
    if len(run_machines(cells)) < 2:
        return pd.DataFrame()
    keys = configuration_keys(cells)
    frame = cells.assign(machine_label=cell_machines(cells))
    frame = frame[frame["machine_label"] != ""].copy()
    for column in ("sec_per_epoch", "tokens_per_sec"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    rows = []
    for key, group in frame.groupby(["machine_label", *keys], dropna=False, sort=True):
        ok = group[group["status"] == "ok"]
        sec, rate = ok["sec_per_epoch"], ok["tokens_per_sec"]
        row = {"machine": machine_label(key[0])}
        row.update({k: fmt(v) for k, v in zip(keys, key[1:])})
        row.update({"seeds ok": f"{len(ok)}/{len(group)}",
                    "s/epoch": fmt_geo_ci(sec[np.isfinite(sec)], 3),
                    "tokens/s": fmt_geo_ci(rate[np.isfinite(rate)], 3)})
        rows.append(row)
    return pd.DataFrame(rows)


def status_table(cells: pd.DataFrame) -> pd.DataFrame:
    bad = cells[cells["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame()
    reasons = bad["reason"].fillna("") if "reason" in bad else pd.Series("", index=bad.index)
    return pd.DataFrame({
        "cell": bad["cell_id"].astype(str),
        "status": bad["status"].astype(str),
        "epochs done": [fmt(v) for v in pd.to_numeric(bad.get("epochs_done", pd.Series(np.nan, index=bad.index)),
                                                      errors="coerce")],
        "reason": [" ".join(str(r).split())[:200] for r in reasons],
    })


def visible_spaces(text: str) -> str:
    """Show the spaces a page would swallow (leading, trailing, or two and more in a row) as '␣'."""
    marked = re.sub(r" {2,}", lambda m: "␣" * len(m.group()), text)
    marked = re.sub(r"^ | $", "␣", marked)
    return marked


def samples_table(samples: pd.DataFrame, cells: pd.DataFrame, words: set[str] | None) -> pd.DataFrame:
    """Generated text of each configuration's lowest finished seed, with its measured quality."""
    if samples.empty or "cell_id" not in samples:
        return pd.DataFrame()
    ok = ok_cells(cells)
    if ok.empty:
        return pd.DataFrame()
    keys = configuration_keys(ok)
    first = ok.sort_values("seed").groupby(keys, dropna=False, sort=True).head(1)
    order = {cid: i for i, cid in enumerate(first.sort_values(keys)["cell_id"])}
    chosen = samples[samples["cell_id"].isin(set(first["cell_id"]))]
    chosen = chosen.assign(_order=chosen["cell_id"].map(order)).sort_values(["_order", "prefix"])
    rows = []
    for row in chosen.itertuples():
        prefix = row.prefix if isinstance(row.prefix, str) else ""
        generated = text_measures.generated_part(row.text if isinstance(row.text, str) else "", prefix)
        m = text_measures.measure(generated, words)
        rows.append({"cell": str(row.cell_id), "prefix": prefix, "generated": visible_spaces(generated),
                     "words in book": f"{m['word_share']:.0%}" if math.isfinite(m["word_share"]) else "n/a",
                     "distinct words": f"{m['distinct_share']:.0%}", "compression": f"{m['compression']:.2f}",
                     "longest repeat": fmt(m["longest_repeat"]),
                     "degenerate": "yes" if m["degenerate"] else "no"})
    return pd.DataFrame(rows)


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
    command = run.get("command")
    if isinstance(command, list) and command:
        return shlex.join(str(c) for c in command)
    if isinstance(command, str) and command:
        return command
    return "(not recorded in run.json)"


# --- document ---------------------------------------------------------------------------------------------


def provenance(data: RunData, baselines_note: str) -> list[tuple[str, str]]:
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
                  + f" ({_status_counts(cells['status'])})"),
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


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-")


def suite_conditions(run: dict, where: str) -> list:
    """The conditions the suite declared (``harness.analysis.conditions``), none when it declared none."""
    from harness.spec.claims import parse_conditions
    from harness.spec.suite import _field_for_axis

    raw = (run.get("suite") or {}).get("conditions") if isinstance(run.get("suite"), dict) else None
    return parse_conditions(raw, where, _field_for_axis) if raw else []


def condition_description(spec) -> str:
    where = ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in spec.where) or "all cells"
    return where + (f"; {spec.choose} chosen per configuration" if spec.choose else "")


def planned_frame(run: dict) -> pd.DataFrame | None:
    """The run's planned cells (run.json's ``cells``) with their configuration as cells.csv has it, from
    the suite it recorded; None when that suite no longer expands to every one of them (an older or damaged
    run.json, or cell ids that changed since)."""
    from harness.results.run_folder import config_row
    from harness.spec.suite import expand, recorded_suite

    try:
        grid = expand(recorded_suite(run.get("suite") or {}, "run.json"))
    except (HarnessError, AttributeError, TypeError, ValueError):
        return None
    wanted = {str(c) for c in run.get("cells") or []}
    rows = [config_row(c.cell_id, c.config.model_dump(mode="json")) for c in grid if c.cell_id in wanted]
    return pd.DataFrame(rows) if rows and len(rows) == len(wanted) else None


def conditions_table(conditions: list, claim_index: int, complete: bool = True,
                     planned: pd.DataFrame | None = None) -> pd.DataFrame:
    """One claim under each condition: its verdict and pooled effect, and whether the verdict is the
    first condition's (the reference). ``complete``: the run has trained every planned cell. A condition with
    nothing to compare in an unfinished run may still get something ("yet") unless ``planned`` (the run's
    planned cells) shows the suite plans no cells for one side of the claim there."""
    from harness.analysis.conditions import can_compare

    def compared(result) -> int:
        return result.pooled.k if result.pooled is not None else 0

    claim = conditions[0].results[claim_index].spec if conditions else None
    # The reference's side once for all conditions: when it can never compare, nothing is still to come.
    reference_can = planned is not None and claim is not None and can_compare(planned, conditions[0].spec, claim)

    def pending(condition) -> bool:
        return not complete and (planned is None or (reference_can and can_compare(planned, condition.spec, claim)))

    rows = []
    first = conditions[0].results[claim_index] if conditions else None
    for i, condition in enumerate(conditions):
        result = condition.results[claim_index]
        if i == 0:
            versus = "reference"
        elif not compared(result) or not compared(first):
            # No configuration on one side: no verdict to hold or change.
            versus = "nothing to compare" + (" yet" if pending(condition) else "")
        else:
            versus = "same" if result.verdict == first.verdict else f"changes ({first.verdict} -> {result.verdict})"
        rows.append({"condition": condition.spec.name, "cells": condition.cells, "configurations": compared(result),
                     "verdict": result.verdict, "pooled effect [95% CI]": claim_wording.effect_text(result),
                     "verdict vs the first": versus})
    return pd.DataFrame(rows)


def chosen_table(condition) -> pd.DataFrame:
    """A choose condition's choice per configuration: each value's score (geometric mean over seeds)."""
    table = condition.chosen
    if table.empty:
        return table
    keys = [k for k in table.columns if k not in ("chosen", "scores", "seeds")]
    key = condition.spec.choose
    values = sorted({v for scores in table["scores"] for v in scores}, key=lambda v: (str(type(v)), v))
    rows = []
    for _, row in table.iterrows():
        out = {k: row[k] for k in keys}
        out[f"chosen {key}"] = row["chosen"]
        for v in values:
            score = row["scores"].get(v, math.nan)
            out[f"{key} {v}"] = f"{fmt(score)} ({row['seeds'].get(v, 0)})" if math.isfinite(score) else "-"
        rows.append(out)
    return pd.DataFrame(rows)


def depth_profile_table(profile: pd.DataFrame) -> pd.DataFrame:
    """The condition figure's numbers: per condition and cell type (in the figure's order), each depth's
    geometric mean over seeds with the lowest and highest seed and the number of seeds."""
    from harness.report.figures import CELL_MARKERS

    if profile is None or profile.empty:
        return pd.DataFrame()
    depths = sorted(int(n) for n in profile["layers"].unique())
    conditions = list(dict.fromkeys(profile["condition"]))  # in the suite's order
    cell_order = list(CELL_MARKERS)

    def order(item):
        (condition, cell), _ = item
        return conditions.index(condition), cell_order.index(cell) if cell in cell_order else len(cell_order), str(cell)

    def ppl(value) -> str:  # two decimals: a character model's perplexity lies between 1 and the alphabet's size
        return f"{value:.2f}" if math.isfinite(value) else fmt(value)

    def shown(point) -> str:
        seeds = int(point["seeds"])
        low, high = ppl(point["low"]), ppl(point["high"])
        return f"{ppl(point['ppl'])} ({f'{low}-{high}, ' if low != high else ''}{seeds} seed{'s' if seeds != 1 else ''})"

    rows = []
    for (condition, cell), group in sorted(profile.groupby(["condition", "cell"], sort=False), key=order):
        row = {"condition": condition, "cell": cell}
        for n in depths:
            point = group[group["layers"] == n]
            row[f"{n} layer{'s' if n != 1 else ''}"] = shown(point.iloc[0]) if not point.empty else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def repeated_claims(results: list) -> list[bool]:
    """Per claim result, whether an earlier one checked the same claim (on another metric). Those draw the
    same configurations again: their figure and by-condition table are folded, so the page stays readable."""
    names = [result.spec.name for result in results]
    return [name in names[:index] for index, name in enumerate(names)]


def condition_blocks(conditions: list, figures: dict, complete: bool = True,
                     planned: pd.DataFrame | None = None, profile: pd.DataFrame | None = None) -> list[tuple]:
    if not conditions:
        return []
    blocks: list[tuple] = [("h2", "Under each condition")]
    blocks.append(("p", "Every claim again on the subsets of the cells the suite declares as conditions; the first "
                        "condition is the reference, and each other one says whether its verdict is the same. A "
                        "chosen setting is chosen per configuration on the selection text (never on the held-out "
                        "text that decides the claims) unless the cells had none."))
    blocks.append(("table", pd.DataFrame([{"condition": c.spec.name, "subset": condition_description(c.spec),
                                            "cells trained": c.cells} for c in conditions])))
    if figures.get("condition_depth") is not None:
        from harness.report.figures import FIGURES as FIGURE_CAPTIONS

        blocks.append(("figure", f"figures/{figures['condition_depth'].name}", FIGURE_CAPTIONS["condition_depth"]))
    numbers = depth_profile_table(profile)
    if not numbers.empty:
        selected = "at the epoch chosen on selection text"
        best = "at the best held-out evaluation"
        metrics = set(profile["metric"])
        when = selected if metrics == {SELECTED_METRIC} else best if metrics == {BEST_METRIC} else \
            f"{selected} (in conditions whose cells had no selection text: {best})"
        blocks.append(("details", "The depth figure's numbers",
                       [("p", f"The unidirectional cells' held-out causal perplexity {when}: geometric mean over "
                              "seeds (lowest to highest seed, number of seeds)."), ("table", numbers)]))
    results = conditions[0].results
    for index, (result, repeated) in enumerate(zip(results, repeated_claims(results))):
        table = ("table", conditions_table(conditions, index, complete, planned))
        if repeated:
            blocks.append(("details", f"{result.title}, by condition", [table]))
        else:
            blocks += [("h3", f"{result.title}, by condition"), table]
    for condition in conditions:
        if condition.spec.choose and not condition.chosen.empty:
            blocks.append(("details", f"{condition.spec.name}: the {condition.spec.choose} chosen per configuration",
                           [("p", f"Chosen on the {condition.chosen_on}: per configuration, each value's "
                                  + ("selection perplexity" if condition.chosen_on == "selection text" else
                                     "best held-out causal perplexity")
                                  + " (geometric mean over seeds, with the number of seeds); the lowest is chosen."),
                            ("table", chosen_table(condition))]))
    return blocks


def build_blocks(data: RunData, results: list[ClaimResult], claims_origin: str, figures: dict,
                 words: set[str] | None, words_note: str, ok: pd.DataFrame, baselines: dict | None,
                 baselines_note: str, timing_notes: list[str], conditions: list | None = None,
                 profile: pd.DataFrame | None = None) -> list[tuple]:
    suite = data.run.get("suite") or {}
    blocks: list[tuple] = [("h1", f"Report: {suite.get('name') or data.folder.name}")]
    blocks.append(("p", f"Results folder `{data.folder.name}`. {claims_origin} Each verdict follows from one pooled "
                        "ratio across configurations with its 95% interval (details: each claim's section)."))
    missing = unfinished_cells(data.run, data.cells)
    if missing:
        blocks.append(("p", f"Preliminary: {planned_cells(data.run) - missing} of the run's {planned_cells(data.run)} "
                            f"cells have finished and {missing} are still to train; the verdicts rest on the "
                            "finished ones and may change when the run is complete."))
    blocks.append(("summary", claims_summary(results)))
    blocks.append(("facts", provenance(data, baselines_note)))
    for note in data.notes + timing_notes:
        blocks.append(("p", f"Note: {note}"))
    sections = [(r.title, slug(r.title)) for r in results] + (
        [("Under each condition", "under-each-condition")] if conditions else []) + [
        ("Learning", "learning"), ("Cost", "cost"), ("Generated text", "generated-text"), ("Appendix", "appendix")]
    blocks.append(("toc", sections))

    for index, (result, repeated) in enumerate(zip(results, repeated_claims(results))):
        blocks.append(("h2", result.title))
        reason = claim_wording.reason(result)
        blocks.append(("verdict", result.verdict, f"{reason[0].upper()}{reason[1:]}." if reason else ""))
        path = figures.get(f"forest_{index}")
        if path is not None:
            figure = ("figure", f"figures/{path.name}",
                      f"{result.title}: each configuration's ratio with its {result.spec.confidence:.0%} "
                      "interval (hollow: not counted), the pooled ratios (diamonds), no effect (grey) and the "
                      "claim's threshold (dashed).")
            blocks.append(("details", f"{result.title}: figure", [figure]) if repeated else figure)
        blocks.append(("table", pooled_table(result.pooled_table, result.spec.confidence)))
        params = ", ".join(f"{k} = {'/'.join(v) if isinstance(v, list) else v}"
                           for k, v in result.spec.to_dict().items() if k != "name")
        method = result.pooled_table["method"].iloc[0] if not result.pooled_table.empty else "-"
        blocks.append(("p", " ".join([*claim_wording.notes(result), f"Pooling: {method}. Parameters: {params}."])))
        folded = []
        if not result.deciding.empty:
            folded.append(("table", evidence_table(result.deciding, result.spec)))
        if not result.context_table.empty:
            context = result.evidence[result.evidence["role"] == "context"]
            folded += [("p", f"{result.title}, other measures: pooled, then per configuration."),
                       ("table", pooled_table(result.context_table, result.spec.confidence)),
                       ("table", evidence_table(context, result.spec))]
        if folded:
            blocks.append(("details", f"{result.title}: every configuration and other measures", folded))

    blocks += condition_blocks(conditions or [], figures, complete=not missing,
                               planned=planned_frame(data.run) if missing and conditions else None, profile=profile)

    blocks.append(("h2", "Learning"))
    blocks.append(("p", learning_sentence(ok, baselines, baselines_note)))
    for name in ("heldout_curves", "train_vs_heldout"):
        if figures.get(name) is not None:
            blocks.append(("figure", f"figures/{figures[name].name}", FIGURES[name]))
    not_learned = learning_table(ok, baselines)
    if not not_learned.empty:
        blocks.append(("details", "Cells that did not learn", [("table", not_learned)]))

    blocks.append(("h2", "Cost"))
    for name in ("slowdown_heatmap", "seconds_per_epoch"):
        if figures.get(name) is not None:
            blocks.append(("figure", f"figures/{figures[name].name}", FIGURES[name]))
    if not any(figures.get(n) for n in ("slowdown_heatmap", "seconds_per_epoch")):
        blocks.append(("p", "No timings to show."))
    by_machine = timings_by_machine(data.cells)
    if not by_machine.empty:
        blocks.append(("details", "Timings by machine", [
            ("p", "The cells ran on several machines; timings are compared only within a machine."),
            ("table", by_machine)]))

    blocks.append(("h2", "Generated text"))
    samples = samples_table(data.samples, data.cells, words)
    if samples.empty:
        blocks.append(("p", "No generated samples in this run."))
    else:
        blocks.append(("p", "Greedy generation of each configuration's lowest finished seed, after the prompt. "
                            "Words in book: share of generated words (the cut-off last one left out) found in the "
                            "training text" + ("" if words else f" (unavailable: {words_note})") + "; distinct "
                            "words: distinct over all; compression: deflate bytes per character (repetition at any "
                            "period compresses well); longest repeat: longest substring occurring twice. '␣' marks "
                            "spaces a page would not show."))
        blocks.append(("details", "Samples", [("table", samples)]))

    blocks.append(("h2", "Appendix"))
    blocks.append(("details", "Every configuration (geometric mean over seeds [95% interval])",
                   [("table", configuration_table(data.cells))]))
    status = status_table(data.cells)
    blocks.append(("details", "Cells that did not finish",
                   [("table", status) if not status.empty else ("p", "Every cell finished.")]))
    blocks.append(("p", "Reproduce:"))
    blocks.append(("code", reproduce_command(data.run)))
    return blocks


def _md_cell(value) -> str:
    return html.escape(str(value).replace("|", "\\|").replace("\n", " "), quote=False)


def _md_text(text: str) -> str:
    """Text from a run (a suite's description, a reason) shown as text by Markdown renderers that would
    otherwise pass HTML through."""
    return html.escape(text, quote=False)


def _md_table(frame: pd.DataFrame) -> str:
    table = frame.map(_md_cell) if not frame.empty else frame
    return tabulate(table, headers=[_md_cell(c) for c in frame.columns], tablefmt="github", showindex=False,
                    disable_numparse=True)


def render_markdown(blocks: list[tuple]) -> str:
    out, appendix = [], []

    def render(block, sink):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            sink.append("#" * int(kind[1]) + " " + _md_text(block[1]))
        elif kind == "p":
            sink.append(_md_text(block[1]))
        elif kind == "verdict":
            sink.append(f"**Verdict: {block[1]}.** {_md_text(block[2])}")
        elif kind in ("table", "summary"):
            sink.append(_md_table(block[1]))
        elif kind == "facts":
            sink.append("\n".join(f"- **{k}**: {_md_text(v)}" for k, v in block[1]))
        elif kind == "toc":
            sink.append("Contents: " + " · ".join(f"[{t}](#{a})" for t, a in block[1]))
        elif kind == "figure":
            sink.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
        elif kind == "code":
            sink.append(f"```bash\n{block[1]}\n```")
        elif kind == "details":
            # Folded away in HTML; in Markdown moved to the end, so that the answer reads first.
            heading = f"Appendix: {block[1]}"
            sink.append(f"Details: [{block[1]}](#{slug(heading)}).")
            appendix.append("### " + _md_text(heading))
            for inner in block[2]:
                render(inner, appendix)

    for block in blocks:
        render(block, out)
    return "\n\n".join(out + appendix) + "\n"


_CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1100px; margin: 1em auto;
       padding: 0 0.8em; color: #222; line-height: 1.4; font-size: 15px; }
h1 { font-size: 1.45em; margin: 0.3em 0; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.84em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.45em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.summary td { font-size: 1.05em; } table.summary td:nth-child(3) { white-space: nowrap; }
table.summary td:last-child { min-width: 16em; }
@media (max-width: 720px) {  /* the answers stacked, one card per claim, rather than scrolled sideways */
  table.summary thead { display: none; }
  table.summary, table.summary tbody, table.summary tr, table.summary td { display: block; min-width: 0; }
  table.summary tr { border: 1px solid #ccc; margin-bottom: 0.5em; } table.summary td { border: none; }
  table.summary td:first-child { font-weight: bold; }
}
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
ul.facts { font-size: 0.85em; padding-left: 1.2em; margin: 0.5em 0; } ul.facts li { overflow-wrap: anywhere; }
nav { font-size: 0.9em; margin: 0.6em 0; } nav a { margin-right: 0.8em; }
details { margin: 0.5em 0; } summary { cursor: pointer; color: #0453a0; }
p { overflow-wrap: anywhere; }
.verdict { font-weight: bold; padding: 0.05em 0.45em; border-radius: 0.3em; white-space: nowrap; }
.supported { background: #d4edda; } .not-supported { background: #f8d7da; } .inconclusive { background: #fff3cd; }
"""


def _inline_html(text: str) -> str:
    """Escape, then show `code` spans as in the Markdown."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _verdict_span(verdict: str) -> str:
    return f'<span class="verdict {verdict.replace(" ", "-")}">{html.escape(verdict)}</span>'


def _html_table(frame: pd.DataFrame, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            text = _verdict_span(str(value)) if column == "verdict" else html.escape(str(value))
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table{f" class={chr(34)}{css}{chr(34)}" if css else ""}><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>")


def render_html(blocks: list[tuple], folder: Path, title: str) -> str:
    def render(block) -> str:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            return f'<{kind} id="{slug(block[1])}">{html.escape(block[1])}</{kind}>'
        if kind == "p":
            return f"<p>{_inline_html(block[1])}</p>"
        if kind == "verdict":
            return f"<p>{_verdict_span(block[1])} {html.escape(block[2])}</p>"
        if kind == "summary":
            return _html_table(block[1], "summary")
        if kind == "table":
            return _html_table(block[1])
        if kind == "facts":
            return '<ul class="facts">' + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                                                  for k, v in block[1]) + "</ul>"
        if kind == "toc":
            return "<nav>Contents: " + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for t, a in block[1]) + "</nav>"
        if kind == "figure":
            data = base64.b64encode((folder / block[1]).read_bytes()).decode("ascii")
            caption = html.escape(block[2])
            return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}" loading="lazy">'
                    f"<figcaption>{caption}</figcaption></figure>")
        if kind == "code":
            return f"<pre><code>{html.escape(block[1])}</code></pre>"
        if kind == "details":
            inner = "\n".join(render(b) for b in block[2])
            return f'<details id="{slug("Appendix: " + block[1])}"><summary>{html.escape(block[1])}</summary>\n{inner}\n</details>'
        return ""

    body = [render(b) for b in blocks]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# --- entry point -----------------------------------------------------------------------------------------


def default_out_dir(run_dir) -> Path:
    return Path("report") / Path(run_dir).resolve().name


TIMING_COLUMNS = ("sec_per_epoch", "sec_per_epoch_iqr", "tokens_per_sec", "flops_per_sec", "flops_utilization")


def apply_timings(data: RunData, timing_dirs) -> tuple[RunData, list[str], tuple[list[str], dict[str, str]]]:
    """``data`` with each cell's timings taken from the timing runs (matched by cell id: the same cell
    type, depth, direction, device and seed), epoch times in ``epochs`` scaled to match; the conditions
    to state; and the timing runs' own flags (run-level, per cell). Cells without a timing keep none (their timings blank), so
    that timings of two conditions are never mixed silently."""
    if not timing_dirs:
        return data, [], ([], {})
    timings, sources, flags, flagged = [], [], [], {}
    for folder in timing_dirs:
        timing = load_run(folder)
        ok = timing.cells[timing.cells["status"] == "ok"]
        timings.append(ok)
        machine = (timing.run.get("machine") or {})
        epochs = pd.to_numeric(ok.get("epochs_done", pd.Series(dtype=float)), errors="coerce")
        sources.append(f"{timing.folder.name} ({len(ok)} cells, {fmt(epochs.median())} epochs each, on "
                       f"{machine.get('cpu_model', 'an unrecorded machine')}, {timing.run.get('started', '-')})")
        run_flags, cell_flags = timing_flags_of(timing)
        flags += [f"{timing.folder.name}: {w}" for w in run_flags]
        flagged.update(cell_flags)
    table = pd.concat(timings, ignore_index=True).drop_duplicates("cell_id", keep="last").set_index("cell_id")
    cells = data.cells.copy()
    before = pd.to_numeric(cells.get("sec_per_epoch"), errors="coerce")
    for column in TIMING_COLUMNS:
        if column in table:
            cells[column] = cells["cell_id"].map(pd.to_numeric(table[column], errors="coerce"))
    timed = cells["cell_id"].isin(table.index)
    for column in ("cpu_model", "hostname", "gpu_name", "node"):
        # Where a cell's timings come from the timing pass, so does the machine they were taken on.
        if column in table:
            cells[column] = cells["cell_id"].map(table[column]).where(timed, cells.get(column))
        elif column in cells:
            cells[column] = cells[column].where(~timed, None)
    missing = int((~cells["cell_id"].isin(table.index) & (cells["status"] == "ok")).sum())
    epochs = data.epochs.copy()
    if not epochs.empty and {"cell_id", "sec"} <= set(epochs.columns):
        factor = pd.Series((pd.to_numeric(cells["sec_per_epoch"], errors="coerce") / before).to_numpy(),
                           index=cells["cell_id"])
        epochs["sec"] = pd.to_numeric(epochs["sec"], errors="coerce") * epochs["cell_id"].map(factor)
    conditions = [f"Timings (seconds per epoch, and the epoch times behind equal-time comparisons, rescaled) "
                  f"come from a separate timing pass: {'; '.join(sources)}; the training run's own timings, taken "
                  "while other work shared the machine, are not used."]
    if missing:
        conditions.append(f"{missing} finished cells have no timing in the timing pass and no timings here.")
    return (RunData(data.folder, data.run, cells, epochs, data.samples, data.notes, trained=data.cells), conditions,
            (flags, flagged))


def build_report(run_dir, out_dir=None, timing_notes: list[str] | None = None, timing_dirs=()) -> Path:
    """Write ``index.md``, ``index.html`` and ``figures/*.png`` for a results folder into ``out_dir``
    (default ``report/<run folder name>/``) and return that folder. ``timing_dirs``: results folders of
    quiet timing passes whose timings replace the run's own."""
    from harness.analysis.conditions import depth_profile, evaluate_conditions
    from harness.report.figures import condition_depth, forest_plot, make_figures

    data = load_run(run_dir)
    own_flags, own_cells = timing_flags_of(data)
    data, conditions, (timing_flags, timing_cells) = apply_timings(data, list(timing_dirs))
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Everything is drawn and written in a staging folder first, so that bad input or a crash leaves the
    # report already there whole; only a finished report replaces it.
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        figures_dir = stage / "figures"
        figures_dir.mkdir()
        specs, origin = claim_specs(data.run, f"{data.folder / 'run.json'}: suite")
        condition_specs = suite_conditions(data.run, f"{data.folder / 'run.json'}: suite")
        words, words_note = corpus_words(data.cells)
        baselines, baselines_note = run_baselines(table_splits(data.cells), data.run.get("baselines"),
                                                  recorded_corpus(data.cells)[2])
        warnings = list(timing_notes or []) + (timing_flags if timing_dirs else own_flags)
        flagged = timing_cells if timing_dirs else own_cells
        results = evaluate_claims(data.cells, data.epochs, data.samples, specs, words, baselines, warnings, flagged)
        ok = claims_mod.learning_status(data.cells, data.epochs, baselines)
        figures = make_figures(data.cells, data.epochs, baselines, figures_dir)
        for index, result in enumerate(results):
            figures[f"forest_{index}"] = forest_plot(result, figures_dir / f"forest_{index}.png")
        condition_results = evaluate_conditions(data.cells, data.epochs, data.samples, specs, condition_specs,
                                                corpus_words=words, baselines=baselines, timing_warnings=warnings,
                                                flagged_cells=flagged) if condition_specs else []
        profile = None
        if condition_results:
            profile = depth_profile(data.cells, data.epochs, condition_specs, baselines)
            figures["condition_depth"] = condition_depth(profile, baselines, figures_dir / "condition_depth.png")
        notes = conditions + [f"Timings unreliable: {w}." for w in warnings]
        if flagged:
            notes.append(f"The timings of {len(flagged)} of {len(data.cells)} cells are unreliable "
                         f"({'; '.join(sorted(set(flagged.values())))}) and left out of timing comparisons.")
        blocks = build_blocks(data, results, origin, figures, words, words_note, ok, baselines, baselines_note,
                              notes, condition_results, profile)
        write_text_atomic(stage / "index.md", render_markdown(blocks))
        write_text_atomic(stage / "index.html", render_html(blocks, stage, blocks[0][1]))
        publish_report(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def publish_report(stage: Path, out: Path) -> None:
    """Put a finished report (``stage``: figures/, index.md, index.html) in place of the one in ``out``. The
    old figures go as a whole (a figure this run cannot draw must not survive from an earlier report)."""
    old = out / "figures"
    if old.is_dir():
        old.rename(stage / "figures.old")
    elif old.exists():
        old.unlink()
    (stage / "figures").rename(old)
    for name in ("index.md", "index.html"):
        os.replace(stage / name, out / name)


def timing_flags_of(data: RunData) -> tuple[list[str], dict[str, str]]:
    """Why the whole run's timings are unreliable (the machine's speed moved), and which cells' own timings
    are (epoch times spread, a busy machine during the cell)."""
    from harness.analysis.timing_trust import flagged_cells, run_warnings

    try:
        return list(run_warnings(data.run)), flagged_cells(data.run, data.cells)
    except (KeyError, TypeError, ValueError):
        return [], {}
