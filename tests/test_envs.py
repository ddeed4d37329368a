"""envs/batchscale.yaml (conda, for clusters) must list what pyproject.toml lists, at the same bounds."""

import re
import tomllib

import yaml

from conftest import REPO

# PyPI name -> conda-forge name where they differ
CONDA_NAMES = {"torch": "pytorch"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(.*)$", requirement)
    return match.group(1).lower(), match.group(2).replace(" ", "")


def test_conda_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.update(dict(_split(r) for r in extra))
    env = yaml.safe_load((REPO / "envs" / "batchscale.yaml").read_text())
    listed = dict(_split(d) for d in env["dependencies"] if isinstance(d, str) and d not in ("pip",))
    listed.pop("python", None)
    expected = {CONDA_NAMES.get(name, name): bound for name, bound in wanted.items()}
    assert listed == expected
