"""Writes docs/configuration.md from the services' settings classes: every variable, its
default and its meaning (the docstring under each field).

Run after changing a setting: `make docs`. A test checks that the committed file is what this
script writes and that every setting has a description.
"""

from __future__ import annotations

import importlib
import json
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

OUTPUT = Path(__file__).with_name("configuration.md")
REPO = Path(__file__).resolve().parents[1]
# (title, how it is started, module, class).
SERVICES = (
    ("Producer", "`cryptolake-producer` (`make run`; the operator's NAME-producer)",
     "cryptolake.producer.settings", "ProducerSettings"),
    ("Spark jobs", "`python -m cryptolake.jobs` (`make run`; NAME-ingest, NAME-refine)",
     "cryptolake.jobs.settings", "JobSettings"),
    ("Query API", "`cryptolake-api` (`make run`, `make api`; NAME-api)",
     "cryptolake.api.settings", "ApiSettings"),
    ("Alerts worker", "`cryptolake-alerts` (`make run` with `CRYPTOLAKE_ALERTS_FILE`; NAME-alerts)",
     "cryptolake.alerts.settings", "AlertsSettings"),
    ("Operator", "`cryptolake-operator run` (the chart's Deployment)",
     "cryptolake.operator.settings", "OperatorSettings"),
    ("Local stack", "`make run` (`cryptolake-stack run`)",
     "cryptolake.stack.supervisor", "StackSettings"),
)  # fmt: skip


def settings_classes() -> list[tuple[str, str, type[BaseSettings]]]:
    return [(title, started, getattr(importlib.import_module(module), name))
            for title, started, module, name in SERVICES]  # fmt: skip


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None or isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, Path) and value.is_absolute() and value.is_relative_to(REPO):
        value = value.relative_to(REPO)  # the checkout's own folders, wherever it is
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | tuple):
        return f"`{','.join(str(item) for item in value)}`" if value else "empty"
    if value == "":
        return "empty"
    return f"`{value}`"


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings classes by `docs/generate_configuration.py` (`make docs`);",
        "do not edit by hand. Each service reads its variables at start (pydantic-settings);",
        "command-line flags, where a service has them, win. Variables shared by several",
        "services (the broker, the topics, the table root and S3) mean the same everywhere.",
        "The OpenTelemetry SDK reads the standard `OTEL_*` variables on its own.",
        "",
    ]
    for title, started, cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        lines += [f"## {title}", "", f"Started as {started}.", "",
                  "| variable | default | meaning |", "|---|---|---|"]  # fmt: skip
        for name, field in cls.model_fields.items():
            variable = f"{prefix}{name}".upper()
            meaning = " ".join((field.description or "").split()).replace("|", "\\|")
            lines.append(f"| `{variable}` | {default_text(field)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def undocumented() -> list[str]:
    return [f"{cls.__name__}.{name}" for _, _, cls in settings_classes()
            for name, field in cls.model_fields.items() if not field.description]  # fmt: skip


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
    missing = undocumented()
    if missing:
        raise SystemExit(f"settings without a docstring: {json.dumps(missing)}")
