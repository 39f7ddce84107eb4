"""Integrations of brama_sql with web frameworks and monitoring systems."""
