"""How trustworthy is `harness compare` on this machine? Measure it, and write a markdown summary.

    python benchmarks/regression_study.py docs/regression.md [--repeats 5] [--work DIR]

Run it on a quiet machine (about 30 minutes with the default suite). It runs ``suites/regression.yaml``
``repeats + 1`` times as it is (A: threads 2) and ``repeats`` times with ``--set run.threads=1`` (B), interleaved
in time (A0, A1, B1, A2, B2, ...) so that slow drifts of the machine touch both, then:

* A/A: compares consecutive A runs (A0 with A1, A1 with A2, ...) with the default settings; none should be
  flagged. All pairs of A runs give the false-alarm rate per cell comparison, per threshold, and under two
  other rules: the threshold applied to the point estimate of the ratio rather than its interval, and the
  first design, which pooled epochs instead of comparing run medians (to show why the run is the unit).
* A/B: compares A_i with B_i (cells matched ignoring ``threads``); every pair should be flagged.
* Sensitivity: the smallest slowdown the default settings detect reliably. On every pair of A runs the
  epochs of the new side's runs are multiplied by a factor and compared again; a factor is detected
  reliably when every (pair, cell) comparison is flagged. This injects a uniform proportional slowdown
  into real noise; a real slowdown may also change the spread, which this does not model.
* Noise: how far the runs (seeds) of a cell disagree within one suite run, and how far the epochs of one
  run disagree, per cell.

Each suite run is a folder under ``--work`` (default ``results/regression-study``); running the study again
resumes the runs there (the runner resumes a folder it is pointed at) and ``--analyse-only`` re-reads them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from harness.analysis.speed_compare import (DEFAULT_ALPHA, DEFAULT_THRESHOLD, METRICS, Threshold,  # noqa: E402
                             compare_measurements, compare_runs, compare_samples, match_cells, read_run)
from harness.analysis.stats import relative_spread, run_medians, runs_needed  # noqa: E402

FACTORS = [round(1 + 0.05 * i, 2) for i in range(11)] + [1.6, 1.7, 1.8, 1.9, 2.0]  # 1.00 .. 2.00
THRESHOLDS = ["10%", "5%", "20%"]  # the default first; the others show what another setting would change
SLOW_SETTING = "run.threads=1"


def run_names(repeats: int) -> list[str]:
    """The order in which runs are measured: A0, then A_i followed by B_i."""
    names = ["A0"]
    for i in range(1, repeats + 1):
        names += [f"A{i}", f"B{i}"]
    return names


def measure(work: Path, suite: str, repeats: int, extra: list[str]) -> None:
    log_path = work / "runs.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    for name in run_names(repeats):
        out = work / name
        if (out / "run.json").exists() and json.loads((out / "run.json").read_text()).get("finished"):
            continue
        command = [sys.executable, "-m", "harness", "run", suite, "--out", str(out), "--no-report", *extra]
        if name.startswith("B"):
            command += ["--set", SLOW_SETTING]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        print(f"[study] {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        result = subprocess.run(command, cwd=REPO)
        if result.returncode != 0:
            sys.exit(f"[study] {name}: the run exited with {result.returncode}; see {out}")
        log[name] = {"wall_s": round(time.perf_counter() - started, 1), "load_before": round(load_before, 2),
                     "load_after": round(os.getloadavg()[0], 2)}
        log_path.write_text(json.dumps(log, indent=1))


# ------------------------------------------------------------------------------------------- analysis


def verdict_counts(report) -> str:
    counts = {v: report.count(v) for v in ("regression", "improvement", "same", "too few runs")}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def pair_rows(pairs, runs, ignore=()):
    rows = []
    for base_name, new_name in pairs:
        report = compare_measurements(runs[base_name], runs[new_name], ignore=ignore)
        ratios = [r.comparison.ratio for r in report.results]
        rows.append({"base": base_name, "new": new_name, "flagged": report.regressed,
                     "verdicts": verdict_counts(report), "min_ratio": min(ratios), "max_ratio": max(ratios),
                     "cells": {r.cell.label: r.comparison for r in report.results}})
    return rows


def matched_runs(runs, pairs):
    """(pair, cell label, base runs, new runs) for every matched cell of every pair."""
    metric = METRICS["sec_per_epoch"]
    for base_name, new_name in pairs:
        for cell in match_cells(runs[base_name], runs[new_name], metric).pairs:
            yield (base_name, new_name), cell.label, cell.base_runs, cell.new_runs


def scaled(runs, factor):
    return [[v * factor for v in run] for run in runs]


def sensitivity(samples, threshold: str, alpha: float = DEFAULT_ALPHA):
    """For each factor: the share of (pair, cell) comparisons flagged as a regression after multiplying
    the new side's epochs by the factor, and per cell whether every pair was flagged."""
    table = {}
    for factor in FACTORS:
        flagged, per_cell = [], {}
        for _, label, base, new in samples:
            hit = compare_runs(base, scaled(new, factor), threshold, alpha).verdict == "regression"
            flagged.append(hit)
            per_cell.setdefault(label, []).append(hit)
        table[factor] = (sum(flagged) / len(flagged), {k: all(v) for k, v in per_cell.items()})
    return table


