"""`harness list SUITE`: the cells a suite expands to, with a rough time estimate and their arithmetic."""

from __future__ import annotations

import math

from harness.errors import HarnessError
from harness.commands.run import add_selection_arguments, print_cells, select_cells

DEVICES = ("cpu", "cuda")
RATE_RANGE = (1e-3, 1e9)  # GFLOP/s: from a slow interpreter to far beyond any one machine


def register(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list a suite's cells and estimated times")
    add_selection_arguments(parser)
    parser.add_argument("--flop-rate", action="append", default=[], metavar="[DEVICE=]GFLOPS",
                        help="also give the time the cells' matrix-product work takes at this rate in GFLOP/s (e.g. "
                             "a run.json calibration's flops_per_sec / 1e9, times the cells run at once): a floor "
                             "on a machine that sustains at most that rate. DEVICE=GFLOPS per device (repeatable); "
                             "a bare number where the cells run on one device")
    parser.set_defaults(func=main)


def parse_flop_rates(values: list[str], devices: set[str]) -> dict[str, float]:
    """``--flop-rate`` values (``GFLOPS`` or ``DEVICE=GFLOPS``) as FLOP/s per device; HarnessError (one
    line) for a value that is not a finite rate in range, an unknown device, or a bare number for cells on
    several devices."""
    rates: dict[str, float] = {}
    for value in values:
        device, _, number = value.rpartition("=")
        device = device.strip().lower()
        if device and device not in DEVICES:
            raise HarnessError(f"--flop-rate {value}: unknown device {device!r} (one of {', '.join(DEVICES)})")
        try:
            gflops = float(number)
        except ValueError:
            raise HarnessError(f"--flop-rate {value}: {number!r} is not a number of GFLOP/s") from None
        if not (math.isfinite(gflops) and RATE_RANGE[0] <= gflops <= RATE_RANGE[1]):
            raise HarnessError(f"--flop-rate {value}: must be a number of GFLOP/s from {RATE_RANGE[0]:g} to "
                               f"{RATE_RANGE[1]:g}")
        if not device:
            if len(devices) > 1:
                names = " and ".join(sorted(devices))
                raise HarnessError(f"--flop-rate {value}: the cells run on {names}; give a rate per device "
                                   f"(e.g. cpu={number}) or select one with --only device=...")
            device = next(iter(devices), "cpu")
        if device in rates:
            raise HarnessError(f"--flop-rate {value}: a second rate for {device}; give one per device")
        rates[device] = gflops * 1e9
    return rates


def main(args) -> int:
    _, cells = select_cells(args)
    rates = parse_flop_rates(args.flop_rate, {cell.config.device for cell in cells})
    print_cells(cells, flop_rates=rates)
    from harness.cell.precision import bf16_warning

    warning = bf16_warning(cell.config for cell in cells)
    if warning:
        print(warning)
    return 0
