"""The shape of a suite file as pydantic models: one source for the loader's checks of its structure
(``harness.spec.suite``: which keys exist, which are mappings and lists) and for its JSON Schema
(``harness schema``, ``harness.spec.schema``).

The models check shape only. A value's type and range are the cell configuration's to check
(``CellConfig``, when the suite expands), and the schema shows them through ``WithJsonSchema`` from
``CellConfig``'s own schema; claims and conditions are parsed by ``harness.spec.claims``. A validation
error becomes the loader's one line naming the file, the key and the value (``shape_error``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, WithJsonSchema, create_model

from harness.errors import quote, shorten
from harness.spec.config import FIELDS, SECTIONS, CellConfig, suggest

TOP_KEYS = ("name", "description", "data", "model", "train", "eval", "run", "matrix", "exclude", "include",
            "claims", "conditions")
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


@lru_cache(maxsize=1)
def field_schemas() -> dict[str, dict]:
    """Each configuration field's own JSON Schema (type, range, choices), from ``CellConfig``."""
    schema = CellConfig.model_json_schema()
    out = {}
    for name in FIELDS:
        prop = dict(schema["properties"][name])
        prop.pop("title", None)
        out[name] = prop
    return out


def axis_schemas() -> dict[str, dict]:
    """A key of the matrix, exclude or include: a field name, a section's key (every, params) or section.key."""
    fields = field_schemas()
    names = {name: fields[name] for name in FIELDS}
    for section, keys in SECTIONS.items():
        for key, fld in keys.items():
            names.setdefault(key, fields[fld])
            names[f"{section}.{key}"] = fields[fld]
    return names


def _claims_schema() -> dict:
    from harness.spec.claims import AXIS_METRICS, CLAIM_NAMES, COST_METRICS, PPL_METRICS

    subset = {"type": "object", "additionalProperties": {}}
    shorthand = {"enum": list(CLAIM_NAMES)}
    lesson_claim = {"type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"name": shorthand, "min_seeds": {"type": "integer", "minimum": 1},
                                   "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                                   "metric": {"enum": list(PPL_METRICS) + ["best_causal_ppl", "selected_causal_ppl"]
                                              + list(COST_METRICS)},
                                   "basis": {"enum": ["epochs", "time"]},
                                   "margin": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                                   "threshold": {"type": "number", "exclusiveMinimum": 0},
                                   "directions": {"anyOf": [{"enum": ["uni", "bi"]},
                                                            {"type": "array", "items": {"enum": ["uni", "bi"]}}]}}}
    axis_claim = {"type": "object", "required": ["name", "axis", "metric", "expect"], "additionalProperties": False,
                  "properties": {"name": {"type": "string", "minLength": 1}, "axis": {"enum": list(axis_schemas())},
                                 "metric": {"enum": list(AXIS_METRICS)}, "expect": {"enum": ["lower", "higher"]},
                                 "base": {"type": ["string", "number", "boolean"]}, "where": subset,
                                 "margin": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                                 "threshold": {"type": "number", "exclusiveMinimum": 0},
                                 "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                                 "min_seeds": {"type": "integer", "minimum": 1}}}
    return {"type": "array", "items": {"anyOf": [shorthand, lesson_claim, axis_claim]}}


def _conditions_schema() -> dict:
    return {"type": "array", "items": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": {"type": "string", "minLength": 1}, "where": {"type": "object", "additionalProperties": {}},
                       "choose": {"enum": list(axis_schemas())}}}}


@lru_cache(maxsize=1)
def suite_file_model() -> type[BaseModel]:
    """The model of a whole suite file (built once: its sections follow ``SECTIONS``)."""
    fields = field_schemas()
    forbid = ConfigDict(extra="forbid")
    sections = {
        section: create_model(f"{section.title()}Section", __config__=forbid,
                              **{key: (Annotated[Any, WithJsonSchema(fields[fld])], None) for key, fld in keys.items()})
        for section, keys in SECTIONS.items()}
    axes = axis_schemas()
    matrix_schema = {"type": "object", "additionalProperties": False,
                     "properties": {name: {"type": "array", "minItems": 1, "items": prop} for name, prop in axes.items()}}
    entry_schema = {"type": "object", "minProperties": 1, "additionalProperties": False,
                    "properties": {name: {} for name in axes}}
    entries = Annotated[list[Annotated[dict[Any, Any], Field(min_length=1)]] | None,
                        WithJsonSchema({"type": "array", "items": entry_schema})]
    return create_model(
        "SuiteFile",
        __config__=ConfigDict(extra="forbid", title="rnn-harness suite"),
        name=(Annotated[str, StringConstraints(pattern=NAME_PATTERN), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})], ...),
        description=(Annotated[str | None, WithJsonSchema({"type": "string"})], None),
        **{section: (Annotated[model | None, WithJsonSchema(model.model_json_schema())], None)
           for section, model in sections.items()},
        matrix=(Annotated[dict[Any, Annotated[list[Any], Field(min_length=1)]] | None, WithJsonSchema(matrix_schema)], None),
        exclude=(entries, None),
        include=(entries, None),
        claims=(Annotated[list[Any] | None, WithJsonSchema(_claims_schema())], None),
        conditions=(Annotated[Any, WithJsonSchema(_conditions_schema())], None),
    )


def check_shape(raw: dict, where: str) -> None:
    """Raise the loader's one-line error for the first thing wrong with the suite's structure, in the
    order a reader meets it: an unknown top-level key, then the keys as ``TOP_KEYS`` lists them."""
    from harness.errors import HarnessError

    try:
        suite_file_model().model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()

        def order(err):
            loc = err["loc"]
            top = str(loc[0]) if loc else ""
            unknown_top = err["type"] == "extra_forbidden" and len(loc) == 1
            return (0 if unknown_top else 1, TOP_KEYS.index(top) if top in TOP_KEYS else len(TOP_KEYS), len(loc))

        raise HarnessError(shape_error(min(errors, key=order), raw, where)) from None


def shape_error(err: dict, raw: dict, where: str) -> str:
    """The one line of a pydantic error about a suite's structure."""
    loc, kind = err["loc"], err["type"]
    top = loc[0] if loc else None
    if kind == "extra_forbidden" and len(loc) == 1:
        return f"{where}: unknown top-level key {quote(top)}{suggest(shorten(str(top)), TOP_KEYS)}"
    if top == "name":
        return f"{where}: name = {quote(raw.get('name'))}: required, letters, digits, '.', '_' or '-' only"
    if top == "description":
        return f"{where}: description must be text"
    if top in SECTIONS:
        if len(loc) == 1:
            return f"{where}: {top} must be a mapping of keys to values"
        key = str(loc[1])
        other = next((s for s, k in SECTIONS.items() if key in k), None)
        hint = f" (it belongs in {other!r})" if other else suggest(shorten(key), SECTIONS[top])
        return f"{where}: unknown key {top}.{shorten(key)}{hint}"
    if top == "matrix":
        if len(loc) == 1:
            return f"{where}: matrix must be a mapping of axis to a list of values"
        key = loc[1]
        return f"{where}: matrix.{key} = {quote(raw['matrix'].get(key))}: must be a non-empty list"
    if top in ("exclude", "include"):
        return f"{where}: {top} must be a list of non-empty mappings of axis to value"
    if top == "claims":
        return f"{where}: claims must be a list"
    return f"{where}: {'.'.join(map(str, loc))}: {err['msg']}"
