"""`harness profile`: train one cell for a few epochs and show where an epoch's time goes."""

from __future__ import annotations

import json

from harness.commands.cell import add_config_arguments, config_from_args

# A profile needs only a few epochs, not the recipe's 500.
PROFILE_DEFAULTS = {"epochs": 2}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "profile", help="show where one cell's training epoch spends its time",
        description="Train one cell: warm-up epochs, then --epochs epochs timed by phase (forward, "
                    "backward, clip, optimizer, data), then one epoch under torch.profiler for the top "
                    "operators by self time.")
    add_config_arguments(parser, PROFILE_DEFAULTS)
    parser.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs first (default: 1)")
    parser.add_argument("--top", type=int, default=15, help="operators to list (default: 15)")
    parser.add_argument("--trace", metavar="FILE.json", help="also write the profiled epoch as a Chrome trace")
    parser.add_argument("--json", action="store_true", help="print the profile as one JSON object")
    parser.set_defaults(func=main)


def main(args) -> int:
    from harness.errors import HarnessError
    from harness.cell.profiling import profile_cell

    if args.warmup_epochs < 0 or args.top < 1:
        raise HarnessError("--warmup-epochs must be >= 0 and --top >= 1")
    cfg = config_from_args(args, PROFILE_DEFAULTS)
    result = profile_cell(cfg, warmup_epochs=args.warmup_epochs, top=args.top, trace_path=args.trace)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_profile(result))
    return 0


def format_profile(result: dict) -> str:
    from tabulate import tabulate

    lines = [f"profile of {result['cell_id']} ({result['precision']}, threads {result['threads']}): "
             f"{result['epochs']} timed epochs, median {result['sec_per_epoch']:.4g} s per epoch"]
    phases = [(name, result["phase_sec_per_epoch"].get(name), f"{share:.1%}")
              for name, share in result["phase_shares"].items()]
    lines += ["", "where an epoch's time goes (device synchronised at each phase's end):",
              tabulate(phases, headers=["phase", "sec/epoch", "share"], floatfmt=".4g")]
    ops = [(_short(r["op"]), r["self_sec"] * 1e3, f"{r['share']:.1%}", r["calls"]) for r in result["top_ops"]]
    lines += ["", "top operators by self time (one profiled epoch):",
              tabulate(ops, headers=["operator", "self ms", "share", "calls"], floatfmt=".4g")]
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def _short(name: str, width: int = 72) -> str:
    """CUDA kernel names carry their whole template signature: keep the start."""
    return name if len(name) <= width else name[: width - 3] + "..."
