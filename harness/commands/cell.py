"""`harness cell`: train and measure one grid cell."""

from __future__ import annotations

import json
import math
import sys

from harness.spec.config import CellConfig, build_config

HELP = {
    "cell": "recurrent cell type", "layers": "number of recurrent layers", "direction": "uni or bi",
    "device": "cpu or cuda", "seed": "seed of weights and data order", "epochs": "training epochs",
    "hidden": "hidden units per layer and direction", "corpus": "gutenberg-35, d2l, or a file path",
    "threads": "CPU threads for torch", "prefixes": "comma-separated generation prefixes",
    "target_params": "parameter count to match by choosing the hidden size (model.params)",
    "betas": "comma-separated Adam betas",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("cell", help="train and measure one grid cell",
                                   description="Train one cell with the lesson's recipe and measure it.")
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object of result columns")
    parser.add_argument("--result-file", help="write the full record (with per-epoch rows) to this file")
    parser.set_defaults(func=main)


def add_config_arguments(parser, defaults: dict | None = None) -> None:
    """One ``--key`` flag per CellConfig key (not ``timeout``, which only the grid runner enforces) and
    ``--config-json``. ``defaults`` overrides CellConfig's defaults for this command (shown in --help)."""
    import argparse
    from typing import Literal, get_args, get_origin

    from harness.spec.config import BUILT_IN_CELLS

    defaults = defaults or {}
    for name, field in CellConfig.model_fields.items():
        if name == "timeout":
            continue
        default = defaults.get(name, field.default)
        flag, text = f"--{name.replace('_', '-')}", f"{HELP.get(name, name.replace('_', ' '))} (default: {_show(default)})"
        if field.annotation is bool:  # --flag / --no-flag, not a value to spell
            parser.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=text)
        elif get_origin(field.annotation) is Literal:  # the choices shown; a wrong one is the config's one-line error
            parser.add_argument(flag, dest=name, default=None, help=text,
                                metavar="{" + ",".join(get_args(field.annotation)) + "}")
        elif name == "cell":  # a built-in cell, or a module's factory: listed, not enforced
            parser.add_argument(flag, dest=name, default=None, help=text,
                                metavar="{" + ",".join(BUILT_IN_CELLS) + "}|PACKAGE.MODULE:FACTORY")
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=text)
    parser.add_argument("--config-json", help="read the whole configuration from this JSON file")


def _show(value):
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def config_from_args(args, defaults: dict | None = None) -> CellConfig:
    """The CellConfig of the parsed flags: ``defaults``, then the --config-json file, then each flag given."""
    values = dict(defaults or {})
    if args.config_json:
        values.update(_read_config_json(args.config_json))
    for name in CellConfig.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value.split(",") if name in ("prefixes", "betas") else value
    names = {n: f"--{n.replace('_', '-')}" for n in CellConfig.model_fields}
    return build_config(values, "command line", names)


def _read_config_json(path) -> dict:
    from harness.results.run_folder import read_json_object

    return read_json_object(path, label=f"--config-json {path}", what="of configuration keys")


def _finite_or_none(value):
    """Strict JSON has no NaN or Infinity: a diverged cell's perplexity is printed as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(args) -> int:
    from harness.results.tables import EXTRA_COLUMNS, RESULT_COLUMNS
    from harness.cell.train import run_cell  # torch: not for --help

    cfg = config_from_args(args)
    if not args.json:
        print(f"training {cfg.cell_id} for {cfg.epochs} epochs", file=sys.stderr)
    from tqdm import tqdm

    bar = tqdm(total=cfg.epochs, desc=cfg.cell_id, unit="epoch", file=sys.stderr, disable=None)

    def progress(row):
        bar.update(1)
        bar.set_postfix(ppl=f"{row['train_ppl']:.3f}", sec=f"{row['sec']:.3f}")

    record = run_cell(cfg, on_epoch=progress)
    bar.close()
    if args.result_file:
        from harness.results.atomic import write_json_atomic

        write_json_atomic(args.result_file, record)
    flat = {key: record.get(key) for key in RESULT_COLUMNS + EXTRA_COLUMNS}
    if args.json:
        print(json.dumps({k: _finite_or_none(v) for k, v in flat.items()}, default=str, allow_nan=False))
    else:
        _print_summary(flat, record.get("samples", []))
    return 0 if record["status"] in ("ok", "skipped") else 1


def _print_summary(flat: dict, samples: list[dict]) -> None:
    from tabulate import tabulate

    from harness.results.tables import RESULT_COLUMNS

    shown = [(k, flat[k]) for k in RESULT_COLUMNS if k != "sample" and flat.get(k) not in (None, "")]
    print(tabulate(shown, tablefmt="plain", floatfmt=".4g"))
    for s in samples:
        print(f"sample[{s['prefix']}]: {s['text']}")
