"""The JSON Schema of a suite file: what an editor needs to complete and check a suite
(``# yaml-language-server: $schema=...``). ``harness schema`` prints it.

It is the schema of the pydantic model that the suite loader checks a file's structure with
(``harness.spec.suite_file``): every key a suite may set, in its section (``train.lr``) and as a matrix axis
or an ``exclude``/``include`` entry (flat, ``lr``, or with its section, ``train.lr``), with the type, range and
choices of the cell configuration (``CellConfig``); claims and conditions with their documented shapes. The
loader still decides, with its one-line errors, and checks what a schema cannot (an axis of a claim that the
matrix does not vary, an exclude entry that could match no cell).
"""

from __future__ import annotations

from harness.spec.suite_file import suite_file_model

SCHEMA_ID = "https://rnn-harness.invalid/suite.schema.json"


def _plain(node):
    """The schema without what pydantic adds of its own: a title per key and a default of null (an optional
    key of the model), which an editor would offer as a value."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()
                if not (k == "default" and v is None) and not (k == "title" and isinstance(v, str) and "properties" not in node)}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def suite_schema() -> dict:
    schema = _plain(suite_file_model().model_json_schema())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "description": "A suite file of rnn-harness: defaults by section, a matrix of axes, claims (docs/guide.md).",
        **schema,
    }
