"""Helpers shared by the test modules: servers, worker processes, namespaces, readers."""
