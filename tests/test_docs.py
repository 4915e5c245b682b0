"""The docs say what the code does: links resolve, and restated defaults match the code."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from training_helpers import REPO

from dlss_dist import models

ROOT = Path(REPO)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if "://" in target or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name} links to missing {target}"


def _documented_defaults() -> dict[str, dict[str, str]]:
    """`name`: `param=value` items of the Gin parameters section of docs/models.md."""
    text = (ROOT / "docs" / "models.md").read_text()
    section = text.split("## Gin parameters", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for bullet in re.split(r"\n- ", "\n" + section)[1:]:
        name = re.match(r"`(\w+)`:", bullet).group(1)
        documented[name] = dict(re.findall(r"`(\w+)=([^`]+)`", bullet))
    return documented


def test_the_gin_parameter_defaults_in_the_docs_are_the_code_defaults():
    documented = _documented_defaults()
    assert len(documented) >= 6
    for name, defaults in documented.items():
        signature = inspect.signature(inspect.unwrap(getattr(models, name)))
        for parameter, value in defaults.items():
            assert parameter in signature.parameters, f"{name} has no parameter {parameter}"
            code_default = signature.parameters[parameter].default
            assert ast.literal_eval(value) == code_default, (name, parameter, value, code_default)
