"""The documentation is executable: its SQL, its runnable Python, and its coverage of the API.

- Every ```sql block of ``docs/sql-reporting.md`` (named by a preceding ``<!-- query: NAME -->``
  line) runs on SQLite, PostgreSQL and MariaDB against a history written through the public API
  under a frozen clock, and its rows are compared with what that history must give.
- Every ```python block preceded by ``<!-- runnable -->`` (in ``docs/getting-started.md``, the
  feature pages of :data:`FEATURE_PAGES` and the reference pages) runs against a temporary
  SQLite database that replaces ``sqlite:///brama.db``; when a ```text block preceded by
  ``<!-- output -->`` follows it, the block must print exactly that.
- Every name in ``brama_sql.__all__`` and every public method of :class:`Brama` is mentioned in
  ``docs/reference/``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.engine import URL

import brama_sql
from brama_sql import Brama
from brama_sql.types import UTCDateTime

DOCS = Path(__file__).resolve().parents[2] / "docs"
REPORTING = DOCS / "sql-reporting.md"
GETTING_STARTED = DOCS / "getting-started.md"
REFERENCE = DOCS / "reference"
DOCS_URL = "sqlite:///brama.db"
"""The URL the getting-started examples use; the test swaps in a temporary database."""

START = datetime(2031, 6, 1, 8, 0, tzinfo=timezone.utc)
"""The start of the reporting window (``:since``) in the scenario."""


def at(hours: int = 8, minutes: int = 0, seconds: int = 0) -> datetime:
    """An instant on the scenario's day, in UTC."""
    return datetime(2031, 6, 1, hours, minutes, seconds, tzinfo=timezone.utc)


# -- extracting blocks from Markdown ----------------------------------------------------------

QUERY_BLOCK = re.compile(r"<!-- query: (?P<name>[\w-]+) -->\s*\n```sql\n(?P<sql>.*?)\n```", re.S)
RUNNABLE_BLOCK = re.compile(
    r"<!-- runnable -->\s*\n```python\n(?P<code>.*?)\n```"
    r"(?:\s*<!-- output -->\s*\n```text\n(?P<output>.*?)\n```)?",
    re.S,
)


def reporting_queries() -> dict[str, str]:
    """The named SQL queries of the reporting page, in page order."""
    page = REPORTING.read_text(encoding="utf-8")
    found = {match["name"]: match["sql"] for match in QUERY_BLOCK.finditer(page)}
    assert page.count("```sql") == len(found), "every ```sql block needs a <!-- query: --> name"
    return found


@dataclass(frozen=True)
class Runnable:
    """A runnable example of a documentation page and the output it documents."""

    page: Path
    number: int
    code: str
    output: str | None

    @property
    def name(self) -> str:
        """``page.md:N``, the N-th runnable block of the page."""
        return f"{self.page.relative_to(DOCS)}:{self.number}"


def runnable_examples(page: Path) -> list[Runnable]:
    """The ```python blocks of ``page`` marked ``<!-- runnable -->``, in page order."""
    text = page.read_text(encoding="utf-8")
    return [
        Runnable(page, number, match["code"], match["output"])
        for number, match in enumerate(RUNNABLE_BLOCK.finditer(text), start=1)
    ]


FEATURE_PAGES = [
    DOCS / "protecting-calls.md",
    DOCS / "listeners.md",
    DOCS / "fast-modes.md",
    DOCS / "forced-states.md",
    DOCS / "backoff.md",
    DOCS / "failure-rate.md",
    DOCS / "asyncio.md",
    DOCS / "status-page.md",
    DOCS / "operating.md",
]
"""Pages of features whose runnable examples run too."""


def every_runnable_example() -> list[Runnable]:
    """The runnable examples of getting-started, the feature pages and every reference page."""
    pages = [GETTING_STARTED, *FEATURE_PAGES, *sorted(REFERENCE.glob("*.md"))]
    return [example for page in pages for example in runnable_examples(page)]


# -- the scenario behind the reporting queries ------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """The callers that wrote the history, to check the ``actor`` columns."""

    first: str
    second: str
    janitor: str


