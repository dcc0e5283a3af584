"""`harness baseline save RUN_DIR --name NAME` and `harness baseline list`: baselines for `compare`."""

from __future__ import annotations

from harness.results.speed_baselines import DEFAULT_ROOT, list_baselines, save_baseline
from harness.results.atomic import writable_folder
from harness.cli import prog_name


def register(subparsers) -> None:
    parser = subparsers.add_parser("baseline", help="save or list baselines of per-epoch times",
                                   description="Save a run's per-epoch times as a baseline for "
                                               "`compare baseline:NAME NEW`, or list saved baselines.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    save = actions.add_parser("save", help="save RUN_DIR as <root>/<machine-id>/NAME.json")
    save.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (run.json, cells.csv, epochs.csv)")
    save.add_argument("--name", required=True, help="baseline name, e.g. torch-2.13 or main")
    save.add_argument("--force", action="store_true", help="replace an existing baseline of that name")
    save.add_argument("--root", default=DEFAULT_ROOT, help=f"baselines folder (default {DEFAULT_ROOT})")
    save.set_defaults(func=main_save)
    listing = actions.add_parser("list", help="list saved baselines per machine")
    listing.add_argument("--root", default=DEFAULT_ROOT, help=f"baselines folder (default {DEFAULT_ROOT})")
    listing.set_defaults(func=main_list)


def main_save(args) -> int:
    writable_folder(args.root, "--root")
    path = save_baseline(args.run_dir, args.name, args.root, force=args.force)
    print(f"saved {path} (compare with: {prog_name()} compare baseline:{args.name} RUN_DIR)")
    return 0


def main_list(args) -> int:
    saved = list_baselines(args.root)
    if not saved:
        print(f"no baselines under {args.root}")
    for machine, names in saved.items():
        print(f"{machine}: {', '.join(names) or '-'}")
    return 0
