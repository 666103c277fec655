"""Docs that are generated from the code stay in step with it, and the README's links and images resolve."""

import re

import PIL.Image
from helpers import ROOT

from srtrain.config import valid_keys
from srtrain.config_doc import key_table, with_table
from srtrain.models import available_models


def test_committed_configuration_table_is_current():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == with_table(page), "run: python -m srtrain.config_doc docs/configuration.md"


def test_table_lists_every_key_and_model():
    table = key_table()
    for key in valid_keys():
        assert key == "model.name" or f"`{key}`" in table, key
    assert " - |" not in table, "a key without a meaning: add it to MEANING in srtrain/config_doc.py"
    for name in available_models():
        assert f"`{name}`" in table, name


def test_readme_and_docs_links_resolve_and_images_open():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.name} links {target}"
            if path.suffix == ".png":
                with PIL.Image.open(path) as image:
                    image.verify()
