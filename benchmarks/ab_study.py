"""How far `harness ab` can be trusted on this machine: A/A trials (the same code on both sides) and A/B
trials (a known change, e.g. ``--set-new model.hidden=272``) run alternately, then every trial decided
again from its stored units under both rules and several thresholds. Writes one Markdown summary.

Run (the study of docs/regression.md: 20 A/A and 10 A/B trials of the default settings, then 10 A/B
trials of a 6% change; run again with the same --out to continue after an interruption):
    python benchmarks/ab_study.py --aa 20 --ab 10 --only cell=lstm --out results/ab-study \
        --summary results/ab-study/summary.md
    python benchmarks/ab_study.py --aa 0 --ab 10 --only cell=lstm --change model.hidden=264 \
        --out results/ab-study-264 --summary results/ab-study-264/summary.md
A quick look:
    python benchmarks/ab_study.py --aa 3 --ab 3 --only cell=lstm --out /tmp/ab-study --summary ab-study.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.analysis import stats  # noqa: E402
from harness.report.speed_text import markdown_table  # noqa: E402

RULES = ("estimate", "interval")
THRESHOLDS = (0.03, 0.05, 0.10)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="suites/regression.yaml")
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--change", action="append", default=None, metavar="SECTION.KEY=VALUE",
                        help="--set-new of the A/B trials (default model.hidden=272)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting of both sides in every trial (--set-base and --set-new)")
    parser.add_argument("--aa", type=int, default=3, help="A/A trials")
    parser.add_argument("--ab", type=int, default=3, help="A/B trials")
    parser.add_argument("--rounds", type=int, default=None, help="--rounds of harness ab (default: its own)")
    parser.add_argument("--out", required=True, help="folder for the trials' run folders and JSON")
    parser.add_argument("--summary", required=True, help="Markdown file to write")
    parser.add_argument("--resummarise", nargs="+", metavar="TRIALS_JSON",
                        help="only write the summary of trials already run (their trials.json files)")
    return parser.parse_args(argv)


def run_trial(args, kind: str, index: int) -> dict:
    out = Path(args.out) / f"{kind}{index}"
    if out.exists():  # left by an interrupted trial, which runs again from the start
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "harness", "ab", args.suite, "--out", str(out), "--json", str(out) + ".json"]
    cmd += [x for o in args.only for x in ("--only", o)]
    cmd += [x for s in args.set for x in ("--set-base", s, "--set-new", s)]
    if args.rounds:
        cmd += ["--rounds", str(args.rounds)]
    if kind == "ab":
        cmd += [x for s in (args.change or ["model.hidden=272"]) for x in ("--set-new", s)]
    load = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if not Path(str(out) + ".json").exists():
        raise SystemExit(f"trial {kind}{index} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    result = json.loads(Path(str(out) + ".json").read_text())
    result.update(kind=kind, name=f"{kind.upper()}{index}", wall=wall, load_before=load,
                  load_after=os.getloadavg()[0], exit=proc.returncode)
    print(f"{result['name']}: exit {proc.returncode}, {wall:.0f} s, pooled {result['pooled']['ratio']:.3f} "
          f"[{result['pooled']['low'] or float('nan'):.3f}, {result['pooled']['high'] or float('nan'):.3f}]",
          flush=True)
    return result


def run_means(cell: dict) -> list[float]:
    """The mean of each run's (process pair's) units, what `harness ab` decides on: it also counts what one
    pair of processes shares across its rounds (a speed of its own, a spell of load). Trials of the first
    design stored only the units, in equal shares per run."""
    if "run_units" in cell:
        return [sum(u) / len(u) for u in cell["run_units"] if u]
    units, runs = cell["units"], len(cell["runs"])
    if not units or len(units) % runs:
        return []
    size = len(units) // runs
    return [sum(units[i:i + size]) / size for i in range(0, len(units), size)]


def flagged(result: dict, rule: str, threshold: float, alpha: float, unit: str = "runs") -> tuple[bool, bool]:
    """(any regression, any improvement) over the trial's cells and the pool, decided again; ``unit``:
    "runs" (the mean of each process pair's units, as harness ab decides) or "rounds" (every unit of two
    rounds as a replicate, as its first design did)."""
    samples = [c["units"] if unit == "rounds" else run_means(c) for c in result["cells"]]
    decisions = [stats.decide(x, threshold, alpha, rule) for x in samples]
    decisions.append(stats.decide([u for x in samples for u in x], threshold, alpha, rule))
    return (any(d.verdict == "regression" for d in decisions), any(d.verdict == "improvement" for d in decisions))


FACTORS = (1.00, 1.02, 1.04, 1.06, 1.08, 1.10, 1.12, 1.14, 1.16, 1.18, 1.20, 1.25, 1.30)
RELIABLE = 0.90  # the share of trials that must flag a slowdown for it to count as detected reliably


def injected(result: dict, factor: float) -> dict:
    """The trial as if the new side had been slower by ``factor`` in every epoch: a uniform proportional
    slowdown added to real A/A noise (each unit's log-ratio moves by log(factor))."""
    shift = math.log(factor)
    def moved(cell: dict) -> dict:
        out = {**cell, "units": [u + shift for u in cell["units"]]}
        if "run_units" in cell:
            out["run_units"] = [[u + shift for u in units] for units in cell["run_units"]]
        return out

    return {**result, "cells": [moved(c) for c in result["cells"]]}


def sensitivity_rows(trials: list[dict], alpha: float) -> tuple[list[list[str]], dict]:
    """Per injected factor, the share of A/A trials flagged as a regression at each threshold, and the
    smallest factor flagged in at least RELIABLE of them."""
    aa = [t for t in trials if t["kind"] == "aa"]
    rows, smallest = [], {}
    for factor in FACTORS:
        row = [f"{factor:.2f}"]
        for threshold in THRESHOLDS:
            share = sum(flagged(injected(t, factor), "estimate", threshold, alpha)[0] for t in aa) / len(aa)
            row.append(f"{share:.0%}")
            if share >= RELIABLE and factor > 1:
                smallest.setdefault(threshold, factor)
        rows.append(row)
    return rows, smallest


def position_bias(trials: list[dict]) -> list[list[str]]:
    """Over the A/A trials, the mean ratio of the runs (process pairs) whose base side went first against
    those whose new side did: what the order of start-up and of the warm-up round costs a side."""
    from scipy import stats as scipy_stats

    groups: dict[str, list[float]] = {"base": [], "new": []}
    for t in trials:
        if t["kind"] != "aa":
            continue
        for c in t["cells"]:
            if "first" not in c or any(s != "ok/ok" for s in c["statuses"]):
                continue
            for first, mean in zip(c["first"], run_means(c)):
                groups[first].append(mean)
    rows = []
    for first, means in groups.items():
        if len(means) < 3:
            continue
        low, high = scipy_stats.ttest_1samp(means, 0.0).confidence_interval(0.95)
        rows.append([f"{first} first", str(len(means)), f"{math.exp(float(np.mean(means))):.3f}",
                     f"[{math.exp(low):.3f}, {math.exp(high):.3f}]"])
    return rows


def summarise(args, trials: list[dict]) -> str:
    alpha = trials[0]["alpha"]
    lines = [f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `benchmarks/ab_study.py` "
             f"with `{args.suite}` {' '.join('--only ' + o for o in args.only)} "
             f"{' '.join('--set ' + s for s in args.set)}, rounds {trials[0]['rounds']}, "
             f"alpha {alpha}; A/B: `--set-new {' '.join(args.change or ['model.hidden=272'])}`.", ""]
    rows = []
    for t in trials:
        p = t["pooled"]
        cells = "; ".join(f"{c['cell']} {c['ratio']:.3f} [{c['low']:.3f}, {c['high']:.3f}] {c['verdict']}"
                          for c in t["cells"] if c["low"] is not None)
        rows.append([t["name"], f"{t['wall']:.0f}", f"{t['load_before']:.1f} / {t['load_after']:.1f}", str(t["exit"]),
                     f"{p['ratio']:.3f} [{p['low']:.3f}, {p['high']:.3f}]" if p["low"] is not None else "-",
                     f"{p['sd'] * 100:.1f}%" if p["sd"] is not None else "-", cells])
    lines += [markdown_table(["trial", "wall s", "load before / after", "exit", "pooled new/base [CI]", "SD",
                              "cells"], rows, align="lrrrrrl"), ""]
    rows = []
    for unit in ("runs", "rounds"):
        for rule in RULES:
            for threshold in THRESHOLDS:
                aa = [flagged(t, rule, threshold, alpha, unit) for t in trials if t["kind"] == "aa"]
                ab = [flagged(t, rule, threshold, alpha, unit) for t in trials if t["kind"] == "ab"]
                rows.append([unit, rule, f"{threshold:.0%}", f"{sum(r or i for r, i in aa)} of {len(aa)}",
                             f"{sum(r for r, _ in ab)} of {len(ab)}"])
    lines += ["Every trial decided again from its stored units (per cell and pooled; a trial is flagged when "
              "any of them is). Replicates `runs`: the mean of each process pair's units (one value per seed and "
              "cell), as `harness ab` decides; `rounds`: every unit of two rounds, as its first design did:", "",
              markdown_table(["replicate", "rule", "threshold", "A/A flagged (regression or improvement)",
                              "A/B regressions"], rows, align="lllrr"), ""]
    walls = sorted(t["wall"] for t in trials)
    lines += [f"Wall time of a trial (both sides, start-up included): median {np.median(walls):.0f} s, "
              f"{walls[0]:.0f} to {walls[-1]:.0f} s over {len(walls)} trials.", ""]
    if any(t["kind"] == "aa" for t in trials):
        rows, smallest = sensitivity_rows(trials, alpha)
        found = "; ".join(f"at {threshold:.0%}: {f'{smallest[threshold]:.2f}x' if threshold in smallest else 'none up to 1.30x'}"
                          for threshold in THRESHOLDS)
        lines += [f"Smallest slowdown detected reliably (flagged as a regression in at least {RELIABLE:.0%} of the "
                  "A/A trials with a uniform slowdown of every new epoch injected into their real units; default "
                  f"rule `estimate`, alpha {alpha}): {found}.", "",
                  markdown_table(["injected factor"] + [f"flagged at {t:.0%}" for t in THRESHOLDS], rows,
                                 align="r" * (len(THRESHOLDS) + 1)), ""]
        bias = position_bias(trials)
        if bias:
            lines += ["Position bias over the A/A trials: the new/base ratio of the process pairs whose base side, or "
                      "new side, was started first and went first in the warm-up round (geometric mean of the "
                      "pairs' mean log-ratios, 95% t-interval):", "",
                      markdown_table(["pairs", "n", "new/base", "95% CI"], bias, align="lrrr"), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.resummarise:
        trials = [t for path in args.resummarise for t in json.loads(Path(path).read_text())]
        Path(args.summary).write_text(summarise(args, trials))
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    stored = Path(args.out, "trials.json")
    # A study spans sessions: trials already in --out are kept and not run again.
    trials = json.loads(stored.read_text()) if stored.exists() else []
    done = {t["name"] for t in trials}
    # Alternate the kinds, so that a change of the machine's load during the study touches both alike.
    order = [("aa", i) for i in range(args.aa)]
    order = [x for pair in zip(order, [("ab", i) for i in range(args.ab)]) for x in pair] + \
        order[args.ab:] + [("ab", i) for i in range(args.aa, args.ab)]
    for kind, index in order:
        if f"{kind.upper()}{index}" in done:
            continue
        trials.append(run_trial(args, kind, index))
        Path(args.out, "trials.json").write_text(json.dumps(trials, indent=1))
        Path(args.summary).write_text(summarise(args, trials))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
