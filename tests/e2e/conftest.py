"""The e2e steps share one pipeline, so they run as a sequence: after a failed step the later
ones are skipped (their checks would only repeat the failure, each waiting out its timeout),
and a failed step's report carries what the cluster looked like (pods, events, crashed
containers' last log lines) — in CI that output is all there is to go on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

_FAILED_STEP = pytest.StashKey[str]()


def _is_step(item: pytest.Item) -> bool:
    return item.name.startswith("test_") and item.name.split("_")[1].isdigit()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    failed = item.session.stash.get(_FAILED_STEP, None)
    if failed and _is_step(item):
        pytest.skip(f"an earlier step failed: {failed}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and _is_step(item):
        item.session.stash[_FAILED_STEP] = item.name
        diagnostics = getattr(item.module, "diagnostics", None)
        if diagnostics is not None:
            report.sections.append(("e2e diagnostics", diagnostics()))
    return report