def write_history(make_brama: Callable[..., Brama]) -> Scenario:
    """A morning of one small fleet, written through the public API with a frozen clock.

    - 07:00 ``archive``/billing registered, one failure ("disk full"); 07:30 removed by cleanup.
    - 08:00 registered: ``payments``/shop, ``inventory``/shop, ``legacy``/shop, and the
      unscoped ``search`` (expiry one hour) and ``mailer`` (never reported on).
    - 08:01 ``payments`` fails three times ("timeout"): two reports from the first caller, the
      third, which trips it, from the second caller.
    - 08:02 ``inventory``: three successes, two failures ("connection refused").
    - 08:03 ``search``: a failure without reason, a success; ``legacy``: a success.
    - 08:04 ``legacy`` unregistered; 08:10 ``payments``' probe fails (its expiry elapsed at
      08:02:20); 08:20 ``search`` opened by hand ("maintenance"); 08:25 ``legacy`` registered
      again.
    """
    first = make_brama(failure_threshold=3, expiry=60.0)
    second = make_brama(failure_threshold=3, expiry=60.0)
    janitor = make_brama(inactive_after=1200.0)
    with freeze_time(at(7)) as clock:
        first.register("archive", scope="billing")
        first.failure("archive", scope="billing", reason="disk full")
        clock.move_to(at(7, 30))
        assert janitor.cleanup() == 1
        clock.move_to(at(8))
        for identifier in ("payments", "inventory", "legacy"):
            first.register(identifier, scope="shop")
        first.register("search", expiry=3600.0)
        first.register("mailer")
        clock.move_to(at(8, 1))
        first.failure("payments", scope="shop", reason="timeout")
        clock.move_to(at(8, 1, 10))
        first.failure("payments", scope="shop", reason="timeout")
        clock.move_to(at(8, 1, 20))
        second.failure("payments", scope="shop", reason="timeout")
        clock.move_to(at(8, 2))
        for _ in range(3):
            first.success("inventory", scope="shop")
        for _ in range(2):
            first.failure("inventory", scope="shop", reason="connection refused")
        clock.move_to(at(8, 3))
        first.failure("search")
        first.success("search")
        first.success("legacy", scope="shop")
        clock.move_to(at(8, 4))
        assert first.unregister("legacy", scope="shop")
        clock.move_to(at(8, 10))
        assert first.available("payments", scope="shop")
        first.failure("payments", scope="shop", reason="timeout")
        clock.move_to(at(8, 20))
        first.open("search", reason="maintenance")
        clock.move_to(at(8, 25))
        first.register("legacy", scope="shop")
    return Scenario(first.actor(), second.actor(), janitor.actor())


# -- normalising what the drivers return ------------------------------------------------------

TIME_COLUMNS = {
    "opened_at",
    "registered_at",
    "occurred_at",
    "gone_at",
    "last_seen",
    "last_transition_at",
}


