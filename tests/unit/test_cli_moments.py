"""The CLI's ``--since``/``--until`` moments read the same on every supported Python (3.10's
``datetime.fromisoformat`` knows neither ``Z`` nor fractions other than 3 or 6 digits)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from brama_sql.cli import _Moment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2031-06-01T08:00:00Z", datetime(2031, 6, 1, 8, tzinfo=timezone.utc)),
        ("2031-06-01T08:00:00.5Z", datetime(2031, 6, 1, 8, 0, 0, 500000, tzinfo=timezone.utc)),
        ("2031-06-01 08:00:00.1234", datetime(2031, 6, 1, 8, 0, 0, 123400, tzinfo=timezone.utc)),
        ("2031-06-01T10:00:00+02:00", datetime(2031, 6, 1, 8, tzinfo=timezone.utc)),
        ("2031-06-01", datetime(2031, 6, 1, tzinfo=timezone.utc)),
    ],
)
def test_iso_times_read_alike_on_every_python(text: str, expected: datetime) -> None:
    assert _Moment().convert(text, None, None) == expected
