"""The validated config for the Snakefile, resolved once per (config, code) and kept on disk.

Validating builds every study's dataset and model (on PyTorch's meta device) and draws the tuned search's
Sobol points; that needs torch and scipy, seconds of CPU and most of a GB. A parse of an unchanged config
instead reads the result from `.snakemake/batchscale/config-<key>.json`, where the key hashes everything the
result depends on: the config as Snakemake holds it, every file of the package (schema included), the
study's own dataset and model modules, and the versions of Python and torch. The file is a pure function of
its key, so it speeds parsing up without making anything depend on history. A cold validation runs in a
child process, so the Snakemake process never imports torch or a user's module.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from batchscale.errors import ConfigError
from batchscale.spec.reading import check_plain_keys
from batchscale.jobs.fingerprints import package_fingerprint, user_code_fingerprint

CACHE_DIR = Path(".snakemake") / "batchscale"
KEEP = 20  # newest cache files kept


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


def cache_key(raw: dict) -> str:
    studies = raw.get("studies") if isinstance(raw.get("studies"), dict) else {}
    defaults = raw.get("defaults") if isinstance(raw.get("defaults"), dict) else {}
    user = []
    for study in studies.values():
        merged = {**defaults, **(study if isinstance(study, dict) else {})}
        names = {"dataset": merged.get("dataset"), "model": merged.get("model")}
        if all(isinstance(v, dict) and isinstance(v.get("name"), str) for v in names.values()):
            user.append(user_code_fingerprint(names))
    text = json.dumps([raw, package_fingerprint(), user, platform.python_version(), _torch_version()],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def resolve_in_child(raw: dict) -> dict:
    """load_config(raw) in a fresh `python -m batchscale resolve-config` (ConfigError on a bad config)."""
    done = subprocess.run([sys.executable, "-m", "batchscale", "resolve-config"], input=json.dumps(raw),
                          capture_output=True, text=True, cwd=os.getcwd())
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        message = lines[-1] if lines else f"validation failed (exit {done.returncode})"
        raise ConfigError(message.removeprefix("batchscale: error: "))
    return json.loads(done.stdout)


def load_config_cached(raw: dict, cache_dir: str | Path = CACHE_DIR) -> dict:
    """The resolved config of `raw` (load_config's result, through JSON), from the cache when present."""
    check_plain_keys(raw)  # JSON would turn a key 1 into "1": refuse such keys before serialising
    path = Path(cache_dir) / f"config-{cache_key(raw)}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    resolved = resolve_in_child(raw)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(resolved, sort_keys=True))
        os.replace(temporary, path)
        for old in sorted(path.parent.glob("config-*.json"), key=lambda f: f.stat().st_mtime)[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only folder only costs the next parse its speed
    return resolved