def as_utc(value: object) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite gives text, MariaDB naive UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime), value
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def plain(column: str, value: object) -> object:
    """One cell in a form that compares equally on every dialect."""
    if column in TIME_COLUMNS:
        return as_utc(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def run_query(url: URL, sql: str, parameters: dict[str, Any]) -> list[dict[str, object]]:
    """Run ``sql`` with the parameters it names; rows as dicts of normalised cells."""
    statement = text(sql)
    used = {name: value for name, value in parameters.items() if f":{name}" in sql}
    for name, value in used.items():
        if isinstance(value, datetime):
            statement = statement.bindparams(bindparam(name, type_=UTCDateTime()))
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            result = connection.execute(statement, used)
            return [
                {column: plain(column, value) for column, value in row._mapping.items()}
                for row in result
            ]
    finally:
        engine.dispose()


def pick(rows: list[dict[str, object]], *columns: str) -> list[tuple[object, ...]]:
    """The given columns of each row, as tuples."""
    return [tuple(row[column] for column in columns) for row in rows]


# -- what each query must return --------------------------------------------------------------


def check_current_state(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """Every connection's stored state and this registration's totals."""
    assert pick(
        rows, "scope", "identifier", "state", "failure_count", "total_successes", "total_failures"
    ) == [
        ("", "mailer", "unknown", 0, 0, 0),
        ("", "search", "open", 0, 1, 1),
        ("shop", "inventory", "closed", 2, 3, 2),
        ("shop", "legacy", "unknown", 0, 0, 0),  # the new registration: no reports yet
        ("shop", "payments", "open", 4, 0, 4),
    ]
    by_name = {row["identifier"]: row for row in rows}
    assert by_name["payments"]["opened_at"] == at(8, 10)
    assert by_name["search"]["opened_at"] == at(8, 20)
    assert by_name["inventory"]["opened_at"] is None
    assert by_name["legacy"]["registered_at"] == at(8, 25)
    assert by_name["payments"]["failure_threshold"] == 3


def check_open_circuits(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """The two circuits whose row says open, longest open first."""
    assert pick(rows, "scope", "identifier", "opened_at", "expiry", "failure_count") == [
        ("shop", "payments", at(8, 10), 60.0, 4),
        ("", "search", at(8, 20), 3600.0, 0),
    ]


def check_success_rate_since(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """Reports since 08:00 per name, with the rate."""
    # archive's 07:00 failure is before :since; legacy's success belongs to its first
    # registration, which the name still carries.
    assert pick(rows, "scope", "identifier", "successes", "failures", "success_rate") == [
        ("", "search", 1, 1, 0.5),
        ("shop", "inventory", 3, 2, 0.6),
        ("shop", "legacy", 1, 0, 1.0),
        ("shop", "payments", 0, 4, 0.0),
    ]


def check_connection_transitions(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """payments/shop: first failure, trip, expiry, failed probe."""
    assert pick(
        rows, "occurred_at", "from_state", "to_state", "cause", "reason", "failure_count", "actor"
    ) == [
        (at(8, 1), "unknown", "closed", "report", "first failure", 1, scenario.first),
        (
            at(8, 1, 20),
            "closed",
            "open",
            "report",
            "failure threshold reached",
            3,
            scenario.second,
        ),
        # Dated when the expiry elapsed, written by the probe's report at 08:10.
        (at(8, 2, 20), "open", "half_open", "expiry", "expiry elapsed", 3, scenario.first),
        (at(8, 10), "half_open", "open", "report", "probe failed", 4, scenario.first),
    ]
    ids = [row["id"] for row in rows if isinstance(row["id"], int)]
    assert len(ids) == len(rows) and ids == sorted(ids)


def check_trips_by_actor(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """Two trips by reports (from two callers) and one by hand."""
    assert pick(rows, "scope", "identifier", "occurred_at", "from_state", "cause", "actor") == [
        ("shop", "payments", at(8, 1, 20), "closed", "report", scenario.second),
        ("shop", "payments", at(8, 10), "half_open", "report", scenario.first),
        ("", "search", at(8, 20), "closed", "manual_open", scenario.first),
    ]
    assert [row["reason"] for row in rows] == [
        "failure threshold reached",
        "probe failed",
        "maintenance",
    ]


def check_failure_reasons(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """Reasons since 08:00, most frequent first."""
    # "disk full" (07:00) is before :since.
    assert pick(rows, "failure_reason", "failures", "last_seen") == [
        ("timeout", 4, at(8, 10)),
        ("connection refused", 2, at(8, 2)),
        ("(none)", 1, at(8, 3)),
    ]


def check_never_reported(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """mailer, and legacy's second registration."""
    assert pick(rows, "scope", "identifier", "registered_at") == [
        ("", "mailer", at(8)),
        ("shop", "legacy", at(8, 25)),
    ]


def check_removed_connections(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """archive (removed by cleanup) and legacy (unregistered, back again)."""
    assert pick(
        rows,
        "scope",
        "identifier",
        "how",
        "gone_at",
        "actor",
        "registered_at",
        "reports",
        "registered_again",
    ) == [
        ("billing", "archive", "removed", at(7, 30), scenario.janitor, at(7), 1, "no"),
        ("shop", "legacy", "unregistered", at(8, 4), scenario.first, at(8), 1, "yes"),
    ]


def check_report_counts(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """Reports, failures, trips and the last transition of each registration since 08:00."""
    assert pick(rows, "scope", "identifier", "reports", "failures", "success_rate", "trips") == [
        ("", "mailer", 0, 0, None, 0),
        ("", "search", 2, 1, 0.5, 1),
        ("shop", "inventory", 5, 2, 0.6, 0),
        ("shop", "legacy", 0, 0, None, 0),  # the new registration's window is empty
        ("shop", "payments", 4, 4, 0.0, 2),
    ]
    assert pick(rows, "identifier", "last_transition_at", "last_from", "last_to", "last_cause") == [
        ("mailer", None, None, None, None),
        ("search", at(8, 20), "closed", "open", "manual_open"),
        ("inventory", at(8, 2), "unknown", "closed", "report"),
        ("legacy", None, None, None, None),
        ("payments", at(8, 10), "half_open", "open", "report"),
    ]
    assert {row["complete"] for row in rows} == {1}


def check_report_open_time(rows: list[dict[str, object]], scenario: Scenario) -> None:
    """Until 08:30: payments open 08:01:20-08:02:20 and 08:10-08:11 (an expiry not logged
    yet), search open by hand since 08:20."""
    found = [
        (row["scope"], row["identifier"], round(float(row["time_open"]), 3))  # type: ignore[arg-type]
        for row in rows
    ]
    assert found == [
        ("", "mailer", 0.0),
        ("", "search", 600.0),
        ("shop", "inventory", 0.0),
        ("shop", "legacy", 0.0),
        ("shop", "payments", 120.0),
    ]
    longest = {row["identifier"]: round(float(row["longest_open"]), 3) for row in rows}  # type: ignore[arg-type]
    assert longest == {
        "mailer": 0.0,
        "search": 600.0,
        "inventory": 0.0,
        "legacy": 0.0,
        "payments": 60.0,
    }


CHECKS: dict[str, Callable[[list[dict[str, object]], Scenario], None]] = {
    "current_state": check_current_state,
    "open_circuits": check_open_circuits,
    "success_rate_since": check_success_rate_since,
    "connection_transitions": check_connection_transitions,
    "trips_by_actor": check_trips_by_actor,
    "failure_reasons": check_failure_reasons,
    "never_reported": check_never_reported,
    "removed_connections": check_removed_connections,
    "report_counts": check_report_counts,
    "report_open_time_postgresql": check_report_open_time,
    "report_open_time_mysql": check_report_open_time,
    "report_open_time_sqlite": check_report_open_time,
}
PARAMETERS = {
    "since": START,
    "until": at(8, 30),
    "hour_before": at(7),
    "identifier": "payments",
    "scope": "shop",
}
DIALECTS = ("postgresql", "mysql", "sqlite")


def query_dialect(name: str) -> str | None:
    """The dialect a query is written for (its name ends with it), or ``None``: portable."""
    return next((dialect for dialect in DIALECTS if name.endswith(f"_{dialect}")), None)


def test_every_documented_query_has_a_check() -> None:
    assert list(reporting_queries()) == list(CHECKS)


QUERY_CASES = [
    pytest.param(name, dialect, id=f"{name}-{dialect}")
    for name in CHECKS
    for dialect in DIALECTS
    if query_dialect(name) in (None, dialect)
]
"""Each query on every dialect it is written for (a portable one on all three)."""


@pytest.mark.parametrize(("name", "dialect"), QUERY_CASES, indirect=["dialect"])
def test_reporting_query(
    name: str, dialect: str, db_url: URL, make_brama: Callable[..., Brama]
) -> None:
    assert db_url.get_backend_name() == dialect
    sql = reporting_queries()[name]
    scenario = write_history(make_brama)
    rows = run_query(db_url, sql, PARAMETERS)
    CHECKS[name](rows, scenario)


def test_the_row_state_lags_a_due_expiry(db_url: URL, make_brama: Callable[..., Brama]) -> None:
    """What the page warns about: the row says open while status() already says half-open."""
    write_history(make_brama)
    rows = run_query(db_url, reporting_queries()["open_circuits"], PARAMETERS)
    assert ("shop", "payments") in pick(rows, "scope", "identifier")
    with freeze_time(at(8, 30)):
        assert make_brama().status("payments", scope="shop").state == "half_open"


# -- runnable Python of the getting-started page ----------------------------------------------


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in an empty temporary directory (examples may write files next to them)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_getting_started_has_runnable_examples() -> None:
    examples = runnable_examples(GETTING_STARTED)
    assert len(examples) >= 4
    assert all(DOCS_URL in example.code for example in examples)
    assert all(example.output for example in examples)
    page = GETTING_STARTED.read_text(encoding="utf-8")
    assert page.count("<!-- runnable -->") == len(examples), "a runnable marker without a block"


@pytest.mark.parametrize("example", every_runnable_example(), ids=lambda example: example.name)
def test_runnable_example_runs(example: Runnable, in_tmp_dir: Path) -> None:
    url = f"sqlite:///{in_tmp_dir / 'docs-example.db'}"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example.code.replace(DOCS_URL, url), example.name, "exec"), {})
    if example.output is not None:
        assert printed.getvalue() == example.output.replace(DOCS_URL, url) + "\n"
    assert (in_tmp_dir / "docs-example.db").exists(), "the example used another database"


# -- the reference covers the public API -----------------------------------------------------


def reference_text() -> str:
    """Every page of docs/reference/ concatenated."""
    pages = sorted(REFERENCE.glob("*.md"))
    assert pages, "docs/reference/ has no pages"
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


@pytest.mark.parametrize("name", brama_sql.__all__)
def test_every_public_name_is_in_the_reference(name: str) -> None:
    assert re.search(rf"\b{re.escape(name)}\b", reference_text()), f"{name} is not documented"


PUBLIC_METHODS = [
    name
    for name, member in inspect.getmembers(Brama, inspect.isfunction)
    if not name.startswith("_")
]


def test_brama_has_the_public_methods_the_reference_lists() -> None:
    assert {"register", "available", "success", "failure", "cleanup"} <= set(PUBLIC_METHODS)


@pytest.mark.parametrize("method", PUBLIC_METHODS)
def test_every_brama_method_is_in_the_reference(method: str) -> None:
    assert re.search(rf"\b{method}\(", reference_text()), f"Brama.{method}() is not documented"


def anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, dashes."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of every heading of ``page`` (outside fenced code)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {anchor(heading) for heading in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_links_between_pages_resolve() -> None:
    """Relative links between the documentation pages point at files and headings that exist."""
    broken = []
    for page in sorted(DOCS.rglob("*.md")):
        for target, fragment in re.findall(
            r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text(encoding="utf-8")
        ):
            if "://" in target:
                continue
            linked = (page.parent / target) if target else page
            if not linked.exists():
                broken.append(f"{page.relative_to(DOCS)} -> {target}")
            elif fragment and fragment not in anchors(linked):
                broken.append(f"{page.relative_to(DOCS)} -> {target}#{fragment}")
    assert broken == []


# -- the alerting rules of the operating page -------------------------------------------------

OPERATING = DOCS / "operating.md"
RULES_BLOCK = re.compile(r"<!-- prometheus-rules -->\s*\n```yaml\n(?P<rules>.*?)\n```", re.S)


def test_the_alerting_rules_name_metrics_the_collector_exposes(tmp_path: Path) -> None:
    from brama_sql.contrib.prometheus import metrics_exposition

    rules = RULES_BLOCK.search(OPERATING.read_text(encoding="utf-8"))
    assert rules is not None
    expressions = re.findall(r"^\s*expr: (.+)$", rules["rules"], flags=re.M)
    assert len(expressions) == 3
    named = set(re.findall(r"\bbrama_sql_\w+", " ".join(expressions)))
    brama = Brama(f"sqlite:///{tmp_path / 'rules.db'}", failure_threshold=1)
    try:
        brama.migrate()
        brama.register("svc")
        brama.failure("svc")
        body, _ = metrics_exposition(brama)
    finally:
        brama.dispose()
    exposed = set(re.findall(r"^(brama_sql_\w+)[{ ]", body.decode(), flags=re.M))
    assert named and named <= exposed, named - exposed
    for label in re.findall(r"by \(([^)]*)\)", " ".join(expressions)):
        assert {name.strip() for name in label.split(",")} == {"identifier", "scope"}
