"""Random writer sessions never break the ledger's invariants (a hypothesis property).

Two sessions interleave single and multi-row inserts (repeated idempotency keys with and
without ON CONFLICT DO NOTHING, overdrawing debits, amounts at the 10^15 bound) with
transactions, savepoints and rollbacks. After every step a third session checks each
account of the example with the ledger audit of tests/conftest.py: balance = sum of its
rows, never negative, equal to its newest row's balance_after, one event per committed
row and none for anything rolled back. Each refusal must be one the step could earn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.pq import TransactionStatus

from tests.conftest import LedgerViolations

Conn = psycopg.Connection[tuple[object, ...]]

ACCOUNTS = 2
MAX_AMOUNT = 10**15
KEYS = (None, "k1", "k2")

INSUFFICIENT_FUNDS = "WL001"
UNIQUE_VIOLATION = "23505"
CHECK_VIOLATION = "23514"
LOCK_NOT_AVAILABLE = "55P03"

INSERT_ONE = (
    "INSERT INTO transactions (account_id, kind, amount, idempotency_key) VALUES (%s, %s, %s, %s)"
)
INSERT_MANY = (
    "INSERT INTO transactions (account_id, kind, amount, idempotency_key) "
    "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[])"
)
ON_CONFLICT = " ON CONFLICT DO NOTHING"
RETURNING = " RETURNING id"
# The balance and the idempotency keys of an account, as one session sees them.
SEEN = (
    "SELECT balance, array(SELECT idempotency_key FROM transactions t "
    "WHERE t.account_id = a.id AND idempotency_key IS NOT NULL) FROM accounts a WHERE id = %s"
)


@dataclass(frozen=True)
class Row:
    account: int  # index into the example's accounts
    kind: str
    amount: int
    key: str | None


@dataclass(frozen=True)
class Insert:
    session: int
    rows: tuple[Row, ...]
    do_nothing: bool


@dataclass(frozen=True)
class Control:
    session: int
    command: str


COMMANDS = (
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "ROLLBACK TO SAVEPOINT",
    "RELEASE SAVEPOINT",
)

# Mostly small amounts, so that rows are stored and debits sometimes fit; one in four at
# or past a bound.
amounts = st.one_of(
    st.integers(1, 300),
    st.integers(1, 300),
    st.integers(1, 300),
    st.sampled_from([0, MAX_AMOUNT, MAX_AMOUNT + 1]),
)
ledger_rows = st.builds(
    Row,
    st.integers(0, ACCOUNTS - 1),
    st.sampled_from(["top_up", "top_up", "debit"]),
    amounts,
    st.sampled_from(KEYS),
)
inserts = st.builds(
    Insert,
    st.integers(0, 1),
    st.lists(ledger_rows, min_size=1, max_size=3).map(tuple),
    st.booleans(),
)
controls = st.builds(Control, st.integers(0, 1), st.sampled_from(COMMANDS))
scripts = st.lists(st.one_of(inserts, inserts, controls), max_size=25)


@dataclass
class Session:
    """One writer's connection, in autocommit mode unless it began a transaction."""

    conn: Conn
    savepoints: list[str] = field(default_factory=list)

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != TransactionStatus.IDLE

    def control(self, command: str) -> None:
        """Run a transaction command; one that makes no sense in the session's state is skipped."""
        if command == "BEGIN" and not self.in_transaction:
            self.conn.execute("BEGIN")
        elif command in ("COMMIT", "ROLLBACK") and self.in_transaction:
            self.conn.execute(command)
            self.savepoints.clear()
        elif command == "SAVEPOINT":
            if not self.in_transaction:
                self.conn.execute("BEGIN")
            self.savepoints.append(f"sp{len(self.savepoints) + 1}")
            self._savepoint("SAVEPOINT")
        elif command == "ROLLBACK TO SAVEPOINT" and self.savepoints:
            self._savepoint(command)
        elif command == "RELEASE SAVEPOINT" and self.savepoints:
            self._savepoint(command)
            self.savepoints.pop()

    def recover(self) -> None:
        """After a refused statement: back to the latest savepoint, else out of the transaction."""
        if self.savepoints:
            self._savepoint("ROLLBACK TO SAVEPOINT")
        elif self.in_transaction:
            self.conn.execute("ROLLBACK")

    def _savepoint(self, command: str) -> None:
        self.conn.execute(sql.SQL(command + " {}").format(sql.Identifier(self.savepoints[-1])))


@dataclass(frozen=True)
class Seen:
    """An account's balance and idempotency keys, as one session sees them."""

    balance: int
    keys: frozenset[str]


