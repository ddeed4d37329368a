"""Types and ranges of model and dataset options, checked before any job starts.

Every option's type comes from the callable's annotations (`hidden: list[int]` must be a list of
integers), so a user's own `package.module:callable` is type-checked too. The built-ins add ranges and
allowed values where they register (`register_model(name, options=...)`, `register_dataset(...)`), built
from the constants here: a builder would otherwise clamp `width: 0` or `hidden: [-5]` to a 1-unit layer
and train it without a word.
"""

from __future__ import annotations

import inspect
import types
import typing

POSITIVE_INT = {"type": "integer", "minimum": 1}
POSITIVE = {"type": "number", "exclusiveMinimum": 0}
NON_NEGATIVE = {"type": "number", "minimum": 0}
DROPOUT = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
OPEN_FRACTION = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
UNIT_INTERVAL = {"type": "number", "minimum": 0, "maximum": 1}
LAYER_SIZES = {"type": "array", "items": POSITIVE_INT}
CLASSES = {"type": "integer", "minimum": 2}

_SCALARS = {int: {"type": "integer"}, float: {"type": "number"}, bool: {"type": "boolean"}, str: {"type": "string"}}


def annotation_schema(annotation) -> dict | None:
    """A JSON schema for a parameter annotation (int, float, bool, str, list[int], int | None, ...).

    None when the annotation says nothing checkable (missing, Any, a class of the user's own).
    """
    if annotation in _SCALARS:
        return dict(_SCALARS[annotation])
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        item = annotation_schema(args[0]) if args else None
        return {"type": "array", **({"items": item} if item else {})}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = annotation_schema(args[0])
            return {"type": "array", **({"items": item} if item else {})}
        item = annotation_schema(args[0]) if args and len(set(args)) == 1 else None
        sized = {"minItems": len(args), "maxItems": len(args)} if args else {}
        return {"type": "array", **sized, **({"items": item} if item else {})}
    if origin in (typing.Union, types.UnionType):
        members = [annotation_schema(a) for a in args if a is not type(None)]
        if len(members) == 1 and members[0] and type(None) in args:
            schema = dict(members[0])
            schema["type"] = [schema["type"], "null"]
            return schema
    return None


def option_schema(function, fixed: tuple, ranges: dict | None = None) -> dict:
    """The JSON schema of a callable's options: annotations for types, `ranges` (a built-in's registration:
    option -> JSON schema) for ranges and allowed values."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # annotations naming things that cannot be resolved: no type information
        hints = {}
    properties = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name in fixed or parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        schema = annotation_schema(hints.get(parameter.name))
        if schema:
            properties[parameter.name] = schema
    for option, schema in (ranges or {}).items():
        properties[option] = {**properties.get(option, {}), **schema}
    return {"type": "object", "properties": properties}
