"""The JSON Schema of a suite file, from the pydantic model of a cell's configuration: what an editor needs
to complete and check a suite (``# yaml-language-server: $schema=...``). ``harness schema`` prints it.

Every key a suite may set, in its section (``train.lr``) and as a matrix axis or an ``exclude``/``include``
entry (flat, ``lr``, or with its section, ``train.lr``), has the type, range and choices the configuration
model gives it; claims and conditions have their documented shapes. The schema describes; the suite loader
(``harness.spec.suite``) still decides, with its one-line errors, and checks what a schema cannot (an axis of
a claim that the matrix does not vary, an exclude entry that could match no cell).
"""

from __future__ import annotations

from harness.spec.claims import AXIS_METRICS, CLAIM_NAMES, COST_METRICS, PPL_METRICS
from harness.spec.config import FIELDS, SECTIONS, CellConfig

SCHEMA_ID = "https://rnn-harness.invalid/suite.schema.json"


def field_schemas() -> dict[str, dict]:
    """Each configuration field's own JSON Schema (type, range, choices), from ``CellConfig``."""
    schema = CellConfig.model_json_schema()
    out = {}
    for name in FIELDS:
        prop = dict(schema["properties"][name])
        prop.pop("title", None)
        out[name] = prop
    return out


def suite_schema() -> dict:
    fields = field_schemas()
    sections = {}
    for section, keys in SECTIONS.items():
        sections[section] = {"type": "object", "additionalProperties": False,
                             "properties": {key: fields[fld] for key, fld in keys.items()}}
    # A key of the matrix, exclude or include: a field name, a section's key (every, params) or section.key.
    axis_names = {name: fields[name] for name in FIELDS}
    for section, keys in SECTIONS.items():
        for key, fld in keys.items():
            axis_names.setdefault(key, fields[fld])
            axis_names[f"{section}.{key}"] = fields[fld]
    matrix = {"type": "object", "additionalProperties": False,
              "properties": {name: {"type": "array", "minItems": 1, "items": prop} for name, prop in axis_names.items()}}
    entry = {"type": "object", "minProperties": 1, "additionalProperties": False,
             "properties": {name: {} for name in axis_names}}
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
                  "properties": {"name": {"type": "string", "minLength": 1}, "axis": {"enum": list(axis_names)},
                                 "metric": {"enum": list(AXIS_METRICS)}, "expect": {"enum": ["lower", "higher"]},
                                 "base": {"type": ["string", "number", "boolean"]}, "where": subset,
                                 "margin": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                                 "threshold": {"type": "number", "exclusiveMinimum": 0},
                                 "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                                 "min_seeds": {"type": "integer", "minimum": 1}}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "rnn-harness suite",
        "description": "A suite file of rnn-harness: defaults by section, a matrix of axes, claims (docs/guide.md).",
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
            "description": {"type": "string"},
            **sections,
            "matrix": matrix,
            "exclude": {"type": "array", "items": entry},
            "include": {"type": "array", "items": entry},
            "claims": {"type": "array", "items": {"anyOf": [shorthand, lesson_claim, axis_claim]}},
            "conditions": {"type": "array", "items": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {"name": {"type": "string", "minLength": 1}, "where": subset,
                               "choose": {"enum": list(axis_names)}}}},
        },
    }
