"""Reading the alert rules (``cryptolake.common.alert_rules``) from YAML."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from cryptolake.common.alert_rules import AlertRules, RulesError


def parse_rules(text: str, source: str = "rules") -> AlertRules:
    """Rules from YAML text; RulesError names the file, rule and field that is wrong."""
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise RulesError(f"{source}: not YAML: {error}") from error
    if not isinstance(document, dict):
        raise RulesError(f"{source}: expected a mapping with a rules: list")
    try:
        return AlertRules.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise RulesError(f"{source}: {problems}") from error


def load_rules(path: Path) -> AlertRules:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RulesError(f"cannot read the alert rules {path}: {error}") from error
    return parse_rules(text, str(path))
