"""The published JSON Schema agrees with the validator and with the shipped examples."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from policies.errors import PolicyValidationError
from policies.loader import parse_policy
from policies.schema import json_schema, json_schema_text

ROOT = Path(__file__).parents[2]
PUBLISHED = ROOT / "policies" / "schema" / "policy.schema.json"
EXAMPLES = sorted((ROOT / "policies" / "examples").glob("*.yaml"))


def test_published_schema_is_current() -> None:
    assert PUBLISHED.read_text(encoding="utf-8") == json_schema_text(), (
        "policies/schema/policy.schema.json is stale: "
        "run `edgeguard schema > policies/schema/policy.schema.json`"
    )


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(PUBLISHED.read_text(encoding="utf-8")))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_examples_validate_against_schema(example: Path) -> None:
    doc = yaml.safe_load(example.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(json_schema()).validate(doc)


@pytest.mark.parametrize(
    ("snippet", "bad_key"),
    [
        ({"rules": [{"action": "accept", "form": "lan"}]}, "form"),
        ({"zones": {"lan": {"interfaces": ["lan0"], "adresses": []}}}, "adresses"),
        ({"nat": {"masquerade": ["lan"], "port_forward": []}}, "port_forward"),
        ({"site": {"name": "x", "tz": "UTC"}}, "tz"),
    ],
)
def test_unknown_keys_are_refused_by_schema_and_validator(
    snippet: dict[str, object], bad_key: str
) -> None:
    doc: dict[str, object] = {
        "version": 1,
        "site": {"name": "x"},
        "zones": {"lan": {"interfaces": ["lan0"]}},
        **snippet,
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(json_schema()).validate(doc)
    with pytest.raises(PolicyValidationError) as exc:
        parse_policy(yaml.safe_dump(doc), "p.yaml")
    assert any(f"unknown key '{bad_key}'" in p.message for p in exc.value.problems)
