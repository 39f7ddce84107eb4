"""The brama_sql benchmark (issue #8, part 1): today's cost of each operation beside the same
logical work written with SQLAlchemy Core and through the bare driver, and pybreaker with its
Redis storage as the peer of a guarded call.

Run it from a checkout with ``python -m bench`` (``--short`` for the smoke test, ``--help`` for
the options); see ``docs/benchmarks.md``.
"""

from __future__ import annotations

FORMAT = 1
"""The version of the JSON file's layout."""
