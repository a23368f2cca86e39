"""docs/configuration.md is what docs/generate_configuration.py writes from the settings
classes, and every setting of every service says what it means."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

GENERATOR = Path(__file__).resolve().parents[1] / "docs" / "generate_configuration.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_configuration", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_the_generated_one() -> None:
    module = generator()
    assert module.OUTPUT.read_text() == module.render(), "run `make docs` and commit the result"


def test_every_setting_has_a_description() -> None:
    assert generator().undocumented() == []


def test_each_service_and_a_shared_variable_are_listed() -> None:
    text = generator().render()
    for title in ("## Producer", "## Spark jobs", "## Query API", "## Alerts worker",
                  "## Operator", "## Local stack"):  # fmt: skip
        assert title in text
    assert text.count("| `CRYPTOLAKE_TABLE_ROOT` |") == 4  # producer, jobs, API, alerts
