"""`harness schema`: a valid JSON Schema (draft 2020-12) that every shipped suite satisfies and that
catches the mistakes an editor should underline."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from conftest import REPO


@pytest.fixture(scope="module")
def schema():
    proc = subprocess.run([sys.executable, "-m", "harness", "schema"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.mark.parametrize("suite", sorted((REPO / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_suite_satisfies_the_schema(schema, suite):
    jsonschema.validate(yaml.safe_load(suite.read_text()), schema)


@pytest.mark.parametrize("suite, where", [
    ({"name": "s", "train": {"lr": "fast"}}, "lr"),                       # a number
    ({"name": "s", "train": {"rate": 1.0}}, "rate"),                      # no such key
    ({"name": "s", "model": {"cell": "gru", "layers": 0}}, "layers"),     # below its range
    ({"name": "s", "model": {"direction": "both"}}, "direction"),         # not a choice
    ({"name": "s", "matrix": {"hidden": []}}, "hidden"),                  # an empty axis
    ({"name": "s", "claims": [{"name": "c", "axis": "lr", "metric": "causal_ppl"}]}, "claims"),  # no expect
    ({"description": "no name"}, "name"),
])
def test_the_schema_catches_what_an_editor_should_underline(schema, suite, where):
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(suite))
    assert errors and any(where in (e.message + " ".join(map(str, e.absolute_path))) for e in errors)


def test_schema_writes_a_file(tmp_path):
    out = tmp_path / "suite.schema.json"
    proc = subprocess.run([sys.executable, "-m", "harness", "schema", "--out", str(out)], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0 and json.loads(out.read_text())["title"] == "rnn-harness suite"


def test_the_schema_and_the_loader_share_one_model_of_a_suites_shape(schema):
    from harness.errors import HarnessError
    from harness.spec.config import SECTIONS
    from harness.spec.suite import parse_suite

    for section, keys in SECTIONS.items():
        assert set(schema["properties"][section]["properties"]) == set(keys)
    # What the model refuses, the loader refuses in one line naming the key, and the schema flags too.
    for suite, message in (({"name": "s", "trian": {}}, "unknown top-level key 'trian' (did you mean 'train'?)"),
                           ({"name": "s", "train": {"every": 2}}, "unknown key train.every (it belongs in 'eval')"),
                           ({"name": "s", "matrix": {"hidden": 64}}, "matrix.hidden = 64: must be a non-empty list"),
                           ({"name": "s", "include": [{}]}, "include must be a list of non-empty mappings")):
        with pytest.raises(HarnessError) as caught:
            parse_suite(suite, "s.yaml")
        assert str(caught.value).startswith("s.yaml: ") and message in str(caught.value)
        assert list(jsonschema.Draft202012Validator(schema).iter_errors(suite))
