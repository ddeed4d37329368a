"""What the dataset and model registries share: named built-ins imported on first use, user callables
named `package.module:callable`, and options checked against a callable's signature."""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

import jsonschema

from batchscale.errors import ConfigError
from batchscale.spec.options import option_schema
from batchscale.spec.schema import first_error


def lookup(name: str, registered: dict, load_builtins: Callable[[str], None], kind: str, key: str):
    """The registered object for `name` (`load_builtins(name)` imports the module of a built-in not yet
    registered), or the callable a `package.module:callable` names."""
    if name not in registered and ":" not in name:
        load_builtins(name)
    if name in registered:
        return registered[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"config key {key}: cannot import {name!r} ({err})") from None
    allowed = ", ".join(sorted(registered))
    raise ConfigError(f"config key {key}: unknown {kind} {name!r}; allowed values: {allowed} "
                      f"or package.module:callable")


def check_options(function: Callable, options: dict, fixed: tuple, kind: str, name: str, key: str,
                  ranges: dict | None = None) -> None:
    """Every option must be a keyword of `function` (other than the `fixed` ones the engine passes), of the
    type its annotation names and in the `ranges` a built-in registered."""
    parameters = inspect.signature(function).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        allowed = [n for n in parameters if n not in fixed]
        for option in options:
            if option not in allowed:
                raise ConfigError(f"config key {key}.options.{option}: unknown option for {kind} {name!r}; "
                                  f"allowed options: {', '.join(allowed) or '(none)'}")
    first_error(jsonschema.Draft202012Validator(option_schema(function, fixed, ranges)), options, f"{key}.options")
