"""Types and ranges of model and dataset options, checked before any job starts.

Every option's type comes from the callable's annotations (`hidden: list[int]` must be a list of
integers), so a user's own `package.module:callable` is type-checked too. The built-ins add ranges and
allowed values here, one small JSON schema per callable: a builder would otherwise clamp `width: 0` or
`hidden: [-5]` to a 1-unit layer and train it without a word.
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

# Ranges and allowed values of the built-ins' options (types alone come from their annotations).
MODEL_OPTIONS = {
    "mlp": {"hidden": LAYER_SIZES, "width": POSITIVE, "activation": {"type": "string", "enum": ["relu", "tanh"]}},
    "cnn": {"channels": {**LAYER_SIZES, "minItems": 1}, "width": POSITIVE},
    "cnn_bn": {"channels": {**LAYER_SIZES, "minItems": 1}, "width": POSITIVE},
    "resnet18": {"width": POSITIVE},
    "resnet34": {"width": POSITIVE},
    "vgg16_bn": {"width": POSITIVE},
    "mobilenetv2": {"width": POSITIVE},
    "drn_d_22": {"width": POSITIVE},
    "alexnet": {"width": POSITIVE, "hidden": POSITIVE_INT, "dropout": DROPOUT},
    "lstm": {"layers": POSITIVE_INT, "hidden": POSITIVE_INT, "embedding_dim": POSITIVE_INT, "dropout": DROPOUT,
             "width": POSITIVE},
}
DATASET_OPTIONS = {
    "digits": {"test_fraction": OPEN_FRACTION},
    "teacher": {"n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "dim": POSITIVE_INT, "classes": CLASSES,
                "hidden": POSITIVE_INT, "label_noise": UNIT_INTERVAL},
    "least_squares": {"n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "dim": POSITIVE_INT, "decay": NON_NEGATIVE,
                      "noise": NON_NEGATIVE},
    "synthetic_images": {"n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "classes": CLASSES,
                         "size": {"type": "integer", "minimum": 4}, "difficulty": NON_NEGATIVE},
    "text_corpus": {"vocab_size": {"type": "integer", "minimum": 3}, "bptt": POSITIVE_INT,
                    "lowercase": {"type": "boolean"}, "test_fraction": OPEN_FRACTION},
    "synthetic_segmentation": {"size": {"type": "integer", "minimum": 8}, "num_classes": {**CLASSES, "maximum": 255},
                               "n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "noise": NON_NEGATIVE,
                               "ignore_fraction": UNIT_INTERVAL, "max_shapes": POSITIVE_INT},
    "mnist": {"train_examples": {"type": ["integer", "null"], "minimum": 1}, "pad": {"type": "boolean"}},
    "svhn": {"train_examples": {"type": ["integer", "null"], "minimum": 1}, "extra": {"type": "boolean"}},
    "wikitext2": {"bptt": POSITIVE_INT, "test_split": {"type": "string", "enum": ["test", "valid"]}},
    "cityscapes": {"size": {"type": "array", "items": POSITIVE_INT, "minItems": 2, "maxItems": 2},
                   "test_split": {"type": "string", "enum": ["val", "test"]}},
}
BUILTIN_OPTIONS = {"model": MODEL_OPTIONS, "dataset": DATASET_OPTIONS}

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


def option_schema(function, kind: str, name: str, fixed: tuple) -> dict:
    """The JSON schema of a callable's options: annotations for types, BUILTIN_OPTIONS for ranges."""
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
    for option, schema in BUILTIN_OPTIONS.get(kind, {}).get(name, {}).items():
        properties[option] = {**properties.get(option, {}), **schema}
    return {"type": "object", "properties": properties}
