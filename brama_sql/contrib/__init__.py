"""Integrations with web frameworks; each module imports its framework, installed by its extra."""