@dataclass(frozen=True)
class Expected:
    """What a step may do: the SQLSTATEs it may be refused with, and whether it must be."""

    refusals: frozenset[str]
    must_refuse: bool
    max_stored: int


def _expected(step: Insert, seen: Seen | None, other_busy: bool) -> Expected:
    """The outcomes a step can earn; exact for one row, whose account the session `seen`."""
    refusals = {LOCK_NOT_AVAILABLE} if other_busy else set()
    if any(row.kind == "debit" for row in step.rows):
        refusals.add(INSUFFICIENT_FUNDS)
    if any(row.key is not None for row in step.rows):
        refusals.add(UNIQUE_VIOLATION)
    out_of_range = any(not 1 <= row.amount <= MAX_AMOUNT for row in step.rows)
    if out_of_range:
        refusals.add(CHECK_VIOLATION)
    if seen is None:
        return Expected(frozenset(refusals), out_of_range, len(step.rows))
    (row,) = step.rows
    repeated = row.key is not None and row.key in seen.keys
    overdraws = row.kind == "debit" and row.amount > seen.balance
    must_refuse = out_of_range or (overdraws and not repeated) or (repeated and not step.do_nothing)
    return Expected(frozenset(refusals), must_refuse, 0 if repeated else 1)


def _seen(session: Session, account_id: int) -> Seen:
    found = session.conn.execute(SEEN, [account_id]).fetchone()
    assert found is not None
    balance, keys = found
    assert isinstance(keys, list)
    return Seen(int(str(balance)), frozenset(str(key) for key in keys))


def _run(session: Session, step: Insert, account_ids: list[int], other_busy: bool) -> None:
    """Run one insert step and check its outcome against what it could earn."""
    ids = [account_ids[row.account] for row in step.rows]
    seen = _seen(session, ids[0]) if len(step.rows) == 1 else None
    params: list[object]
    if seen is None:
        statement = INSERT_MANY
        kinds = [r.kind for r in step.rows]
        params = [ids, kinds, [r.amount for r in step.rows], [r.key for r in step.rows]]
    else:
        (row,) = step.rows
        statement, params = INSERT_ONE, [ids[0], row.kind, row.amount, row.key]
    statement += (ON_CONFLICT if step.do_nothing else "") + RETURNING
    expected = _expected(step, seen, other_busy)
    refused: psycopg.Error | None = None
    stored = 0
    try:
        stored = len(session.conn.execute(statement, params).fetchall())
    except psycopg.Error as exc:
        refused = exc
    # Tallied by --hypothesis-show-statistics: how often each outcome was reached.
    event(f"refused {refused.sqlstate}" if refused else f"stored {stored} of {len(step.rows)}")
    if refused is not None:
        assert refused.sqlstate in expected.refusals, f"{step} refused: {refused!r}"
        session.recover()
        return
    assert not expected.must_refuse, f"{step} was accepted; the session saw {seen}"
    assert stored <= expected.max_stored, f"{step} stored {stored} rows; the session saw {seen}"


def _connect(url: str) -> Conn:
    conn = psycopg.connect(url, autocommit=True)
    # A session that touches an account the other one holds gives up at once: a refusal.
    conn.execute("SET lock_timeout = '50ms'")
    return conn


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    # One shrunk failure, without the explain phase's extra runs: within the test timeout.
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
@given(steps=scripts)
def test_random_writer_sessions_keep_the_ledger_consistent(
    database_url: str, ledger_violations: LedgerViolations, steps: list[Insert | Control]
) -> None:
    """No interleaving of writers' inserts, conflicts and rollbacks breaks an account's ledger."""
    with (
        _connect(database_url) as observer,
        _connect(database_url) as first,
        _connect(database_url) as second,
    ):
        account_ids = [
            int(str(row[0]))
            for row in observer.execute(
                "INSERT INTO accounts (currency) SELECT 'USD' FROM generate_series(1, %s) "
                "RETURNING id",
                [ACCOUNTS],
            )
        ]
        sessions = [Session(first), Session(second)]
        # Printed with a failing example: the steps up to the failure, in order.
        note(f"accounts {account_ids}")
        for step in steps:
            note(repr(step))
            session, other = sessions[step.session], sessions[1 - step.session]
            if isinstance(step, Control):
                session.control(step.command)
            else:
                _run(session, step, account_ids, other.in_transaction)
            assert ledger_violations(observer, account_ids) == [], f"after {step}"
        for session in sessions:
            session.control("COMMIT")
        assert ledger_violations(observer, account_ids) == [], "after both sessions committed"
