"""The report's tables as DataFrames, every number formatted (``harness.report.numbers``): each
configuration's means over seeds, the claims' answers and evidence, the cells that did not learn or did not
finish, timings per machine, and the generated samples with their measured quality."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from harness.analysis import text_measures
from harness.analysis.cell_frames import configuration_keys, ok_cells, text_column
from harness.analysis.claims import ClaimResult
from harness.analysis.stats import log_interval
from harness.report import wording as claim_wording
from harness.report.captions import MIB
from harness.analysis.no_learning import best_ngram, learned_bound
from harness.report.numbers import fmt, sig
from harness.spec.claims import AXIS, SELECTED_METRIC, ClaimSpec

STATUSES = ("ok", "skipped", "diverged", "failed", "timeout")


def status_counts(statuses: pd.Series) -> str:
    """How many cells ended in each status, the usual ones first: ``ok 10, failed 2``."""
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


def configuration_table(cells: pd.DataFrame, timings: bool = True) -> pd.DataFrame:
    """One row per configuration: geometric mean over finished seeds [95% interval on the log scale].
    ``timings``: with the time per epoch and the FLOP utilisation (False where the cells ran on several
    machines: those are compared within a machine only). A perplexity no cell measured (the final
    evaluations of a run that evaluates at the epoch chosen on selection text) is left out."""
    keys = configuration_keys(cells)
    numeric = ("params", "flops_per_epoch", "train_ppl", "val_ppl", "causal_ppl", SELECTED_METRIC,
               "sec_per_epoch", "flops_utilization", "peak_mem_bytes")
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
            "causal ppl, selected epoch": fmt_geo_ci(finite[SELECTED_METRIC]),
            **({"s/epoch": fmt_geo_ci(finite["sec_per_epoch"], 3),
                "FLOP util. (%)": fmt_geo_ci(finite["flops_utilization"] * 100, 3)} if timings else {}),
            "peak mem (MiB)": fmt_geo_ci(finite["peak_mem_bytes"] / MIB, 3),
        })
        rows.append(row)
    table = pd.DataFrame(rows)
    unmeasured = [c for c in ("teacher-forced ppl", "causal ppl", "causal ppl, selected epoch")
                  if c in table and (table[c] == fmt(math.nan)).all()]
    return table.drop(columns=unmeasured)


def learning_table(ok: pd.DataFrame, baselines: dict | None) -> pd.DataFrame:
    """The finished cells that did not learn: best held-out causal perplexity above 0.95 x the unigram baseline."""
    if ok.empty or "learned" not in ok or baselines is None:
        return pd.DataFrame()
    bad = ok[ok["learned"] == False]  # noqa: E712 - NaN (no baseline) is neither
    return pd.DataFrame({"cell": bad["cell_id"].astype(str),
                         "best causal ppl": [fmt(v) for v in bad["best_causal_ppl"]],
                         "final causal ppl": [fmt(v) for v in bad["causal_ppl"]],
                         "final training ppl": [fmt(v) for v in bad["train_ppl"]]})


def text_description(entry: dict) -> str:
    """A training text of ``harness.analysis.run_text.other_text_baselines`` in words."""
    if entry.get("train_text") == "book":
        return (f"the whole book (the first {fmt(entry.get('max_tokens'))} characters and every whole "
                f"{fmt(entry.get('max_tokens'))}-character chunk after the held-out and selection text)")
    return f"the first {fmt(entry.get('max_tokens'))} characters"


def _bound_words(baselines: dict | None, others: list[dict]) -> str:
    if others:
        return "0.95 x the unigram baseline of the cell's own training text"
    return f"{fmt(learned_bound(baselines), 3)}, 0.95 x the unigram baseline"


def learning_sentence(ok: pd.DataFrame, baselines: dict | None, note: str, others: list[dict] = ()) -> str:
    """The no-learning baselines in a sentence (those of each training text), and which finished cells did
    not learn."""
    if baselines is None:
        return f"No-learning baselines unavailable ({note}): every comparison counts."
    text = (f"No-learning baselines of the held-out text ({fmt(baselines.get('tokens'))} characters; counted on "
            f"the training split, add-one smoothed): uniform {fmt(baselines['uniform'], 3)}, unigram (letter "
            f"frequencies) {fmt(baselines['unigram'], 3)}, bigram {fmt(baselines['bigram'], 3)}. ")
    best = best_ngram(baselines)
    if best is not None:
        text += (f"The best character n-gram model of the same training text (interpolated Kneser-Ney, orders "
                 f"1-6) is the {best[0]}, at {fmt(best[1], 3)}. ")
    for entry in others:
        other = entry["baselines"]
        found = best_ngram(other)
        text += (f"Cells trained on {text_description(entry)} are held to the baselines of that text, scored on "
                 f"the same held-out characters: unigram {fmt(other['unigram'], 3)}, bigram "
                 f"{fmt(other['bigram'], 3)}" + (f", best n-gram model the {found[0]} at {fmt(found[1], 3)}"
                                                 if found else "") + ". ")
    if ok.empty or "learned" not in ok:
        return text
    bad = ok[ok["learned"] == False]  # noqa: E712
    bound = _bound_words(baselines, others)
    if bad.empty:
        return text + (f"Every one of the {len(ok)} finished cells learned (best held-out causal perplexity at "
                       f"most {bound}).")
    names = ", ".join(bad["cell_id"].astype(str).head(12)) + (" ..." if len(bad) > 12 else "")
    return text + (f"{len(bad)} of {len(ok)} finished cells did not learn (best held-out causal perplexity above "
                   f"{bound}; a cell on the letter-frequency plateau sits within 0.5% of it): {names}. "
                   "Comparisons with such a cell are shown, not pooled.")


def baseline_sentence(ok: pd.DataFrame, baselines: dict | None, others: list[dict] = ()) -> str:
    """The first screen's facts beside the verdicts: the best network against the best n-gram model of the
    same training text, and how many finished cells did not learn (their comparisons are not pooled). With
    cells trained on several texts each is held to the n-gram model of its own (``ngram_baseline``)."""
    # At the epoch chosen on selection text where the cells had some: the lowest of the held-out evaluations
    # would choose the epoch on the text that then reports it.
    if ok.empty or "best_causal_ppl" not in ok:
        return ""
    values = pd.to_numeric(ok["best_causal_ppl"], errors="coerce")
    chosen = pd.to_numeric(ok.get(SELECTED_METRIC, pd.Series(index=ok.index, dtype=float)), errors="coerce")
    when = ""
    if chosen.notna().any():
        values = chosen.where(chosen.notna(), values)
        when = " at the epoch chosen on selection text" + (
            "" if chosen.notna().all() else " (cells without selection text: at their best held-out evaluation)")
    if not values.notna().any():
        return ""
    best = ok.loc[values.idxmin()]
    text = f"The best network, {best['cell_id']}, reached a held-out causal perplexity of {fmt(values.min(), 3)}{when}"
    found = best_ngram(baselines)
    if others and "ngram_baseline" in ok:
        own = pd.to_numeric(ok["ngram_baseline"], errors="coerce")
        below, known = int((values < own).sum()), int((values.notna() & own.notna()).sum())
        order = best.get("ngram_baseline_order")
        if own.notna().any() and order:
            text += (f"; the best character n-gram model of its own training text, the {order} (Kneser-Ney), "
                     f"{fmt(own.loc[values.idxmin()], 3)}: {below} of {known} finished cells "
                     f"{'is' if below == 1 else 'are'} below the n-gram model of their own training text")
    elif found is not None:
        name, value = found
        below = int((values < value).sum())
        text += (f"; the best character n-gram model of the same training text, the {name} (Kneser-Ney), "
                 f"{fmt(value, 3)}: {below} of {int(values.notna().sum())} finished cells "
                 f"{'is' if below == 1 else 'are'} below it")
    text += "."
    if "learned" in ok:
        bad = int((ok["learned"] == False).sum())  # noqa: E712 - NaN (no baseline) is neither
        if bad:
            bound = ("0.95 x the letter frequencies of their own training text" if others else
                     f"{fmt(learned_bound(baselines), 3)}, 0.95 x the letter frequencies'")
            text += (f" {bad} of {len(ok)} finished cells did not learn (best held-out causal perplexity above "
                     f"{bound}): comparisons with them are shown, not pooled.")
    return text


def first_declarations(results: list[ClaimResult]) -> tuple[list[ClaimResult], list[ClaimResult]]:
    """The first declaration of each claim (by name, or by its own title for a claim on any axis), and the
    other readings of the same claims (another metric, basis, threshold ...), in the suite's order."""
    first, rest, seen = [], [], set()
    for result in results:
        key = claim_key(result.spec)
        (rest if key in seen else first).append(result)
        seen.add(key)
    return first, rest


