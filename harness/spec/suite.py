"""Suites: declarative grids. A suite names defaults (grouped in sections) and a matrix of axes; it
expands into cells, each a validated ``CellConfig``.

Matrix semantics follow GitHub Actions: the product of the axes, minus every combination that matches
all keys of an ``exclude`` entry, plus each ``include`` entry as an extra cell (defaults + the entry)
unless the grid already has it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.spec.config import (FIELD_TO_SUITE_KEY, FIELDS, GRID_KEYS, SECTIONS, CellConfig, build_config,
                                 field_for_axis)
from harness.errors import HarnessError, quote, shorten
from harness.spec.suite_file import check_shape

# How a field is written in a suite, for messages: eval_every -> eval.every
# YAML aliases let a few hundred bytes name billions of values: bound what a suite may expand to.
MAX_VALUES = 100_000  # nodes of the parsed file, each alias counted as often as it is used
MAX_CELLS = 10_000


@dataclass
class Suite:
    name: str
    path: str
    description: str = ""
    defaults: dict = field(default_factory=dict)  # flat field -> value, as written (not yet filled in)
    matrix: dict = field(default_factory=dict)  # flat field -> list of values
    exclude: list = field(default_factory=list)  # list of {flat field: value}
    include: list = field(default_factory=list)
    claims: list = field(default_factory=list)  # as written; evaluated by harness.analysis.claims
    conditions: list = field(default_factory=list)  # as written; evaluated by harness.analysis.conditions

    def resolved(self) -> dict:
        """The suite with every default filled in: what run.json records and the config hash covers."""
        defaults = CellConfig.model_construct().model_dump(mode="json")
        defaults.update(self.defaults)
        return {
            "name": self.name,
            "description": self.description,
            "defaults": {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()},
            "matrix": self.matrix,
            "exclude": self.exclude,
            "include": self.include,
            "claims": self.claims,
            # Only when declared, so that suites without conditions keep the hash their runs recorded.
            **({"conditions": self.conditions} if self.conditions else {}),
        }

    def config_hash(self) -> str:
        payload = json.dumps(self.resolved(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def extra_axes(self) -> list[str]:
        """Axes beyond the lesson's grid keys: they are appended to cell ids to keep them unique."""
        keys = set(self.matrix) | {k for entry in self.include for k in entry}
        return [k for k in FIELDS if k in keys and k not in GRID_KEYS]


@dataclass(frozen=True)
class GridCell:
    cell_id: str
    config: CellConfig
    axes: dict  # the matrix axes' values of this cell (grid keys + extra axes)


