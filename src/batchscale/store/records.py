"""What a stage wrote, recorded beside it, so the next stage reads only what was written.

The analyze rule writes `analysis_record.json` in a study's folder: the study, the hash of its config, the
content hash of the cube it read and the sha256 of every file it wrote. The figures and the summary read
those files through `read_csv` and `read_json` here, which refuse a file changed since (a value edited by
hand in critical_batch.json would otherwise flow into the summary) and name any file that cannot be read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from batchscale.errors import StageInputError

RECORD = "analysis_record.json"
RERUN = "rerun the study's analysis: snakemake --forcerun analyze (or delete the file)"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_record(folder, paths, study: str, study_config_sha256: str, cube_sha256: str) -> Path:
    """Record the files a stage just wrote in `folder` (paths: the files; names are taken relative to it)."""
    folder = Path(folder)
    files = {Path(path).name: file_sha256(path) for path in paths}
    record = {"study": study, "study_config_sha256": study_config_sha256, "cube_content_sha256": cube_sha256,
              "files": dict(sorted(files.items()))}
    target = folder / RECORD
    target.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return target


def verified(path) -> Path:
    """`path`, once its sha256 matches the record of its folder (a folder without a record is not checked:
    files written by `batchscale analyze` for a sweep, or by hand for a test)."""
    path = Path(path)
    record_path = path.parent / RECORD
    if not record_path.exists():
        return path
    try:
        files = json.loads(record_path.read_text())["files"]
    except (OSError, ValueError, KeyError) as err:
        raise StageInputError(f"record {record_path}: cannot be read ({err}); {RERUN}") from None
    if path.name in files and path.exists() and file_sha256(path) != files[path.name]:
        raise StageInputError(f"{path}: changed since the analysis wrote it (its sha256 differs from {RECORD}); {RERUN}")
    return path


def read_csv(path) -> pd.DataFrame:
    """A table the analysis wrote, checked against its record; a file that cannot be read names itself."""
    try:
        return pd.read_csv(verified(path))
    except (OSError, ValueError, pd.errors.ParserError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StageInputError(f"{path}: cannot be read ({reason}); {RERUN}") from None


def read_json(path):
    """A JSON document the analysis wrote, checked against its record; broken JSON names the file."""
    try:
        return json.loads(verified(path).read_text())
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StageInputError(f"{path}: cannot be read ({reason}); {RERUN}") from None
