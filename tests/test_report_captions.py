"""The report's captions (workflow/report/*.rst): every one the workflow names exists, none is left unused,
and each renders as `snakemake --report` renders it (Jinja, then reStructuredText) without an error or a
warning from docutils."""

from __future__ import annotations

import io
import re
import warnings as warnings_module
from types import SimpleNamespace

import docutils.core
import jinja2
import pytest

from batchscale.spec import manifest
from conftest import REPO

REPORT = REPO / "workflow" / "report"
CAPTIONS = sorted(REPORT.glob("*.rst"))


def manifest_captions() -> set[str]:
    """The captions of every table and figure of spec.manifest."""
    outputs = []
    for value in vars(manifest).values():
        if isinstance(value, manifest.Output):
            outputs.append(value)
        elif isinstance(value, tuple) and value and all(isinstance(v, manifest.Output) for v in value):
            outputs += value
    return {output.caption for output in outputs if output.caption is not None}


def named_captions() -> set[str]:
    """Every caption the workflow names: the manifest's, those written into rules, and the Snakefile's."""
    names = manifest_captions()
    for path in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        names |= set(re.findall(r"report/(\w+)\.rst", path.read_text()))
    return names


def test_every_caption_the_workflow_names_exists_and_every_caption_is_named():
    present = {path.stem for path in CAPTIONS}
    named = named_captions()
    assert "local_critical_batch" in named and "local_critical_batch_table" in named and "workflow" in named
    assert not named - present, f"captions named but missing in workflow/report: {sorted(named - present)}"
    assert not present - named, f"captions no output names: {sorted(present - named)}"


def render(path) -> str:
    """The caption as Snakemake's report renders it: a Jinja template (trim_blocks, lstrip_blocks) with a
    `snakemake` object; StrictUndefined, so a name Snakemake would not have fails here."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    snakemake = SimpleNamespace(wildcards=SimpleNamespace(study="digits_mlp", comparison="architectures"),
                                config={}, params=SimpleNamespace(), input=[], output=[])
    return env.from_string(path.read_text()).render(snakemake=snakemake, categories={}, files=[])


@pytest.mark.parametrize("path", CAPTIONS, ids=[path.name for path in CAPTIONS])
def test_every_caption_renders_without_a_docutils_warning(path):
    warnings = io.StringIO()
    text = render(path)
    docutils.core.publish_doctree(text, source_path=str(path), settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": warnings})
    assert warnings.getvalue() == "", f"{path.name}:\n{warnings.getvalue()}"
    # and as HTML, as Snakemake publishes it (with the argument it passes, which docutils plans to rename)
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("ignore", PendingDeprecationWarning)
        html = docutils.core.publish_parts(text, writer_name="html", settings_overrides={
            "report_level": 2, "halt_level": 5, "warning_stream": warnings})["body"]
    assert warnings.getvalue() == "" and "system-message" not in html
