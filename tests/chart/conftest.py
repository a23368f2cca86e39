"""The chart tests' Helm (built from its Go module by make setup)."""

from __future__ import annotations

import pytest

from cryptolake.stack.helm import Tool
from cryptolake.stack.helm import helm as helm_binary


@pytest.fixture(scope="session")
def helm() -> Tool:
    return helm_binary()
