"""Pure status: the children's observed state → phase, conditions and per-component detail.

A component is ready only when its pods say so (ready replicas, no crash loop), never just
because its object exists; "Running" needs every condition True.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from cryptolake.operator.models import SPARK_APPLICATIONS, CryptoPipelineSpec

# Container waiting reasons that mean "this will not come up by itself".
FAILING_REASONS: Final = frozenset(
    {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
     "InvalidImageName", "RunContainerError"}
)  # fmt: skip
# Which workloads make up each condition.
CONDITION_COMPONENTS: Final = {
    "BrokerReady": ("broker",),
    "StorageReady": ("storage",),
    "IngestionReady": ("producer",),
    "ProcessingReady": tuple(SPARK_APPLICATIONS),
    "ApiReady": ("api",),
}


@dataclass(frozen=True)
class WorkloadState:
    """What the operator read about one Deployment or StatefulSet and its pods."""

    desired: int
    ready: int = 0
    restarts: int = 0
    # e.g. "CrashLoopBackOff: back-off restarting failed container" of a failing pod.
    failing: str | None = None
    exists: bool = True


@dataclass
class Condition:
    type: str
    status: str
    reason: str
    message: str

    def as_dict(self, previous: dict[str, Any] | None, now: str, generation: int) -> dict[str, Any]:
        changed = previous is None or previous.get("status") != self.status
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": now
            if changed or previous is None
            else previous.get("lastTransitionTime", now),
            "observedGeneration": generation,
        }


@dataclass
class Observed:
    workloads: dict[str, WorkloadState] = field(default_factory=dict)
    # Set when the broker or S3 cannot be reached from the operator (topics, bucket).
    broker_error: str | None = None
    storage_error: str | None = None


def component_condition(
    condition: str, components: tuple[str, ...], observed: Observed, external: bool = False
) -> Condition:
    if external:
        return Condition(condition, "True", "External", "provided outside the pipeline")
    problems, waiting = [], []
    for component in components:
        state = observed.workloads.get(component)
        if state is None or not state.exists:
            waiting.append(f"{component} not created yet")
        elif state.failing:
            problems.append(f"{component}: {state.failing} ({state.restarts} restarts)")
        elif state.ready < state.desired:
            waiting.append(f"{component}: {state.ready}/{state.desired} ready")
    if problems:
        return Condition(condition, "False", "Failing", "; ".join(problems))
    if waiting:
        return Condition(condition, "False", "Progressing", "; ".join(waiting))
    return Condition(condition, "True", "Ready", "all replicas ready")


def compute_conditions(spec: CryptoPipelineSpec, observed: Observed) -> list[Condition]:
    conditions = []
    for name, listed in CONDITION_COMPONENTS.items():
        components = listed
        external = (name == "BrokerReady" and spec.broker.engine == "external") or (
            name == "StorageReady" and spec.storage.engine == "external"
        )
        if name == "ApiReady" and spec.alerts:
            components = (*components, "alerts")  # the alerts worker serves beside the API
        condition = component_condition(name, components, observed, external)
        error = {"BrokerReady": observed.broker_error, "StorageReady": observed.storage_error}
        if error.get(name):
            condition = Condition(name, "False", "Unreachable", str(error[name]))
        if spec.suspend and name in ("IngestionReady", "ProcessingReady", "ApiReady"):
            condition = Condition(name, "False", "Suspended", "spec.suspend is true")
        conditions.append(condition)
    not_ready = [c for c in conditions if c.status != "True"]
    if not not_ready:
        ready = Condition("Ready", "True", "Running", "every component is ready")
    else:
        reason = "Suspended" if spec.suspend else not_ready[0].reason
        detail = "; ".join(f"{c.type}: {c.message}" for c in not_ready)
        ready = Condition("Ready", "False", reason, detail)
    return [ready, *conditions]


def compute_phase(spec: CryptoPipelineSpec, conditions: list[Condition]) -> str:
    by_type = {c.type: c for c in conditions}
    if spec.suspend:
        return "Suspended"
    if by_type["Ready"].status == "True":
        return "Running"
    if any(c.reason in ("Failing", "Unreachable") for c in conditions):
        return "Degraded"
    return "Provisioning"


def build_status(
    spec: CryptoPipelineSpec,
    observed: Observed,
    generation: int,
    *,
    previous: dict[str, Any] | None = None,
    api_endpoint: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The status subresource to write; transition times carry over when nothing changed."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = {c["type"]: c for c in (previous or {}).get("conditions", [])}
    conditions = compute_conditions(spec, observed)
    return {
        "phase": compute_phase(spec, conditions),
        "observedGeneration": generation,
        "conditions": [c.as_dict(old.get(c.type), stamp, generation) for c in conditions],
        "components": {
            name: {
                "desired": s.desired,
                "ready": s.ready,
                "restarts": s.restarts,
                **({"failing": s.failing} if s.failing else {}),
            }
            for name, s in sorted(observed.workloads.items())
        },
        "sources": ",".join(source.exchange for source in spec.sources),
        **({"apiEndpoint": api_endpoint} if api_endpoint else {}),
    }


def failed_status(generation: int, field: str, message: str) -> dict[str, Any]:
    """A spec the builders cannot realise: phase Failed with the field named, no retry loop."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "phase": "Failed",
        "observedGeneration": generation,
        "message": f"{field}: {message}",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "InvalidSpec",
                "message": f"{field}: {message}",
                "lastTransitionTime": stamp,
                "observedGeneration": generation,
            },
        ],
    }
