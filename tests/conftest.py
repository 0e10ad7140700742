"""Shared fixtures: real local stand-ins, started once per test session."""

pytest_plugins = ["fixtures.services"]
