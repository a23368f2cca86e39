"""The CustomResourceDefinition, generated from the models (``python -m cryptolake.operator crd``).

pydantic's JSON Schema becomes a Kubernetes structural schema: ``$ref`` inlined, optional
fields' ``anyOf [X, null]`` reduced to X, titles and ``additionalProperties: false`` dropped
(the API server prunes unknown fields), and nested objects given defaults so that omitting a
section still yields a fully defaulted spec.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from cryptolake.operator.models import (
    CONDITION_TYPES,
    GROUP,
    KIND,
    PHASES,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    CryptoPipelineSpec,
)

_DROP = {"title", "additionalProperties"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline ``$ref``s and simplify nullable unions, recursively."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        choices = [c for c in node["anyOf"] if c.get("type") != "null"]
        if len(choices) != 1:
            raise ValueError(f"cannot express {node['anyOf']} in a structural schema")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", 0) is None:
            del rest["default"]
        return _resolve({**choices[0], **rest}, defs)
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
        del node["const"]
    return {key: _resolve(value, defs) for key, value in node.items() if key not in _DROP}


def _object_defaults(model: type[BaseModel], schema: dict[str, Any]) -> dict[str, Any]:
    """Give each nested-model field built by a default factory its default object."""
    for name, field in model.model_fields.items():
        prop = schema["properties"][field.alias or name]
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _object_defaults(annotation, prop)
            if field.default_factory is not None:
                default = field.default_factory()  # type: ignore[call-arg]
                prop["default"] = default.model_dump(exclude_none=True, by_alias=True)
        elif prop.get("type") == "array" and "items" in prop:
            args = getattr(annotation, "__args__", ())
            if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                _object_defaults(args[0], prop["items"])
    return schema


def spec_schema() -> dict[str, Any]:
    raw = CryptoPipelineSpec.model_json_schema(mode="validation", by_alias=True)
    schema = _resolve({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    return _object_defaults(CryptoPipelineSpec, schema)


def status_schema() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "enum": list(CONDITION_TYPES)},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64"},
        },
    }
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": list(PHASES)},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "components": {
                "type": "object",
                "description": "Per-component state (replicas, restarts, reason).",
                "x-kubernetes-preserve-unknown-fields": True,
            },
            "sources": {"type": "string", "description": "Exchanges, for kubectl get."},
            "apiEndpoint": {"type": "string"},
            "message": {"type": "string"},
        },
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "cryptolake"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["cryptolake"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Processing",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="ProcessingReady")].status',
                        },
                        {"name": "Sources", "type": "string", "jsonPath": ".status.sources"},
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A streaming lakehouse: exchange trades → broker → "
                            "Spark Bronze/Silver/Gold Delta tables → query API.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `python -m cryptolake.operator crd` from operator/…/models.py.\n"
    body: str = yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)
    return header + body
