"""Scenarios: the users' language for an acceptance test, loaded from YAML with source positions."""
