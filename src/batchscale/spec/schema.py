"""The config schema (workflow/schemas/config.schema.yaml) and one-line messages for what it refuses.

The schema's list of strategies is filled from the strategy registry (batchscale.spec.strategies), so a
new strategy is allowed everywhere once its module exists.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from batchscale.errors import ConfigError
from batchscale.spec.reading import numeric_string_hint
from batchscale.spec.strategies import STRATEGIES

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config.schema.yaml"


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return SCHEMA_PATH.read_text()


def load_schema() -> dict:
    """The schema as a dict (a fresh copy), its strategy enum taken from the registry."""
    schema = yaml.safe_load(_schema_text())
    schema["$defs"]["strategy"]["enum"] = list(STRATEGIES)
    return schema


def validator_with_defaults(schema: dict):
    """A Draft 2020-12 validator that also fills `default` values into the instance."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop_schema in properties.items():
                if "default" in prop_schema and name not in instance:
                    instance[name] = copy.deepcopy(prop_schema["default"])
        yield from validate_properties(validator, properties, instance, subschema)

    extended = jsonschema.validators.extend(base, {"properties": properties_with_defaults})
    return extended(schema)


def _key_path(prefix: str, path) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in path]
    return ".".join(parts) or "(top level)"


def _describe(error: jsonschema.ValidationError, prefix: str) -> str:
    """One line: which key, what is wrong, what is allowed."""
    key = _key_path(prefix, error.absolute_path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        where = key if key != "(top level)" else "top level"
        names = ", ".join(repr(u) for u in unknown)
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"config key {where}: unknown key {names}{hint}"
    if kind == "enum":
        return f"config key {key}: {value!r} is not allowed; allowed values: {', '.join(map(str, expected))}"
    if kind == "type":
        wanted = expected if isinstance(expected, str) else " or ".join(expected)
        return f"config key {key}: expected {wanted}, got {value!r}{numeric_string_hint(value)}"
    if kind == "minimum":
        return f"config key {key}: must be >= {expected}, got {value!r}"
    if kind == "exclusiveMinimum":
        return f"config key {key}: must be > {expected}, got {value!r}"
    if kind == "maximum":
        return f"config key {key}: must be <= {expected}, got {value!r}"
    if kind == "exclusiveMaximum":
        return f"config key {key}: must be < {expected}, got {value!r}"
    if kind == "minItems":
        return f"config key {key}: needs at least {expected} item(s), got {len(value)}"
    if kind == "minProperties":
        return f"config key {key}: needs at least {expected} entry(ies)"
    if kind == "uniqueItems":
        return f"config key {key}: items must be unique, got {value!r}"
    if kind == "required":
        return f"config key {key}: missing required key {error.message.split(chr(39))[1]!r}"
    if kind == "maxLength":
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"config key {key}: {shown!r} has {len(value)} characters; allowed: at most {expected}"
    if kind == "pattern" or kind == "propertyNames":
        return f"config key {key}: name {value!r} must use letters, digits, '_', '-', '.'"
    if kind == "oneOf":
        if key.endswith("batch_sizes"):
            return f"config key {key}: expected a list of positive integers or {{min, max}}, got {value!r}"
        if key.endswith("threshold"):
            return (f"config key {key}: expected lower_quartile_of_largest, {{quantile_of_largest: q}} "
                    f"with 0 < q < 1 or {{fixed: value}} with value > 0, got {value!r}")
        return f"config key {key}: {value!r} matches none of the allowed forms"
    return f"config key {key}: {error.message}"


def first_error(validator, instance, prefix: str) -> None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # The shallowest error names the key; for a oneOf, _describe lists the allowed forms.
        error = errors[0]
        if error.validator == "oneOf" and error.context and isinstance(error.instance, list):
            # a list was given, so the list form was meant: report what is wrong with it
            list_errors = [e for e in error.context if e.schema_path and e.schema_path[0] == 0]
            if list_errors:
                error = max(list_errors, key=lambda e: len(e.absolute_path))
        raise ConfigError(_describe(error, prefix))
