"""Integrations of brama_sql with other libraries and frameworks, each behind its optional
extra (``prometheus``, ``flask``): each module imports its library."""
