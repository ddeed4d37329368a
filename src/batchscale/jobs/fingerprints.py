"""Fingerprints of the code behind each stage, the `code` param of its rules.

Snakemake's code trigger sees only the text of a rule's `shell:` command, not the Python it calls. Each
rule therefore carries, as a param, a hash of the package files its stage can execute: the closure of
the stage's entry modules under their `batchscale` imports (top level and deferred alike), plus every
module of a package that loads its members by name (the dataset and model registries). An edit to any of
them reruns the stage's jobs and what depends on them, and nothing else.

A study's own dataset or model (`package.module:callable`) adds the source of that module file to the
train fingerprint of its study only. The hash reaches that one file: a helper module it imports is not
covered (`snakemake --forcerun` the study's packs after editing one).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = PACKAGE_ROOT.name

# What each stage runs: its entry modules (one place; the rules and tests read it).
STAGE_ENTRIES = {
    "train": ("batchscale.engine.pack", "batchscale.store.traces"),
    "branch": ("batchscale.engine.branch",),
    "cube": ("batchscale.store.cube",),
    "analysis": ("batchscale.analysis.study", "batchscale.analysis.comparison", "batchscale.analysis.tuned_tables",
                 "batchscale.analysis.branching", "batchscale.store.cube", "batchscale.report.critical_lines"),
    "figures": ("batchscale.report.figures",),  # the theory and branching figures are among its modules
    "summary": ("batchscale.report.summary", "batchscale.analysis.headline", "batchscale.analysis.theory_check",
                "batchscale.report.prediction_summary"),
    # the prediction of B_crit from short runs and its validation (workflow/rules/predict.smk)
    "predict": ("batchscale.analysis.prediction", "batchscale.analysis.prediction_validation",
                "batchscale.store.traces", "batchscale.store.records"),
}
# Packages whose members are imported by name at run time (registries): all of their files count.
REGISTRY_PACKAGES = ("batchscale.data", "batchscale.models", "batchscale.report.figures", "batchscale.spec.strategies")


def module_file(module: str) -> Path | None:
    """The file of a `batchscale` module (a package's __init__.py), or None outside the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def _imported_modules(path: Path, module: str) -> frozenset[str]:
    """Every module a file imports (anywhere in it), as absolute names; `from a import b` also yields a.b."""
    text = path.read_text()
    if PACKAGE not in text and "from ." not in text:
        return frozenset()
    tree = ast.parse(text, str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return frozenset(name for name in found if name.startswith(PACKAGE))


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@lru_cache(maxsize=None)
def module_closure(entries: tuple[str, ...]) -> tuple[Path, ...]:
    """The package files that importing `entries` can execute (parents' __init__ files included)."""
    seen: dict[str, Path] = {}
    todo = [name for entry in entries for name in _parents(entry)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_file(module)
        if path is None:
            continue
        seen[module] = path
        todo += [name for imported in _imported_modules(path, module) for name in _parents(imported)]
        if path.name == "__init__.py" and module in REGISTRY_PACKAGES:
            todo += [f"{module}.{file.stem}" for file in path.parent.glob("*.py") if file.stem != "__init__"]
    return tuple(sorted(set(seen.values())))


def files_fingerprint(files) -> str:
    """sha256 (16 hex digits) of files' package-relative names and bytes."""
    digest = hashlib.sha256()
    for file in sorted(files):
        name = file.relative_to(PACKAGE_ROOT).as_posix() if file.is_relative_to(PACKAGE_ROOT) else file.name
        digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=None)
def stage_fingerprint(stage: str) -> str:
    """The hash of the code stage `stage` (a key of STAGE_ENTRIES) runs."""
    return files_fingerprint(module_closure(STAGE_ENTRIES[stage]))


def package_fingerprint() -> str:
    """The hash of every file of the package, the schema included."""
    files = [f for f in PACKAGE_ROOT.rglob("*") if f.is_file() and f.suffix in (".py", ".yaml")]
    return files_fingerprint(f.resolve() if f.is_symlink() else f for f in files)


def user_module_file(name: str) -> Path | None:
    """The source file of the module of a `package.module:callable` name (found without importing the
    module itself), or None for a built-in name or a module that cannot be found."""
    if ":" not in name:
        return None
    module = name.partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin)


def user_code_fingerprint(study: dict) -> str:
    """The hash of a study's own dataset and model modules ("" for built-ins only)."""
    digest = hashlib.sha256()
    used = False
    for name in (study["dataset"]["name"], study["model"]["name"]):
        path = user_module_file(name)
        if ":" in name:
            used = True
            digest.update(name.encode() + b"\0" + (path.read_bytes() if path else b"(not found)") + b"\0")
    return digest.hexdigest()[:16] if used else ""


def train_fingerprint(study: dict) -> str:
    """The code param of a study's packs: the train stage's code and the study's own modules."""
    user = user_code_fingerprint(study)
    return stage_fingerprint("train") + (f"+{user}" if user else "")