def claim_key(spec) -> str:
    """What makes two declarations one claim: the lesson's claim by name, a claim on any axis by its label."""
    return spec.label if spec.name == AXIS else spec.name


def claims_summary(results: list[ClaimResult]) -> pd.DataFrame:
    """The answers: one row per claim with its verdict, pooled effect and a sentence."""
    return pd.DataFrame([{"claim": r.title, "verdict": r.verdict,
                          "pooled effect [95% CI]": claim_wording.effect_text(r),
                          "a new configuration [95% PI]": claim_wording.prediction_text(r),
                          "in one sentence": claim_wording.summary_sentence(r)} for r in results])


def pooled_table(table: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """A claim's pooled ratios, one row per measure, with their heterogeneity and sign test."""
    if table.empty:
        return table
    return pd.DataFrame({
        "measure": claim_wording.measure_labels(table), "cells": table["cells"],
        "configurations": [f"{k} of {n}" for k, n in zip(table["pooled_configurations"], table["configurations"])],
        f"ratio [{confidence:.0%} CI]": [claim_wording.ratio_text(r, lo, hi) for r, lo, hi
                                          in zip(table["ratio"], table["ci_low"], table["ci_high"])],
        "a new configuration [95% PI]": [claim_wording.interval_text(lo, hi)
                                          for lo, hi in zip(table.get("pi_low", math.nan * table["ratio"]),
                                                            table.get("pi_high", math.nan * table["ratio"]))],
        "from the text": [f"{v:.0%}" if math.isfinite(v) else "-" for v in table.get("text_share", math.nan * table["ratio"])],
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
            "dof", "text_blocks", "text_sd",
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


def status_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells that did not finish: status, epochs done and why."""
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
                     "words in text": f"{m['word_share']:.0%}" if math.isfinite(m["word_share"]) else "n/a",
                     "distinct words": f"{m['distinct_share']:.0%}", "compression": f"{m['compression']:.2f}",
                     "longest repeat": fmt(m["longest_repeat"]),
                     "degenerate": "yes" if m["degenerate"] else "no"})
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
        return text_column(cells, name)

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
