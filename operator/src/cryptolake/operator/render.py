"""``cryptolake-operator render``: a ``CryptoPipeline`` manifest → the YAML of every object the
operator would create for it, from the same builders as the reconciler (no cluster)."""

from __future__ import annotations

import yaml
from pydantic import ValidationError

from cryptolake.operator.builders import (
    KAFKA_USERS,
    Pipeline,
    build_ca_secret,
    build_children,
    build_kafka_secret,
    build_minio_secret,
    build_minio_tls_secret,
)
from cryptolake.operator.models import GROUP, KIND, VERSION, CryptoPipelineSpec, spec_error
from cryptolake.operator.pki import KeyPair, make_ca
from cryptolake.operator.settings import OperatorSettings

# The uid the API server would give the resource; ownerReferences need one.
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"
PLACEHOLDER_KEY = "<generated>"


class RenderError(ValueError):
    """The input is not a CryptoPipeline the operator can realise (the reason says which)."""


def render(text: str, namespace: str = "default") -> str:
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc]
    except yaml.YAMLError as error:
        raise RenderError(f"not YAML: {error}") from error
    if len(documents) != 1:
        raise RenderError(f"expected one CryptoPipeline, found {len(documents)} documents")
    (resource,) = documents
    if not isinstance(resource, dict):
        raise RenderError(f"not a mapping but a {type(resource).__name__}: no CryptoPipeline")
    if resource.get("apiVersion") != f"{GROUP}/{VERSION}" or resource.get("kind") != KIND:
        raise RenderError(
            f"not a {GROUP}/{VERSION} {KIND}: apiVersion {resource.get('apiVersion')!r}, "
            f"kind {resource.get('kind')!r}"
        )
    meta = resource.get("metadata") or {}
    if not isinstance(meta, dict) or not meta.get("name"):
        raise RenderError("metadata.name is missing")
    try:
        spec = CryptoPipelineSpec.model_validate(resource.get("spec") or {})
    except ValidationError as error:
        field, message = spec_error(error)
        raise RenderError(f"{field}: {message}") from error
    pipeline = Pipeline(
        meta["name"],
        meta.get("namespace", namespace),
        meta.get("uid", PLACEHOLDER_UID),
        spec,
        OperatorSettings().images(),
    )
    children = []
    if pipeline.generates_credentials:
        children.append(build_minio_secret(pipeline, PLACEHOLDER_KEY, PLACEHOLDER_KEY))
    generated = KeyPair(PLACEHOLDER_KEY, PLACEHOLDER_KEY)
    if pipeline.kafka_tls or pipeline.minio_tls:
        # A real CA (the trust store is derived from its certificate), shown as placeholders.
        ca = build_ca_secret(pipeline, make_ca("placeholder"))
        ca["stringData"] = dict.fromkeys([*ca["stringData"], *ca.pop("data")], PLACEHOLDER_KEY)
        children.append(ca)
    if pipeline.kafka_tls:
        passwords = dict.fromkeys(KAFKA_USERS, PLACEHOLDER_KEY)
        children.append(build_kafka_secret(pipeline, generated, passwords))
    if pipeline.minio_tls:
        children.append(build_minio_tls_secret(pipeline, generated))
    children += build_children(pipeline)
    return str(yaml.safe_dump_all(children, sort_keys=False))