def smallest_reliable(table) -> float | None:
    return next((f for f, (rate, _) in table.items() if f > 1 and rate == 1.0), None)


def estimate_verdict(c) -> str:
    """The verdict had the threshold been applied to the point estimate of the ratio instead of its interval."""
    if c.verdict == "too few runs":
        return c.verdict
    slower = c.ratio > c.threshold.slower_ratio
    faster = c.ratio < c.threshold.faster_ratio
    return "regression" if c.significant and slower else "improvement" if c.significant and faster else "same"


# The rules compared on the same A/A data: name -> verdict of (base runs, new runs) at the default threshold.
RULES = {
    "run medians, interval beyond the threshold (default)": lambda b, n: compare_runs(b, n).verdict,
    "run medians, estimate beyond the threshold": lambda b, n: estimate_verdict(compare_runs(b, n)),
    "pooled epochs, estimate beyond the threshold (the first design)": lambda b, n: estimate_verdict(
        compare_samples([v for r in b for v in r], [v for r in n for v in r])),
}


def noise_rows(runs, a_names):
    """Per cell: spread of run medians within a suite run, spread of epochs within a run, and the range of
    the ratio of medians between suite runs of the same code."""
    metric = METRICS["sec_per_epoch"]
    per_cell = {}
    for name in a_names:
        for cell in match_cells(runs[name], runs[name], metric).pairs:
            entry = per_cell.setdefault(cell.label, {"between": [], "within": [], "median": [], "ratio": []})
            medians = run_medians(cell.base_runs)
            entry["between"].append(relative_spread(medians))
            entry["within"] += [relative_spread(r) for r in cell.base_runs]
            entry["median"].append(float(np.median(medians)))
    for label, entry in per_cell.items():
        levels = entry["median"]
        entry["ratio"] = [b / a for a, b in zip(levels, levels[1:])]
    return per_cell


