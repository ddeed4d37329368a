"""What the dataset and model registries share: named built-ins imported on first use, user callables
named `package.module:callable`, and options checked against a callable's signature."""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from batchscale.config import ConfigError


def lookup(name: str, registered: dict, builtin_modules: dict, package: str, kind: str, key: str):
    """The registered object for `name`, importing its built-in module or a `package.module:callable`."""
    if name in builtin_modules and name not in registered:
        importlib.import_module(f"{package}.{builtin_modules[name]}")
    if name in registered:
        return registered[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"config key {key}: cannot import {name!r} ({err})") from None
    allowed = ", ".join(sorted(set(builtin_modules) | set(registered)))
    raise ConfigError(f"config key {key}: unknown {kind} {name!r}; allowed values: {allowed} "
                      f"or package.module:callable")


def check_options(function: Callable, options: dict, fixed: tuple, kind: str, name: str, key: str) -> None:
    """Every option must be a keyword of `function` (other than the `fixed` ones the engine passes), of the
    type its annotation names and in the range batchscale.options gives for a built-in."""
    from batchscale.config import first_error
    from batchscale.options import option_schema

    parameters = inspect.signature(function).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        allowed = [n for n in parameters if n not in fixed]
        for option in options:
            if option not in allowed:
                raise ConfigError(f"config key {key}.options.{option}: unknown option for {kind} {name!r}; "
                                  f"allowed options: {', '.join(allowed) or '(none)'}")
    import jsonschema

    first_error(jsonschema.Draft202012Validator(option_schema(function, kind, name, fixed)), options,
                f"{key}.options")
