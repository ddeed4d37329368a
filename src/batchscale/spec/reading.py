"""Reading a config file: strict YAML (duplicate keys refused), and checks on the loaded values that the
schema cannot express (keys that are not strings, NaN and infinite numbers, numbers given as strings).

Every error is a ConfigError whose one-line message names the file, line and column, or the key.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from batchscale.errors import ConfigError


YTE_KEY = "__use_yte__"  # Snakemake's switch for evaluating a config file as a template (code)


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # an unhashable key: SafeLoader names it itself
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(
                    f"config file {mark.name}, line {mark.line + 1}, column {mark.column + 1}: duplicate key "
                    f"{key!r} (first given on line {seen[key] + 1}); each key may appear once in a mapping")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path):
    """Parse a YAML config file; a syntax error or duplicate key is a ConfigError with line and column."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        loaded = loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(part for part in (err.context, err.problem) if part)
        raise ConfigError(f"config file {path}{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML: {str(err).splitlines()[0]}") from None
    finally:
        loader.dispose()
    if isinstance(loaded, dict) and YTE_KEY in loaded:
        raise ConfigError(f"config file {path}: `{YTE_KEY}` makes Snakemake evaluate the file as a YTE template, "
                          f"which runs the code in it; a batchscale config is data only: remove the key (give "
                          f"configs from others as --config file={path}, which only batchscale's YAML reader opens)")
    return loaded


def non_finite_key(node, path=()):
    """The dotted key of the first NaN or infinite number in a loaded config, or None."""
    if isinstance(node, float) and not math.isfinite(node):
        return ".".join(map(str, path)), node
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return None
    for key, value in items:
        found = non_finite_key(value, path + (key,))
        if found:
            return found
    return None


def check_plain_keys(node, path=()) -> None:
    """Every mapping key must be a string: YAML reads `1:`, `true:` and `null:` as a number, a bool and None,
    which name no study and no option (and JSON would quietly turn them into strings)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                where = ".".join(map(str, path)) or "top level"
                raise ConfigError(f"config key {where}: key {key!r} is a {type(key).__name__}, not a string; "
                                  f"quote it ('{key}') or rename it (names use letters, digits, '_', '-', '.')")
            check_plain_keys(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            check_plain_keys(value, path + (index,))


def numeric_string_hint(value) -> str:
    """For a string that reads as a number, how to write it. The validator cannot tell where it came from:
    a YAML file (quoted, or YAML 1.1's `1e-3`) or `snakemake --config 'key={a: 2}'`, which reads the value
    with YAML's BaseLoader and so passes every nested value as a string; the hint covers both."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    command_line = "snakemake --config passes the values inside {...} as strings, so set it in a --configfile"
    mantissa, e, exponent = value.strip().lower().partition("e")
    if e and "." not in mantissa:
        return (f"; {value!r} is read by YAML as a string (a float needs a dot before its exponent): in a YAML "
                f"file write {mantissa}.0e{exponent}; {command_line}")
    return f"; {value!r} is a string: in a YAML file write it without quotes; {command_line}"