def summarise(work: Path, repeats: int, suite: str, extra: list[str]) -> str:
    names = run_names(repeats)
    missing = [n for n in names if not (work / n / "run.json").exists()]
    if missing:
        sys.exit(f"[study] missing run folders under {work}: {', '.join(missing)} (run without --analyse-only)")
    runs = {n: read_run(work / n) for n in names}
    log = json.loads((work / "runs.json").read_text()) if (work / "runs.json").exists() else {}
    a_names = [n for n in names if n.startswith("A")]
    aa = pair_rows(list(zip(a_names, a_names[1:])), runs)
    ab = pair_rows([(f"A{i}", f"B{i}") for i in range(1, repeats + 1)], runs, ignore=["threads"])
    all_pairs = list(itertools.combinations(a_names, 2))
    samples = list(matched_runs(runs, all_pairs))
    labels = sorted({label for _, label, _, _ in samples})
    n_runs = sorted({len(b) for _, _, b, _ in samples} | {len(n) for _, _, _, n in samples})

    first = json.loads((work / "A0" / "run.json").read_text())
    machine = first.get("machine", {})
    git = first.get("git", {})
    lines = [
        "# Speed-regression check: how far `harness compare` can be trusted",
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `benchmarks/regression_study.py` "
        f"with `{suite}`{' ' + ' '.join(extra) if extra else ''}, repeats: {repeats}.",
        "",
        f"- Machine: {machine.get('cpu_model')} ({machine.get('cpu_count')} CPUs), GPU {machine.get('gpu_name')}; "
        f"Python {machine.get('python')}, torch {machine.get('torch')}; git {str(git.get('commit'))[:10]}"
        f"{' (dirty)' if git.get('dirty') else ''}.",
        f"- Default settings: threshold {Threshold.parse(DEFAULT_THRESHOLD)}, alpha {DEFAULT_ALPHA}, metric "
        "sec_per_epoch. The unit is the run (one process, one seed): each run is summarised by the median of "
        "its timed epochs; a cell regresses when the 1 - alpha bootstrap interval of the ratio of the "
        "medians of the run medians, new over baseline, lies above 1 + threshold and a two-sided "
        "Mann-Whitney U test on the run medians gives p < alpha "
        f"({runs_needed(DEFAULT_ALPHA)} runs a side are the fewest that can). Runs per cell and side here: "
        f"{', '.join(map(str, n_runs))}.",
        f"- Suite runs, in the order measured: {', '.join(names)} (A: the suite as it is; B: "
        f"`--set {SLOW_SETTING}`).",
    ]
    if log:
        lines += ["", "| suite run | wall s | load average before | after |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {n} | {log[n]['wall_s']} | {log[n]['load_before']} | {log[n]['load_after']} |"
                  for n in names if n in log]

    aa_flagged = sum(r["flagged"] for r in aa)
    lines += ["", "## A/A: the same code twice", "",
              f"**{aa_flagged} of {len(aa)} pairs flagged** (expected: none).", "",
              "| baseline | new | flagged | verdicts | ratios (min .. max) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['base']} | {r['new']} | {'yes' if r['flagged'] else 'no'} | {r['verdicts']} | "
              f"{r['min_ratio']:.3f} .. {r['max_ratio']:.3f} |" for r in aa]
    consecutive = set(zip(a_names, a_names[1:]))
    lines += ["", f"False alarms over all {len(all_pairs)} pairs of A runs ({len(samples)} cell comparisons) at the "
                  "default threshold and alpha, under the default rule and two others: the threshold applied to "
                  "the point estimate of the ratio instead of its interval, and the first design, which pooled "
                  "the epochs of all runs of a side as if each were an independent draw:", "",
              "| rule | consecutive A/A pairs flagged | regressions flagged | improvements flagged |",
              "| --- | ---: | ---: | ---: |"]
    for rule, decide in RULES.items():
        verdicts = [(pair, decide(b, n)) for pair, _, b, n in samples]
        flagged_pairs = {pair for pair, v in verdicts if v == "regression" and pair in consecutive}
        lines.append(f"| {rule} | {len(flagged_pairs)} of {len(consecutive)} | "
                     f"{sum(v == 'regression' for _, v in verdicts)} | {sum(v == 'improvement' for _, v in verdicts)} |")
    lines += ["", "The default rule at other thresholds:", "",
              "| threshold | regressions flagged | improvements flagged | smallest reliably detected slowdown |",
              "| --- | ---: | ---: | ---: |"]
    tables = {}
    for threshold in THRESHOLDS:
        verdicts = [compare_runs(b, n, threshold).verdict for _, _, b, n in samples]
        tables[threshold] = sensitivity(samples, threshold)
        smallest = smallest_reliable(tables[threshold])
        lines.append(f"| {threshold}{' (default)' if threshold == DEFAULT_THRESHOLD else ''} | "
                     f"{verdicts.count('regression')} | {verdicts.count('improvement')} | "
                     f"{f'{smallest:.2f}x' if smallest else f'> {FACTORS[-1]:.2f}x'} |")

    ab_flagged = sum(r["flagged"] for r in ab)
    lines += ["", f"## A/B: `{SLOW_SETTING}` against the suite's threads", "",
              f"**{ab_flagged} of {len(ab)} pairs flagged** (expected: all).", "",
              "| baseline | new | flagged | " + " | ".join(sorted(ab[0]["cells"])) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in ab[0]["cells"]) + " |"]
    for r in ab:
        cells = " | ".join(f"{c.ratio:.2f}x {c.verdict}" for _, c in sorted(r["cells"].items()))
        lines.append(f"| {r['base']} | {r['new']} | {'yes' if r['flagged'] else 'no'} | {cells} |")

    default = tables[DEFAULT_THRESHOLD]
    smallest = smallest_reliable(default)
    lines += ["", "## Smallest slowdown detected reliably (default settings)", "",
              "Method: on every pair of A runs, the epochs of the new side's runs are multiplied by the factor "
              "(a uniform proportional slowdown injected into real noise) and compared again. Reliable: "
              "every (pair, cell) comparison flagged; per cell, `all` marks the factors at which that cell was "
              "flagged in every pair.", "",
              f"**{f'{smallest:.2f}x' if smallest else f'not reached up to {FACTORS[-1]:.2f}x'}** "
              f"over {len(samples)} cell comparisons.", "",
              "| factor | flagged | " + " | ".join(labels) + " |",
              "| ---: | ---: | " + " | ".join("---" for _ in labels) + " |"]
    for factor, (rate, per_cell) in default.items():
        marks = " | ".join("all" if per_cell.get(label) else "-" for label in labels)
        lines.append(f"| {factor:.2f} | {rate:.0%} | {marks} |")

    noise = noise_rows(runs, a_names)
    lines += ["", "## Noise: runs against epochs", "",
              "Per cell over the A suite runs: the spread of the run medians within a suite run (interquartile "
              "range / median, median over suite runs), the spread of the epochs within a run (the same "
              "measure, median over runs), and the ratio of the cell's median between consecutive suite runs "
              "of the same code.", "",
              "| cell | median s/epoch | spread of runs | spread of epochs in a run | ratio between suite runs |",
              "| --- | ---: | ---: | ---: | --- |"]
    for label in labels:
        e = noise[label]
        lines.append(f"| {label} | {np.median(e['median']):.3f} | {np.nanmedian(e['between']):.1%} | "
                     f"{np.nanmedian(e['within']):.1%} | {min(e['ratio']):.3f} .. {max(e['ratio']):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summary", type=Path, help="markdown file to write, e.g. docs/regression.md")
    parser.add_argument("--repeats", type=int, default=5, help="A/A and A/B pairs (default 5)")
    parser.add_argument("--work", type=Path, default=REPO / "results" / "regression-study",
                        help="folder of the run folders (default results/regression-study)")
    parser.add_argument("--suite", default="suites/regression.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="passed to every run (e.g. train.epochs=6 for a quick trial)")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE", help="passed to every run")
    parser.add_argument("--analyse-only", action="store_true", help="only read the runs under --work")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    extra = [a for s in args.set for a in ("--set", s)] + [a for o in args.only for a in ("--only", o)]
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        measure(args.work, args.suite, args.repeats, extra)
    text = summarise(args.work, args.repeats, args.suite, extra)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(text)
    print(f"[study] wrote {args.summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
