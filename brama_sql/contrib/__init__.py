"""Integrations of brama_sql with other libraries, each behind its optional extra."""