def load_suite(path, sets: list[str] | None = None) -> Suite:
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessError(f"{where}: suite file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{where}: cannot read suite: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HarnessError(f"{where}: invalid YAML{at}: {shorten(str(problem), 200)}") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise HarnessError(f"{where}: invalid value: {shorten(str(exc), 200)}") from None
    except RecursionError:
        raise HarnessError(f"{where}: invalid YAML: nested too deeply") from None
    _check_size(raw, where)
    return parse_suite(raw, where, sets)


def _check_size(raw, where: str) -> None:
    """Count the parsed document's nodes as a walk would meet them (an alias as often as it is used),
    stopping at MAX_VALUES: a suite of nested aliases is refused before anything walks it whole."""
    stack, count = [raw], 0
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise HarnessError(f"{where}: the suite expands to more than {MAX_VALUES:,} values "
                               "(nested YAML aliases?)")
        if isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def parse_suite(raw, where: str, sets: list[str] | None = None) -> Suite:
    if not isinstance(raw, dict):
        raise HarnessError(f"{where}: a suite must be a mapping with keys such as name, matrix (got "
                           f"{type(raw).__name__})")
    check_shape(raw, where)  # keys, mappings and lists (harness.spec.suite_file); values are CellConfig's to check
    name = raw["name"]
    description = raw.get("description") or ""
    defaults: dict = {}
    for section, keys in SECTIONS.items():
        for key, value in (raw.get(section) or {}).items():
            defaults[keys[key]] = value

    matrix: dict = {}
    for key, values in (raw.get("matrix") or {}).items():
        fld = field_for_axis(key, f"{where}: matrix")
        if fld in matrix:
            raise HarnessError(f"{where}: matrix.{key}: the axis {fld} is given twice (as {quote(str(key))} and "
                               f"another spelling); give it once")
        if len(set(map(repr, values))) != len(values):
            raise HarnessError(f"{where}: matrix.{key} = {quote(values)}: values repeat")
        matrix[fld] = values

    def entries(kind):
        return [{field_for_axis(k, f"{where}: {kind}"): v for k, v in e.items()} for e in raw.get(kind) or []]

    exclude = entries("exclude")
    for index, entry in enumerate(exclude):  # an entry that can match no cell is a typo, not a choice
        for fld, value in entry.items():
            if fld not in matrix:
                raise HarnessError(f"{where}: exclude[{index}]: {fld} is not a matrix axis, so the entry "
                                   "excludes nothing")
            if value not in matrix[fld]:
                raise HarnessError(f"{where}: exclude[{index}].{fld} = {quote(value)}: not one of the matrix's "
                                   f"values ({shorten(', '.join(map(str, matrix[fld])), 200)})")

    claims = raw.get("claims") or []
    from harness.spec.claims import claims_needing_curves, parse_claims, parse_conditions

    specs = parse_claims(claims, f"{where}: claims")
    conditions = raw.get("conditions") or []
    parse_conditions(conditions, where, field_for_axis)

    suite = Suite(name=name, path=where, description=description, defaults=defaults, matrix=matrix,
                  exclude=exclude, include=entries("include"), claims=claims,
                  conditions=conditions)
    for assignment in sets or []:
        apply_set(suite, assignment)
    cells = expand(suite)  # validates every cell now, before anything runs
    _check_axis_claims(specs, cells, f"{where}: claims")
    needing = claims_needing_curves(specs)
    if needing and any(cell.config.eval_every == 0 for cell in cells):
        raise HarnessError(f"{where}: claims: {needing[0].title} compares held-out perplexity at equal "
                           f"training time, which needs eval.every > 0 (held-out perplexity during training)")
    return suite


def _check_axis_claims(specs, cells: list[GridCell], where: str) -> None:
    """A claim's axis must vary among the suite's cells, and its base be one of the values it takes."""
    from harness.spec.claims import AXIS

    for index, spec in enumerate(specs):
        if spec.name != AXIS:
            continue
        here = f"{where}[{index}]: {spec.label}"
        values = list(dict.fromkeys(getattr(c.config, spec.axis) for c in cells))
        if len(values) < 2:
            raise HarnessError(f"{here}: axis {spec.axis} takes one value in this suite ({values[0]!r}): nothing to "
                               "compare; make it a matrix axis")
        if spec.base is not None and not any(_same(spec.base, v) for v in values):
            raise HarnessError(f"{here}: base {spec.base!r} is not one of the values of {spec.axis} "
                               f"({shorten(', '.join(map(str, values)), 200)})")
        if spec.base is None and not all(isinstance(v, (int, float)) for v in values):
            raise HarnessError(f"{here}: the values of {spec.axis} are not numbers, so which is the reference is not "
                               f"clear: give a base ({shorten(', '.join(map(str, values)), 200)})")


def _parse_value(text: str):
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # ValueError: an integer of more than 4,300 digits
        return text


def apply_set(suite: Suite, assignment: str) -> None:
    """``--set SECTION.KEY=VALUE`` overrides a default (and removes that axis from the matrix)."""
    key, eq, value = assignment.partition("=")
    if not eq or not key:
        raise HarnessError(f"--set {quote(assignment)}: expected SECTION.KEY=VALUE, e.g. train.epochs=20")
    fld = field_for_axis(key.strip(), f"--set {quote(assignment)}")
    suite.defaults[fld] = _parse_value(value)
    suite.matrix.pop(fld, None)


def _matches(axes: dict, entry: dict) -> bool:
    return all(axes.get(k) == v for k, v in entry.items())


def cell_id_for(config: CellConfig, extra_axes: list[str]) -> str:
    parts = [config.cell_id]
    for key in extra_axes:
        value = getattr(config, key)
        value = "+".join(map(str, value)) if isinstance(value, tuple) else value
        parts.append(f"{key}{value}")
    return re.sub(r"[^A-Za-z0-9_.+-]", "", "-".join(str(p) for p in parts))


def include_combinations(entry: dict) -> list[dict]:
    """The cells an ``include`` entry adds: one, or one per combination of the values of its keys given as
    lists (``{cell: [gru, lstm], seed: [0, 1]}``: four). For a key whose value is itself a list (``betas``,
    ``prefixes``), a list is that value, and a list of lists its alternatives."""
    from harness.spec.config import SEQUENCE_FIELDS

    def alternatives(key, value):
        if not isinstance(value, list):
            return [value]
        if key in SEQUENCE_FIELDS and not all(isinstance(v, list) for v in value):
            return [value]
        return value

    keys = list(entry)
    return [dict(zip(keys, values)) for values in itertools.product(*(alternatives(k, entry[k]) for k in keys))]


def expand(suite: Suite) -> list[GridCell]:
    size = 1
    for values in suite.matrix.values():
        size *= len(values)
    included = [combo for entry in suite.include for combo in include_combinations(entry)]
    if size + len(included) > MAX_CELLS:
        raise HarnessError(f"{suite.path}: the matrix expands to {size + len(included):,} cells, more than "
                           f"{MAX_CELLS:,}; split the suite")
    keys = list(suite.matrix)
    combos = [dict(zip(keys, values)) for values in itertools.product(*suite.matrix.values())]
    combos = [c for c in combos if not any(_matches(c, e) for e in suite.exclude)]
    for entry in included:
        if not any(_matches(c, entry) and set(entry) <= set(c) for c in combos):
            combos.append(dict(entry))
    extra = suite.extra_axes()
    names = {fld: key for fld, key in FIELD_TO_SUITE_KEY.items()}
    cells, seen = [], {}
    for combo in combos:
        config = build_config({**suite.defaults, **combo}, f"{suite.path}: cell {_describe(combo)}", names)
        cell_id = cell_id_for(config, extra)
        if cell_id in seen:
            if seen[cell_id] != config:
                raise HarnessError(f"{suite.path}: cells {_describe(combo)} and another one both get the id "
                                   f"{cell_id!r}; make their values differ in letters or digits")
            continue
        seen[cell_id] = config
        axes = {k: getattr(config, k) for k in list(GRID_KEYS) + extra}
        cells.append(GridCell(cell_id, config, axes))
    if not cells:
        raise HarnessError(f"{suite.path}: the matrix expands to no cells")
    return cells


def _describe(combo: dict) -> str:
    return "{" + ", ".join(f"{k}: {shorten(str(v), 40)}" for k, v in combo.items()) + "}" if combo else "(defaults)"


def _same(a, b) -> bool:
    """Equal as values of one setting: 1 and 1.0 are, true and 1 are not."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def filter_cells(cells: list[GridCell], only: list[str]) -> list[GridCell]:
    """``--only KEY=V1,V2`` keeps cells whose KEY is one of the values; several --only combine with AND."""
    grid = cells
    for spec in only or []:
        key, eq, values = spec.partition("=")
        if not eq or not values:
            raise HarnessError(f"--only {quote(spec)}: expected KEY=VALUE[,VALUE...], e.g. cell=lstm")
        fld = field_for_axis(key.strip(), f"--only {quote(spec)}")
        wanted = [_parse_value(v.strip()) for v in values.split(",")]
        known = list(dict.fromkeys(getattr(c.config, fld) for c in grid))  # a list: a value may be unhashable
        unknown = [w for w in wanted if not any(_same(w, k) for k in known)]
        if unknown:
            raise HarnessError(f"--only {quote(spec)}: no cell has {fld} = {quote(unknown[0])} "
                               f"(values: {shorten(', '.join(map(str, sorted(known, key=str))), 200)})")
        cells = [c for c in cells if any(_same(getattr(c.config, fld), w) for w in wanted)]
        if not cells:
            raise HarnessError(f"--only {quote(spec)}: no cell matches all --only filters together")
    return cells


def with_settings(cells: list[GridCell], sets: list[str], suite: Suite, where: str) -> list[GridCell]:
    """``cells`` of ``suite`` with the ``--set`` assignments ``sets`` applied to each, cell for cell (one
    side of `harness ab`): a setting changes the cells that were chosen, even where it is a matrix axis of
    the suite, so that both sides keep the same cells. Two cells that become one are an error."""
    settings = Suite(name=suite.name, path=suite.path)
    for assignment in sets:
        apply_set(settings, assignment)
    extra = suite.extra_axes()
    changed, seen = [], {}
    for cell in cells:
        config = build_config({**cell.config.model_dump(), **settings.defaults},
                              f"{suite.path}: cell {cell.cell_id} with {where}", FIELD_TO_SUITE_KEY)
        cell_id = cell_id_for(config, extra)
        if cell_id in seen:
            raise HarnessError(f"{suite.path}: with {where}, cells {seen[cell_id]} and {cell.cell_id} both become "
                               f"{cell_id}; --set-base/--set-new may change settings but not the grid: choose one "
                               "with --only")
        seen[cell_id] = cell.cell_id
        changed.append(GridCell(cell_id, config, {k: getattr(config, k) for k in list(GRID_KEYS) + extra}))
    return changed


def recorded_suite(stored: dict, path: str) -> Suite:
    """The suite a run folder recorded (run.json's ``suite``, resolved), to expand again."""
    return Suite(name=str(stored.get("name")), path=path, defaults=dict(stored.get("defaults") or {}),
                 matrix=dict(stored.get("matrix") or {}), exclude=list(stored.get("exclude") or []),
                 include=list(stored.get("include") or []))


def cell_changes(stored: dict, suite: Suite) -> str:
    """What makes ``suite`` expand to other cells than the suite a run folder recorded (run.json's
    ``suite``, resolved): "" when every cell is the same, else the keys that changed. A resume is refused
    only for that: the description, the claims or the order of a matrix axis change no cell."""
    after = {c.cell_id: c.config.config_hash() for c in expand(suite)}
    try:
        before = {c.cell_id: c.config.config_hash() for c in expand(recorded_suite(stored, f"{suite.path} (as recorded)"))}
    except (HarnessError, AttributeError, TypeError, ValueError) as exc:
        return f"the recorded suite no longer expands: {shorten(str(exc), 200)}"
    if before == after:
        return ""
    now = suite.resolved()
    changes = []
    old_defaults, new_defaults = stored.get("defaults") or {}, now["defaults"]
    for key in [k for k in FIELDS if k in old_defaults or k in new_defaults]:
        old, new = old_defaults.get(key), new_defaults.get(key)
        if old != new:
            changes.append(f"{FIELD_TO_SUITE_KEY.get(key, key)} {quote(old, 40)} -> {quote(new, 40)}")
    old_matrix, new_matrix = stored.get("matrix") or {}, now["matrix"]
    for key in [k for k in FIELDS if k in old_matrix or k in new_matrix]:
        old, new = old_matrix.get(key), new_matrix.get(key)
        if sorted(map(repr, old or [])) != sorted(map(repr, new or [])):
            changes.append(f"matrix.{key} {quote(old, 40)} -> {quote(new, 40)}")
    changes += [part for part in ("exclude", "include") if (stored.get(part) or []) != now[part]]
    if not changes:  # same suite text, other cells: the code's defaults or cell ids changed
        differ = sorted(set(before.items()) ^ set(after.items()))
        changes.append(f"{len({cid for cid, _ in differ})} cells differ, e.g. {differ[0][0]}")
    return "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
