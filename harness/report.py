"""Turn a results folder into a report: ``index.md`` (GitHub), ``index.html`` (self-contained) and figures.

The report is assembled once as a list of blocks (headings, paragraphs, tables, figures) and rendered
twice, so the Markdown and the HTML say the same thing. Whatever the run lacks (cells that did not
finish, one seed, one depth, no CUDA, no declared claims, no corpus file) is said in the report rather
than raised, as long as the folder holds cells at all.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from . import claims as claims_mod
from .claims import (ClaimResult, configuration_keys, evaluate_claims, ok_cells, parse_claims, sample_quality,
                     t_interval)
from .config import GRID_KEYS
from .errors import HarnessError
from .figures import FIGURES, MIB, make_figures
from .store import read_csv_table, write_text_atomic

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


def _cell_records(folder: Path) -> list[dict]:
    records = []
    for path in sorted((folder / "cells").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{path}: cannot read: {exc}") from None
        if isinstance(record, dict) and record.get("cell_id"):
            records.append(record)
    return records


def _frames_from_records(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """cells, epochs and samples rows rebuilt from cells/*.json records."""
    cells, epochs, samples = [], [], []
    for record in records:
        config = record.get("config") or {}
        flat = {**config, **{k: v for k, v in record.items() if k not in ("config", "epoch_log", "samples")}}
        if isinstance(flat.get("prefixes"), list):
            flat["prefixes"] = "|".join(flat["prefixes"])
        if isinstance(flat.get("node"), dict):  # as cells.csv writes it
            from .runner import node_label

            flat["node"] = node_label(flat["node"])
        cells.append(flat)
        keys = {k: flat.get(k) for k in GRID_KEYS}
        for row in record.get("epoch_log") or []:
            epochs.append({"cell_id": flat["cell_id"], **keys, **row})
        for sample in record.get("samples") or []:
            samples.append({"cell_id": flat["cell_id"], **keys, **sample})
    return pd.DataFrame(cells), pd.DataFrame(epochs), pd.DataFrame(samples)


def load_run(run_dir) -> RunData:
    """Read a results folder. Raises HarnessError when it is missing, unreadable or holds no cells."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise HarnessError(f"{folder}: no such results folder")
    notes = []
    run_json = folder / "run.json"
    run: dict = {}
    if run_json.is_file():
        try:
            run = json.loads(run_json.read_text())
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{run_json}: cannot read: {exc}") from None
        if not isinstance(run, dict):
            raise HarnessError(f"{run_json}: expected a JSON object")
    else:
        notes.append("run.json is missing: provenance unknown.")
    cells = read_csv_table(folder / "cells.csv", missing_ok=True)
    epochs = read_csv_table(folder / "epochs.csv", missing_ok=True)
    samples = read_csv_table(folder / "samples.csv", text=True, missing_ok=True)
    records = _cell_records(folder) if (folder / "cells").is_dir() else []
    if cells is None and not records:
        raise HarnessError(f"{folder}: not a results folder (no cells.csv and no cells/*.json)")
    cells = cells if cells is not None else pd.DataFrame()
    known = set(cells["cell_id"]) if "cell_id" in cells else set()
    extra = [r for r in records if r["cell_id"] not in known]
    if extra:
        # A run stopped between a cell's record and the CSV files: the records are the source of truth.
        more_cells, more_epochs, more_samples = _frames_from_records(extra)
        cells = pd.concat([cells, more_cells], ignore_index=True)
        epochs = pd.concat([epochs, more_epochs], ignore_index=True) if epochs is not None else more_epochs
        samples = pd.concat([samples, more_samples], ignore_index=True) if samples is not None else more_samples
        notes.append(f"{len(extra)} cells were read from cells/*.json only (missing from cells.csv).")
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


def calibrated_rates(calibration) -> dict[str, float]:
    """device -> calibrated matrix-product FLOP/s from run.json's ``calibration`` (devices without a rate left out)."""
    rates = {}
    for device, entry in (calibration or {}).items() if isinstance(calibration, dict) else ():
        rate = entry.get("flops_per_sec") if isinstance(entry, dict) else None
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) and rate > 0:
            rates[str(device)] = float(rate)
    return rates


def fill_flops_utilization(cells: pd.DataFrame, calibration, hostname: str | None = None) -> pd.DataFrame:
    """``cells`` with ``flops_utilization`` computed from ``flops_per_sec`` and run.json's calibration when the
    results predate that column. A column that is present is kept as recorded: its empty values are cells
    that ran on another host than the calibrated one (Ray). Only cells that ran on ``hostname`` (run.json's
    machine, when the cells record theirs) are computed."""
    rates = calibrated_rates(calibration)
    if "flops_utilization" in cells or "flops_per_sec" not in cells or "device" not in cells or not rates:
        return cells
    computed = pd.to_numeric(cells["flops_per_sec"], errors="coerce") / cells["device"].map(rates).astype(float)
    if hostname and "hostname" in cells:
        computed = computed.where(cells["hostname"].astype(str) == str(hostname))
    return cells.assign(flops_utilization=computed)


def corpus_words(cells: pd.DataFrame) -> tuple[set[str] | None, str]:
    """The words of the corpus the cells were trained on, cleaned as training cleaned them, or None
    and why not. Only $HARNESS_DATA_DIR and the cache are looked at: a report never downloads. A file
    whose SHA-256 differs from the recorded one is not used."""
    from .data import clean_lines, read_corpus_lines, resolve_corpus

    names = cells["corpus"].dropna() if "corpus" in cells else pd.Series(dtype=object)
    if names.empty:
        return None, "no corpus recorded in cells.csv"
    name = str(names.mode().iloc[0])
    try:
        path = resolve_corpus(name, offline=True)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        recorded = cells["corpus_sha256"].dropna() if "corpus_sha256" in cells else pd.Series(dtype=object)
        if not recorded.empty and digest not in set(recorded.astype(str)):
            return None, f"{path} differs from the text the cells were trained on (SHA-256 {digest[:12]})"
        strip = cells["strip_boilerplate"].dropna() if "strip_boilerplate" in cells else pd.Series(dtype=object)
        lines = read_corpus_lines(path, strip.empty or str(strip.iloc[0]).lower() in ("true", "1"))
    except (HarnessError, OSError) as exc:
        return None, f"corpus {name!r} unavailable ({str(exc).splitlines()[0]})"
    return claims_mod.corpus_word_set(clean_lines(lines)), f"{path}"


def claim_specs(run: dict, where: str) -> tuple[list, str]:
    """The claims the suite declared, or the lesson's three when it declared none."""
    raw = (run.get("suite") or {}).get("claims") if isinstance(run.get("suite"), dict) else None
    specs = parse_claims(raw, where) if raw else []
    if specs:
        return specs, "The claims are those the suite declares."
    return claims_mod.default_claims(), ("The suite declares no claims, so the lesson's three are tested with "
                                         "default parameters.")


# --- formatting -----------------------------------------------------------------------------------------


def _sig(value: float, digits: int) -> str:
    """Significant digits without scientific notation for large numbers (2,850 rather than 2.85e+03)."""
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt(value, digits: int = 4) -> str:
    """A number for a table: significant digits, thousands separators for integers, '-' for missing."""
    if value is None or (isinstance(value, str) and value == ""):
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v, digits)}" for k, v in value.items()) or "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return _sig(value, digits)
    return str(value)


def fmt_mean_ci(values, digits: int = 4) -> str:
    """Mean over seeds with the half-width of its 95% t-interval (just the mean for one seed)."""
    mean, low, high = t_interval(list(values))
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(low):
        return _sig(mean, digits)
    return f"{_sig(mean, digits)} ± {_sig((high - low) / 2, 2)}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min {secs} s"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _parse_time(text) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _bytes(value) -> str:
    try:
        return f"{float(value) / 1024**3:.1f} GiB"
    except (TypeError, ValueError):
        return "unknown"


# --- tables ---------------------------------------------------------------------------------------------


def _status_counts(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    order = [s for s in STATUSES if s in counts] + [s for s in counts.index if s not in STATUSES]
    return ", ".join(f"{s} {int(counts[s])}" for s in order)


def configuration_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration, seeds aggregated (mean ± 95% t half-width over finished seeds)."""
    keys = configuration_keys(cells)
    numeric = ("params", "flops_per_epoch", "train_ppl", "val_ppl", "causal_ppl", "sec_per_epoch",
               "tokens_per_sec", "flops_utilization", "peak_mem_bytes")
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
            "train ppl": fmt_mean_ci(finite["train_ppl"]),
            "val ppl (teacher-forced)": fmt_mean_ci(finite["val_ppl"]),
            "causal ppl": fmt_mean_ci(finite["causal_ppl"]),
            "s/epoch": fmt_mean_ci(finite["sec_per_epoch"], 3),
            "tokens/s": fmt_mean_ci(finite["tokens_per_sec"], 3),
            "FLOP util. (%)": fmt_mean_ci(finite["flops_utilization"] * 100, 3),
            "peak mem (MiB)": fmt_mean_ci(finite["peak_mem_bytes"] / MIB, 3),
            "status": _status_counts(group["status"]),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def machine_label(node: str) -> str:
    """``host|cpu|gpu`` (the ``node`` column of Ray runs) as ``host: cpu, gpu``."""
    host, cpu, gpu = (str(node).split("|") + ["", "", ""])[:3]
    return f"{host}: {cpu or '?'}" + (f", {gpu}" if gpu else "")


def run_machines(cells: pd.DataFrame) -> list[str]:
    """The machines the cells ran on, from the ``node`` column (Ray runs); empty when not recorded."""
    if "node" not in cells:
        return []
    return sorted({str(n) for n in cells["node"].dropna() if str(n)})


def timings_by_machine(cells: pd.DataFrame) -> pd.DataFrame:
    """Epoch time and throughput per machine and configuration (mean ± 95% t half-width over that machine's
    finished seeds). Empty unless the cells ran on more than one machine: timings are never pooled across
    machines silently."""
    if len(run_machines(cells)) < 2:
        return pd.DataFrame()
    keys = configuration_keys(cells)
    frame = cells[cells["node"].notna() & (cells["node"].astype(str) != "")].copy()
    for column in ("sec_per_epoch", "tokens_per_sec"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    rows = []
    for key, group in frame.groupby(["node", *keys], dropna=False, sort=True):
        ok = group[group["status"] == "ok"]
        sec, rate = ok["sec_per_epoch"], ok["tokens_per_sec"]
        row = {"machine": machine_label(key[0])}
        row.update({k: fmt(v) for k, v in zip(keys, key[1:])})
        row.update({"seeds ok": f"{len(ok)}/{len(group)}",
                    "s/epoch": fmt_mean_ci(sec[np.isfinite(sec)], 3),
                    "tokens/s": fmt_mean_ci(rate[np.isfinite(rate)], 3)})
        rows.append(row)
    return pd.DataFrame(rows)


def claims_table(results: list[ClaimResult]) -> pd.DataFrame:
    """One short row per claim; the numbers that decided are in the claim's own section."""
    return pd.DataFrame([{"claim": r.title, "verdict": r.verdict, "in short": r.short} for r in results])


def _effect_text(row) -> str:
    ratio = "/" in str(row["comparison"])
    effect, low, high = row["effect"], row["ci_low"], row["ci_high"]
    if not math.isfinite(effect):
        return "-"
    text = f"x{effect:.3g}" if ratio else f"{effect:+.3g}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{low:.3g}, {high:.3g}]" if ratio else f" [{low:+.3g}, {high:+.3g}]"
    return text


def evidence_table(evidence: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """An evidence frame formatted for reading: context, comparison, means, effect with its interval."""
    if evidence.empty:
        return pd.DataFrame()
    base = ["comparison", "metric", "basis", "n", "pairing", "mean_a", "mean_b", "effect", "ci_low", "ci_high",
            "outcome", "bearing"]
    context = [c for c in evidence.columns if c not in base]
    rows = []
    for _, row in evidence.iterrows():
        out = {c: fmt(row[c]) for c in context}
        scale, unit = (MIB, " MiB") if row["metric"] == "peak_mem_bytes" else (1, "")
        out.update({
            "comparison": row["comparison"],
            "measure": claims_mod.METRIC_LABELS.get(row["metric"], row["metric"]),
            "at equal": {"epochs": "epochs", "time": "training time", "samples": "-"}.get(row["basis"], row["basis"]),
            "seeds": f"{int(row['n'])} ({row['pairing']})",
            "reference": fmt(row["mean_a"] / scale) + (unit if math.isfinite(row["mean_a"]) else ""),
            "compared": fmt(row["mean_b"] / scale) + (unit if math.isfinite(row["mean_b"]) else ""),
            f"effect [{confidence:.0%} CI]": _effect_text(row),
            "outcome": row["outcome"],
        })
        rows.append(out)
    return pd.DataFrame(rows)


def deciding_rows(result: ClaimResult) -> pd.Series:
    """Which evidence rows decided the verdict (the others are context)."""
    evidence, spec = result.evidence, result.spec
    if evidence.empty:
        return pd.Series(dtype=bool)
    if spec.name == "depth_helps":
        return (evidence["metric"] == spec.metric) & (evidence["basis"] == spec.basis)
    return evidence["metric"] == spec.metric


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
    scored = sample_quality(samples[samples["cell_id"].isin(set(first["cell_id"]))], words)
    order = {cid: i for i, cid in enumerate(first.sort_values(keys)["cell_id"])}
    scored = scored.assign(_order=scored["cell_id"].map(order)).sort_values(["_order", "prefix"])
    return pd.DataFrame({
        "cell": scored["cell_id"].astype(str),
        "prefix": scored["prefix"].astype(str),
        "generated": [visible_spaces(claims_mod.generated_part(str(t), str(p)))
                      for t, p in zip(scored["text"], scored["prefix"])],
        "words in corpus": [f"{v:.0%}" if math.isfinite(v) else "n/a" for v in scored["word_share"]],
        "longest repeat (chars)": [fmt(v) for v in scored["longest_repeat"]],
    })


def calibration_text(calibration) -> str:
    """run.json's ``calibration`` in a line: each device's matrix-product rate, size and threads."""
    if not isinstance(calibration, dict) or not calibration:
        return "not recorded"
    rates = calibrated_rates(calibration)
    parts = []
    for device, entry in calibration.items():
        entry = entry if isinstance(entry, dict) else {}
        if device in rates:
            size, threads = entry.get("size"), entry.get("threads")
            detail = ", ".join(([f"{size}x{size} float32 product"] if size else [])
                               + ([f"{threads} threads"] if threads else []))
            parts.append(f"{device} {_sig(rates[device] / 1e9, 3)} GFLOP/s" + (f" ({detail})" if detail else ""))
        else:
            parts.append(f"{device} unavailable" + (f" ({entry['reason']})" if entry.get("reason") else ""))
    return "; ".join(parts)


def header_table(data: RunData) -> pd.DataFrame:
    run, cells = data.run, data.cells
    suite = run.get("suite") or {}
    machine = run.get("machine") or {}
    git = run.get("git") or {}
    started, finished = _parse_time(run.get("started")), _parse_time(run.get("finished"))
    total = (finished - started).total_seconds() if started and finished else None
    gpu = machine.get("gpu_name") or "none (CUDA not available)"
    versions = ", ".join(f"{k} {machine.get(k) or '-'}" for k in ("python", "torch", "cuda", "cudnn"))
    rows = [
        ("suite", f"{suite.get('name', '-')} ({suite.get('file', '-')})"),
        ("description", suite.get("description") or "-"),
        ("date", f"{run.get('started', '-')} to {run.get('finished', 'unfinished')} (UTC)"),
        ("total time", fmt_duration(total)),
        ("machine", f"{machine.get('hostname', '-')}: {machine.get('cpu_model', '-')}, "
                    f"{machine.get('cpu_count', '-')} CPUs, {_bytes(machine.get('memory_bytes'))} memory"),
        ("GPU", gpu),
        *([("cells ran on", "; ".join(machine_label(m) for m in run_machines(cells)))] if run_machines(cells) else []),
        ("versions", versions),
        ("threads", fmt(run.get("threads"))),
        ("calibration", calibration_text(run.get("calibration"))),
        ("executor", fmt(run.get("executor"))),
        ("git", f"{git.get('commit', '-')}{' (dirty)' if git.get('dirty') else ''}"),
        ("config hash", run.get("config_hash") or "-"),
        ("corpus SHA-256", fmt(run.get("corpus_sha256"))),
        ("cells", f"{len(cells)} ({_status_counts(cells['status'])})"),
    ]
    return pd.DataFrame(rows, columns=["", "value"])


def reproduce_command(run: dict) -> str:
    command = run.get("command")
    if isinstance(command, list) and command:
        return shlex.join(str(c) for c in command)
    if isinstance(command, str) and command:
        return command
    return "(not recorded in run.json)"


# --- document --------------------------------------------------------------------------------------------


def build_blocks(data: RunData, results: list[ClaimResult], claims_origin: str, figures: dict,
                 words: set[str] | None, words_note: str) -> list[tuple]:
    suite = data.run.get("suite") or {}
    blocks: list[tuple] = [("h1", f"Report: {suite.get('name') or data.folder.name}"),
                           ("p", f"Results folder `{data.folder.name}`.")]
    blocks.append(("table", header_table(data)))
    for note in data.notes:
        blocks.append(("p", f"Note: {note}"))

    blocks.append(("h2", "Claims"))
    blocks.append(("p", f"{claims_origin} Seeds are replicates; intervals are t-intervals over seeds of "
                        "per-seed differences or ratios (paired by seed where both sides share seeds, Welch "
                        "otherwise). In the evidence tables the reference is the shallower cell, the "
                        "unidirectional cell, or the teacher-forced perplexity, and the effect is compared "
                        "minus reference (differences) or compared / reference (ratios, geometric mean). The "
                        "table gives the gist; each claim's section below gives the numbers that decided it."))
    blocks.append(("table", claims_table(results)))
    for result in results:
        blocks.append(("h3", result.title))
        blocks.append(("verdict", result.verdict, result.summary.split(": ", 1)[-1]))
        if result.reason:
            blocks.append(("p", f"Inconclusive because {result.reason}."))
        params = ", ".join(f"{k} = {'/'.join(v) if isinstance(v, list) else v}"
                           for k, v in result.spec.to_dict().items() if k != "name")
        blocks.append(("p", f"Parameters: {params}."))
        if result.evidence.empty:
            continue
        deciding = deciding_rows(result)
        decided = evidence_table(result.evidence[deciding], result.spec.confidence)
        blocks.append(("p", "Comparisons that decide the verdict:"))
        blocks.append(("table", decided))
        context = result.evidence[~deciding]
        if not context.empty:
            blocks.append(("p", "Other measures (context, not deciding):"))
            blocks.append(("table", evidence_table(context, result.spec.confidence)))
    if words is None:
        blocks.append(("p", f"Share of generated words found in the corpus: unavailable ({words_note})."))

    blocks.append(("h2", "Configurations"))
    blocks.append(("p", "One row per configuration; values are the mean over finished seeds ± the half-width of "
                        "the 95% t-interval (no interval for one seed). Perplexities are per character. FLOP "
                        "util.: achieved training FLOP/s over the device's calibrated float32 matrix-product "
                        "rate (header), in percent."))
    blocks.append(("table", configuration_table(data.cells)))
    by_machine = timings_by_machine(data.cells)
    if not by_machine.empty:
        blocks.append(("h2", "Timings by machine"))
        blocks.append(("p", "The cells ran on several machines, so epoch times are given per machine here; the "
                            "configuration table above pools machines, and its timings and the figures' should "
                            "not be compared across them."))
        blocks.append(("table", by_machine))

    blocks.append(("h2", "Figures"))
    for name, caption in FIGURES.items():
        path = figures.get(name)
        title = name.replace("_", " ").capitalize()
        blocks.append(("h3", title))
        if path is None:
            blocks.append(("p", f"No data for this figure in this run ({caption[0].lower()}{caption[1:]})"))
        else:
            blocks.append(("figure", f"figures/{path.name}", caption))

    status = status_table(data.cells)
    blocks.append(("h2", "Cells that did not finish"))
    blocks.append(("table", status) if not status.empty else ("p", "Every cell finished."))

    blocks.append(("h2", "Generated samples"))
    samples = samples_table(data.samples, data.cells, words)
    if samples.empty:
        blocks.append(("p", "No generated samples in this run."))
    else:
        blocks.append(("p", "Greedy generation of each configuration's lowest finished seed; the prompt is not "
                            "counted. Words in corpus: share of generated words (the last, usually cut off, left "
                            "out) that occur in the training text. Longest repeat: the longest run of one unit of "
                            "1-4 characters repeated. '␣' marks spaces that a page would not show."))
        blocks.append(("table", samples))

    blocks.append(("h2", "Reproduce"))
    blocks.append(("code", reproduce_command(data.run)))
    return blocks


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "verdict":
            out.append(f"**Verdict: {block[1]}.** {block[2]}")
        elif kind == "table":
            table = block[1].map(_md_cell) if not block[1].empty else block[1]
            out.append(tabulate(table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True))
        elif kind == "figure":
            out.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
        elif kind == "code":
            out.append(f"```bash\n{block[1]}\n```")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
figure { margin: 1em 0; } figcaption { font-style: italic; color: #555; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.verdict { font-weight: bold; padding: 0.1em 0.5em; border-radius: 0.3em; }
.supported { background: #d4edda; } .not-supported { background: #f8d7da; } .inconclusive { background: #fff3cd; }
"""


def _inline_html(text: str) -> str:
    """Escape, then show `code` spans as in the Markdown."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: list[tuple], folder: Path, title: str) -> str:
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "verdict":
            css = block[1].replace(" ", "-")
            body.append(f'<p><span class="verdict {css}">{html.escape(block[1])}</span> {html.escape(block[2])}</p>')
        elif kind == "table":
            body.append(tabulate(block[1], headers="keys", tablefmt="html", showindex=False, disable_numparse=True))
        elif kind == "figure":
            data = base64.b64encode((folder / block[1]).read_bytes()).decode("ascii")
            caption = html.escape(block[2])
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                        f"<figcaption>{caption}</figcaption></figure>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# --- entry point -----------------------------------------------------------------------------------------


def default_out_dir(run_dir) -> Path:
    return Path("report") / Path(run_dir).resolve().name


def build_report(run_dir, out_dir=None) -> Path:
    """Write ``index.md``, ``index.html`` and ``figures/*.png`` for a results folder into ``out_dir``
    (default ``report/<run folder name>/``) and return that folder."""
    data = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir)
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:  # a figure this run cannot draw must not survive from an earlier report
        (figures_dir / f"{name}.png").unlink(missing_ok=True)
    specs, origin = claim_specs(data.run, f"{data.folder / 'run.json'}: suite")
    words, words_note = corpus_words(data.cells)
    results = evaluate_claims(data.cells, data.epochs, data.samples, specs, words)
    figures = make_figures(data.cells, data.epochs, figures_dir)
    blocks = build_blocks(data, results, origin, figures, words, words_note)
    title = blocks[0][1]
    write_text_atomic(out / "index.md", render_markdown(blocks))
    write_text_atomic(out / "index.html", render_html(blocks, out, title))
    return out
