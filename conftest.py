"""Shared pytest fixtures for every member's tests (real Kafka broker, …)."""

pytest_plugins = ["cryptolake.stack.pytest_plugin"]
