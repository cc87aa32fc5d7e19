"""Writers who try to cheat the ledger: whatever they do, each balance stays its ledger sum.

The attacks: conflicts that skip a row after the ledger trigger saw it (every path
PostgreSQL offers a writer), a non-superuser writer setting a balance directly or from
triggers of its own, names the ledger's triggers could resolve to a writer's functions,
operators or temporary tables, and the ledger's own trigger functions attached to a
writer's tables. Each test ends with the ledger audit of tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from tests.conftest import LedgerViolations

Conn = psycopg.Connection[tuple[object, ...]]

UNIQUE_VIOLATION = "23505"
INSUFFICIENT_PRIVILEGE = "42501"


def _scalar(conn: Conn, query: str, *params: object) -> object:
    row = conn.execute(query, list(params)).fetchone()
    assert row is not None
    return row[0]


def _int(conn: Conn, query: str, *params: object) -> int:
    return int(str(_scalar(conn, query, *params)))


def _account(conn: Conn, top_up: int = 0, key: str | None = None) -> tuple[int, int | None]:
    """A new USD account funded by one top-up (with `key`): (account id, top-up row id)."""
    account_id = _int(conn, "INSERT INTO accounts (currency) VALUES ('USD') RETURNING id")
    if not top_up:
        return account_id, None
    row_id = _int(
        conn,
        "INSERT INTO transactions (account_id, kind, amount, idempotency_key) "
        "VALUES (%s, 'top_up', %s, %s) RETURNING id",
        account_id,
        top_up,
        key,
    )
    return account_id, row_id


def _balance(conn: Conn, account_id: int) -> int:
    return _int(conn, "SELECT balance FROM accounts WHERE id = %s", account_id)


def _rows(conn: Conn, account_id: int) -> int:
    return _int(conn, "SELECT count(*) FROM transactions WHERE account_id = %s", account_id)


def _events(conn: Conn) -> int:
    return _int(conn, "SELECT count(*) FROM notifier.events")


def _attempt(
    conn: Conn, statement: str, params: dict[str, object], refusals: frozenset[str] | None
) -> int:
    """Rows the statement stored; 0 when it was refused with one of `refusals` (None: any)."""
    try:
        return conn.execute(statement, params).rowcount
    except psycopg.Error as exc:
        if refusals is not None and exc.sqlstate not in refusals:
            raise
        return 0


# --- 1. Conflicts: a row the ledger trigger saw but the table did not store -------------


@dataclass(frozen=True)
class Conflict:
    """A statement run twice against an account funded with 1000 under key 'k1'."""

    name: str
    statement: str  # %(a)s: the account; %(id)s: the id of its funding row
    signed_amount: int  # what one stored row adds to the balance
    max_stored: int  # rows the two runs together may store
    # How it may be refused instead; None: in any way (an explicit id may be refused or
    # ignored, but never conflict with money moved).
    refusals: frozenset[str] | None = frozenset({UNIQUE_VIOLATION})


_INSERT = "INSERT INTO transactions (account_id, kind, amount, idempotency_key) "
_ARBITER = "ON CONFLICT (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL"
_EXPLICIT_ID = (
    "INSERT INTO transactions (id, account_id, kind, amount) OVERRIDING SYSTEM VALUE "
    "VALUES (%(id)s, %(a)s, 'top_up', 100) "
)

CONFLICTS = [
    Conflict(
        "do_nothing_top_up",
        _INSERT + "VALUES (%(a)s, 'top_up', 100, 'k1') ON CONFLICT DO NOTHING",
        100,
        0,
    ),
    Conflict(
        "do_nothing_debit",
        _INSERT + "VALUES (%(a)s, 'debit', 100, 'k1') ON CONFLICT DO NOTHING",
        -100,
        0,
    ),
    Conflict(
        "arbiter_top_up",
        _INSERT + f"VALUES (%(a)s, 'top_up', 100, 'k1') {_ARBITER} DO NOTHING",
        100,
        0,
    ),
    Conflict(
        "arbiter_debit",
        _INSERT + f"VALUES (%(a)s, 'debit', 100, 'k1') {_ARBITER} DO NOTHING",
        -100,
        0,
    ),
    Conflict(
        "same_new_key_twice_in_one_statement",
        _INSERT + "VALUES (%(a)s, 'top_up', 100, 'k2'), (%(a)s, 'top_up', 100, 'k2') "
        "ON CONFLICT DO NOTHING",
        100,
        1,
    ),
    Conflict(
        "insert_select",
        _INSERT + "SELECT %(a)s, 'debit', 100, 'k1' FROM generate_series(1, 3) "
        "ON CONFLICT DO NOTHING",
        -100,
        0,
    ),
    Conflict("primary_key", _EXPLICIT_ID + "ON CONFLICT DO NOTHING", 100, 2, None),
    Conflict("primary_key_arbiter", _EXPLICIT_ID + "ON CONFLICT (id) DO NOTHING", 100, 2, None),
    Conflict(
        "primary_key_constraint",
        _EXPLICIT_ID + "ON CONFLICT ON CONSTRAINT transactions_pkey DO NOTHING",
        100,
        2,
        None,
    ),
]


@pytest.mark.parametrize("conflict", CONFLICTS, ids=lambda conflict: conflict.name)
def test_a_conflicting_row_moves_no_money(
    dba: Conn, ledger_violations: LedgerViolations, conflict: Conflict
) -> None:
    """A row skipped by ON CONFLICT DO NOTHING leaves no trace: balance = ledger sum."""
    account_id, row_id = _account(dba, 1000, key="k1")

    stored = sum(
        _attempt(dba, conflict.statement, {"a": account_id, "id": row_id}, conflict.refusals)
        for _ in range(2)
    )

    assert stored <= conflict.max_stored
    assert _rows(dba, account_id) == 1 + stored
    assert _balance(dba, account_id) == 1000 + stored * conflict.signed_amount
    assert ledger_violations(dba, [account_id]) == []


@pytest.mark.parametrize("kind", ["top_up", "debit"])
def test_on_conflict_do_update_is_refused_and_moves_no_money(
    dba: Conn, ledger_violations: LedgerViolations, kind: str
) -> None:
    """Transactions are append-only, so an upsert onto a ledger row is refused whole."""
    account_id, _ = _account(dba, 1000, key="k1")

    with pytest.raises(psycopg.Error) as raised:
        dba.execute(
            "INSERT INTO transactions (account_id, kind, amount, idempotency_key, metadata) "
            f"VALUES (%s, %s, 100, 'k1', %s) {_ARBITER} DO UPDATE SET metadata = excluded.metadata",
            [account_id, kind, Jsonb({"x": 1})],
        )

    assert raised.value.sqlstate in {"WL004", UNIQUE_VIOLATION}
    assert _scalar(dba, "SELECT metadata FROM transactions WHERE account_id = %s", account_id) == {}
    assert _balance(dba, account_id) == 1000
    assert ledger_violations(dba, [account_id]) == []


@pytest.mark.parametrize("kind", ["top_up", "debit"])
def test_merge_repeating_a_key_fails_and_changes_nothing(
    dba: Conn, ledger_violations: LedgerViolations, kind: str
) -> None:
    """MERGE's NOT MATCHED insert of a repeated key is a unique violation, applying nothing."""
    account_id, _ = _account(dba, 1000, key="k1")
    events = _events(dba)

    with pytest.raises(errors.UniqueViolation):
        dba.execute(
            "MERGE INTO transactions t USING (VALUES (%s::bigint, %s)) AS s (account_id, kind) "
            "ON false WHEN NOT MATCHED THEN INSERT (account_id, kind, amount, idempotency_key) "
            "VALUES (s.account_id, s.kind, 100, 'k1')",
            [account_id, kind],
        )

    assert _balance(dba, account_id) == 1000
    assert _events(dba) == events
    assert ledger_violations(dba, [account_id]) == []


@pytest.mark.parametrize("kind", ["top_up", "debit"])
def test_a_plain_insert_repeating_a_key_fails_and_changes_nothing(
    dba: Conn, ledger_violations: LedgerViolations, kind: str
) -> None:
    """Without ON CONFLICT a repeated key is still a unique violation (23505)."""
    account_id, _ = _account(dba, 1000, key="k1")

    with pytest.raises(psycopg.Error) as raised:
        dba.execute(_INSERT + "VALUES (%s, %s, 100, 'k1')", [account_id, kind])

    assert raised.value.sqlstate == UNIQUE_VIOLATION
    assert _rows(dba, account_id) == 1
    assert _balance(dba, account_id) == 1000
    assert ledger_violations(dba, [account_id]) == []


NEW_KEY_STATEMENTS = {
    "do_nothing": _INSERT + "VALUES (%(a)s, %(kind)s, 100, 'k9') ON CONFLICT DO NOTHING",
    "arbiter": _INSERT + f"VALUES (%(a)s, %(kind)s, 100, 'k9') {_ARBITER} DO NOTHING",
    "merge": "MERGE INTO transactions t USING (VALUES (%(a)s::bigint, 'k9')) AS s (a, key) "
    "ON t.account_id = s.a AND t.idempotency_key = s.key "
    "WHEN NOT MATCHED THEN INSERT (account_id, kind, amount, idempotency_key) "
    "VALUES (s.a, %(kind)s, 100, s.key)",
}


@pytest.mark.parametrize("kind", ["top_up", "debit"])
@pytest.mark.parametrize("statement", NEW_KEY_STATEMENTS.values(), ids=NEW_KEY_STATEMENTS.keys())
def test_a_new_key_under_on_conflict_or_merge_applies_normally(
    dba: Conn, ledger_violations: LedgerViolations, statement: str, kind: str
) -> None:
    """A statement that could conflict but does not stores its row and moves the balance."""
    account_id, _ = _account(dba, 1000, key="k1")

    stored = dba.execute(statement, {"a": account_id, "kind": kind}).rowcount

    assert stored == 1
    assert _balance(dba, account_id) == (1100 if kind == "top_up" else 900)
    assert ledger_violations(dba, [account_id]) == []


@pytest.mark.parametrize("kind", ["top_up", "debit"])
@pytest.mark.parametrize(
    ("on_conflict", "ending"),
    [
        ("", "ROLLBACK TO SAVEPOINT s"),
        ("ON CONFLICT DO NOTHING", "ROLLBACK TO SAVEPOINT s"),
        ("ON CONFLICT DO NOTHING", "RELEASE SAVEPOINT s"),
    ],
    ids=["plain_rolled_back", "do_nothing_rolled_back", "do_nothing_released"],
)
def test_a_conflict_inside_a_savepoint_moves_no_money(
    dba: Conn, ledger_violations: LedgerViolations, on_conflict: str, ending: str, kind: str
) -> None:
    """A conflict inside a savepoint, rolled back or released, then COMMIT: no stray money."""
    account_id, _ = _account(dba, 1000, key="k1")

    dba.execute("BEGIN")
    dba.execute("SAVEPOINT s")
    with contextlib.suppress(errors.UniqueViolation):
        dba.execute(_INSERT + f"VALUES (%s, %s, 100, 'k1') {on_conflict}", [account_id, kind])
    dba.execute(ending)
    dba.execute(_INSERT + "VALUES (%s, 'top_up', 1, NULL)", [account_id])
    dba.execute("COMMIT")

    assert _rows(dba, account_id) == 2
    assert _balance(dba, account_id) == 1001
    assert ledger_violations(dba, [account_id]) == []


def _wait_until_blocked(observer: Conn, pid: int) -> None:
    deadline = time.monotonic() + 10
    query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
    while _scalar(observer, query, pid) != "Lock":
        assert time.monotonic() < deadline, f"backend {pid} never waited for a lock"
        time.sleep(0.01)


@pytest.mark.parametrize(("first_ends", "second_stores"), [("COMMIT", 0), ("ROLLBACK", 1)])
def test_a_conflict_with_a_concurrent_writer_moves_no_money(
    database_url: str,
    dba: Conn,
    ledger_violations: LedgerViolations,
    first_ends: str,
    second_stores: int,
) -> None:
    """Two writers, one key: the second waits for the first and applies only what it stores."""
    account_id, _ = _account(dba, 1000)
    insert = _INSERT + "VALUES (%(a)s, 'top_up', 100, 'k2')"
    with (
        psycopg.connect(database_url, autocommit=True) as first,
        psycopg.connect(database_url, autocommit=True) as second,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        first.execute("BEGIN")
        first.execute(insert, {"a": account_id})
        waiting = pool.submit(
            _attempt,
            second,
            insert + " ON CONFLICT DO NOTHING",
            {"a": account_id},
            frozenset({UNIQUE_VIOLATION}),
        )
        _wait_until_blocked(dba, second.info.backend_pid)
        first.execute(first_ends)
        stored = waiting.result(timeout=30)

    assert stored == second_stores
    assert _rows(dba, account_id) == 2
    assert _balance(dba, account_id) == 1100
    assert ledger_violations(dba, [account_id]) == []


def test_an_explicit_id_cannot_block_later_writers(
    dba: Conn, ledger_violations: LedgerViolations
) -> None:
    """Ids a writer names (if accepted at all) never make later ordinary inserts fail."""
    account_id, row_id = _account(dba, 1000)
    assert row_id is not None
    for offset in (1, 2, 3):
        _attempt(dba, _EXPLICIT_ID, {"id": row_id + offset, "a": account_id}, None)
    stored_explicitly = _rows(dba, account_id) - 1

    for _ in range(3):
        dba.execute(_INSERT + "VALUES (%s, 'top_up', 1, NULL)", [account_id])

    assert _balance(dba, account_id) == 1003 + 100 * stored_explicitly
    assert ledger_violations(dba, [account_id]) == []


# --- 2. A non-superuser writer ----------------------------------------------------------

# What a writer needs: to read and insert into the two ledger tables.
WRITER = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT ON accounts, transactions TO {role}",
)
# What a writer needed besides while the ledger and capture triggers ran with the
# writer's own rights; deployments that followed that advice still grant it.
INVOKER_RIGHTS = (
    "GRANT UPDATE ON accounts TO {role}",
    "GRANT USAGE ON SCHEMA notifier TO {role}",
    "GRANT SELECT, INSERT ON notifier.events TO {role}",
    "GRANT INSERT ON notifier.event_queue TO {role}",
    "GRANT SELECT ON notifier.doorbell TO {role}",
)
# A role that may look into the notifier schema (a reader of events, say).
NOTIFIER_USAGE = ("GRANT USAGE ON SCHEMA notifier TO {role}",)
OWN_SCHEMAS = ("GRANT CREATE ON DATABASE {database} TO {role}",)


@dataclass(frozen=True)
class Writer:
    """A LOGIN, NOSUPERUSER role of the test's database."""

    name: str
    url: str

    def connect(self) -> Conn:
        return psycopg.connect(self.url, autocommit=True)


MakeWriter = Callable[[Sequence[str]], Writer]


def _as_role(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


@pytest.fixture
def make_writer(database_url: str, dba: Conn) -> Iterator[MakeWriter]:
    """Creates roles with the given GRANTs ({role}, {database}); drops them at the end."""
    database = urlsplit(database_url).path.lstrip("/")
    created: list[str] = []

    def make(grants: Sequence[str]) -> Writer:
        name = f"ledger_writer_{uuid.uuid4().hex[:12]}"
        password = uuid.uuid4().hex
        names = {"role": sql.Identifier(name), "database": sql.Identifier(database)}
        dba.execute(
            sql.SQL("CREATE ROLE {role} LOGIN NOSUPERUSER PASSWORD {password}").format(
                role=names["role"], password=sql.Literal(password)
            )
        )
        created.append(name)
        for grant in grants:
            dba.execute(sql.SQL(grant).format(**names))
        return Writer(name, _as_role(database_url, name, password))

    yield make
    for name in created:
        dba.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name]
        )
        deadline = time.monotonic() + 10
        while _int(dba, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", name):
            assert time.monotonic() < deadline, f"sessions of {name} did not end"
            time.sleep(0.01)
        dba.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        dba.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_writer_needs_only_select_and_insert(
    dba: Conn, make_writer: MakeWriter, ledger_violations: LedgerViolations
) -> None:
    """With SELECT and INSERT on the two ledger tables a writer tops up and debits, with events."""
    writer = make_writer(WRITER)
    insert = "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, %s, %s) RETURNING balance_after"

    with writer.connect() as conn:
        account_id = _int(conn, "INSERT INTO accounts (currency) VALUES ('EUR') RETURNING id")
        topped_up = _scalar(conn, insert, account_id, "top_up", 500)
        debited = _scalar(conn, insert, account_id, "debit", 200)
        with pytest.raises(psycopg.Error) as overdraw:
            conn.execute(insert, [account_id, "debit", 1000])

    assert (topped_up, debited) == (500, 300)
    assert overdraw.value.sqlstate == "WL001"
    assert _balance(dba, account_id) == 300
    assert _rows(dba, account_id) == 2
    assert ledger_violations(dba, [account_id]) == []


def test_an_explicit_account_id_cannot_block_later_accounts(
    dba: Conn, make_writer: MakeWriter
) -> None:
    """Account ids a writer names (if accepted at all) never make later accounts fail."""
    first, _ = _account(dba)
    writer = make_writer(WRITER)

    with writer.connect() as conn, contextlib.suppress(psycopg.Error):
        conn.execute(
            "INSERT INTO accounts (id, currency) OVERRIDING SYSTEM VALUE "
            "SELECT g, 'USD' FROM generate_series(%s::bigint, %s::bigint) AS g",
            [first + 1, first + 3],
        )
    named = _int(dba, "SELECT count(*) FROM accounts") - 1
    created = [_account(dba)[0] for _ in range(3)]

    assert len(set(created)) == 3
    assert _int(dba, "SELECT count(*) FROM accounts") == 1 + named + 3


@dataclass(frozen=True)
class DirectUpdate:
    """Statements run in one transaction, whose last one tries to set a balance."""

    statements: tuple[str, ...]
    refusals: frozenset[str] = frozenset({"WL005"})


DIRECT_UPDATES = {
    "update": DirectUpdate(("UPDATE accounts SET balance = 1000000000 WHERE id = %(a)s",)),
    "update_after_a_transaction_row_in_the_same_transaction": DirectUpdate(
        (
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%(a)s, 'top_up', 1)",
            "UPDATE accounts SET balance = 1000000000 WHERE id = %(a)s",
        )
    ),
    "writable_cte_beside_a_transaction_row": DirectUpdate(
        (
            "WITH t AS (INSERT INTO transactions (account_id, kind, amount) "
            "VALUES (%(other)s, 'top_up', 1) RETURNING account_id) "
            "UPDATE accounts SET balance = 1000000000 WHERE id = %(a)s",
        )
    ),
    # Its conflict needs an explicit id, which may be refused first (428C9).
    "upsert_of_the_account": DirectUpdate(
        (
            "INSERT INTO accounts (id, currency) OVERRIDING SYSTEM VALUE VALUES (%(a)s, 'USD') "
            "ON CONFLICT (id) DO UPDATE SET balance = 1000000000",
        ),
        frozenset({"WL005", "428C9"}),
    ),
    "merge_into_accounts": DirectUpdate(
        (
            "MERGE INTO accounts t USING (VALUES (%(a)s::bigint)) AS s (id) ON t.id = s.id "
            "WHEN MATCHED THEN UPDATE SET balance = 1000000000",
        )
    ),
}


def _in_one_transaction(conn: Conn, statements: Sequence[str], params: dict[str, object]) -> None:
    with conn.transaction():
        for statement in statements:
            conn.execute(statement, params)


@pytest.mark.parametrize("attack", DIRECT_UPDATES.values(), ids=DIRECT_UPDATES.keys())
def test_a_writer_cannot_set_a_balance_directly(
    dba: Conn, make_writer: MakeWriter, ledger_violations: LedgerViolations, attack: DirectUpdate
) -> None:
    """Even a writer granted UPDATE on accounts is refused (WL005) however it phrases it."""
    account_id, _ = _account(dba, 100)
    other_id, _ = _account(dba, 100)
    writer = make_writer(WRITER + INVOKER_RIGHTS)

    with writer.connect() as conn, pytest.raises(psycopg.Error) as raised:
        _in_one_transaction(conn, attack.statements, {"a": account_id, "other": other_id})

    assert raised.value.sqlstate in attack.refusals
    assert _balance(dba, account_id) == 100
    assert ledger_violations(dba, [account_id, other_id]) == []


# Triggers of the writer's own: inserting into pg_temp.bait sets the balance of the row's
# account, directly (depth 1) or through a second temporary table (depth 2).
RAISE_BALANCE = """
CREATE FUNCTION pg_temp.raise_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.accounts SET balance = 1000000000 WHERE id = NEW.account_id;
    RETURN NULL;
END $$"""
RELAY = """
CREATE FUNCTION pg_temp.relay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.relayed (account_id) VALUES (NEW.account_id);
    RETURN NULL;
END $$"""
OWN_TRIGGERS = {
    "depth_1": [
        "CREATE TEMP TABLE bait (account_id bigint)",
        RAISE_BALANCE,
        "CREATE TRIGGER raise_balance AFTER INSERT ON pg_temp.bait "
        "FOR EACH ROW EXECUTE FUNCTION pg_temp.raise_balance()",
    ],
    "depth_2": [
        "CREATE TEMP TABLE bait (account_id bigint)",
        "CREATE TEMP TABLE relayed (account_id bigint)",
        RAISE_BALANCE,
        RELAY,
        "CREATE TRIGGER relay AFTER INSERT ON pg_temp.bait "
        "FOR EACH ROW EXECUTE FUNCTION pg_temp.relay()",
        "CREATE TRIGGER raise_balance AFTER INSERT ON pg_temp.relayed "
        "FOR EACH ROW EXECUTE FUNCTION pg_temp.raise_balance()",
    ],
}


@pytest.mark.parametrize("setup", OWN_TRIGGERS.values(), ids=OWN_TRIGGERS.keys())
def test_a_writer_cannot_set_a_balance_from_its_own_triggers(
    dba: Conn, make_writer: MakeWriter, ledger_violations: LedgerViolations, setup: list[str]
) -> None:
    """A writer's temporary trigger that updates accounts is refused like a direct UPDATE."""
    account_id, _ = _account(dba, 100)
    writer = make_writer(WRITER + INVOKER_RIGHTS)

    with writer.connect() as conn:
        for statement in setup:
            conn.execute(statement)
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("INSERT INTO pg_temp.bait (account_id) VALUES (%s)", [account_id])

    assert raised.value.sqlstate == "WL005"
    assert _balance(dba, account_id) == 100
    assert ledger_violations(dba, [account_id]) == []


WRITERS = {"writer": WRITER, "writer_with_invoker_rights": WRITER + INVOKER_RIGHTS}


@pytest.mark.parametrize("grants", WRITERS.values(), ids=WRITERS.keys())
def test_the_ledger_trigger_on_a_writers_own_table_moves_no_money(
    dba: Conn, make_writer: MakeWriter, ledger_violations: LedgerViolations, grants: list[str]
) -> None:
    """The ledger's trigger function attached to a writer's table cannot credit an account."""
    account_id, _ = _account(dba, 100)
    writer = make_writer(grants)

    with writer.connect() as conn, contextlib.suppress(psycopg.Error):
        conn.execute(
            "CREATE TEMP TABLE ledger_copy (id bigint, account_id bigint, kind text, "
            "amount bigint, currency char(3), balance_after bigint, idempotency_key text)"
        )
        conn.execute(
            "CREATE TRIGGER apply BEFORE INSERT ON pg_temp.ledger_copy "
            "FOR EACH ROW EXECUTE FUNCTION public.ledger_apply_transaction()"
        )
        conn.execute(
            "INSERT INTO pg_temp.ledger_copy (account_id, kind, amount) "
            "VALUES (%s, 'top_up', 1000000000000000)",
            [account_id],
        )

    assert _balance(dba, account_id) == 100
    assert ledger_violations(dba, [account_id]) == []


READERS = {"writer": WRITER, "writer_with_notifier_usage": WRITER + NOTIFIER_USAGE}


@pytest.mark.parametrize("grants", READERS.values(), ids=READERS.keys())
def test_a_writer_cannot_insert_events(
    dba: Conn, make_writer: MakeWriter, grants: list[str]
) -> None:
    """Events come only from the capture trigger: a writer's own INSERT is denied."""
    writer = make_writer(grants)
    events = _events(dba)

    with writer.connect() as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute(
            "INSERT INTO notifier.events (type, topic, table_schema, table_name, op, data) "
            "VALUES ('transaction.created', 'transaction', 'public', 'transactions', 'INSERT', "
            '\'{"id": 1, "amount": 1000000}\')'
        )

    assert raised.value.sqlstate == INSUFFICIENT_PRIVILEGE
    assert _events(dba) == events


@pytest.mark.parametrize("grants", READERS.values(), ids=READERS.keys())
def test_the_capture_trigger_on_a_writers_own_table_forges_no_event(
    dba: Conn, make_writer: MakeWriter, grants: list[str]
) -> None:
    """notifier.capture() attached to a writer's table named transactions records nothing."""
    account_id, _ = _account(dba, 100)
    writer = make_writer(grants)
    events = _events(dba)

    with writer.connect() as conn, contextlib.suppress(psycopg.Error):
        conn.execute(
            "CREATE TEMP TABLE transactions (id bigint, account_id bigint, kind text, "
            "amount bigint, balance_after bigint)"
        )
        conn.execute(
            "CREATE TRIGGER forge AFTER INSERT ON pg_temp.transactions "
            "FOR EACH ROW EXECUTE FUNCTION notifier.capture('transaction')"
        )
        conn.execute(
            "INSERT INTO pg_temp.transactions VALUES (424242, %s, 'top_up', 999, 999)",
            [account_id],
        )

    assert _events(dba) == events


# --- 3. Names the ledger's triggers could resolve to a writer's objects -------------------

# Each defines, in the writer's schema "lure", names that shadow what the triggers call.
# Every one records its call in lure.ran, with the role it ran as.
_RECORD = "INSERT INTO lure.ran (name, run_as) VALUES ('{name}', current_user);"


def _lure_function(signature: str, returns: str, result: str) -> str:
    name = signature.partition("(")[0]
    return (
        f"CREATE FUNCTION lure.{signature} RETURNS {returns} LANGUAGE plpgsql AS $$ "
        f"BEGIN {_RECORD.format(name=name)} RETURN {result}; END $$"
    )


def _lure_operator(symbol: str, name: str, returns: str, result: str) -> list[str]:
    return [
        _lure_function(f"{name}(a bigint, b bigint)", returns, result),
        f"CREATE OPERATOR lure.{symbol} (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = lure.{name})",
    ]


SHADOWS = {
    "now": [_lure_function("now()", "timestamptz", "pg_catalog.now()")],
    "pg_trigger_depth": [_lure_function("pg_trigger_depth()", "integer", "7")],
    "bigint_minus": _lure_operator("-", "minus", "bigint", "a"),
    "bigint_plus": _lure_operator("+", "plus", "bigint", "a OPERATOR(pg_catalog.*) 2"),
    "bigint_greater": _lure_operator(">", "greater", "boolean", "false"),
    "bigint_equals": _lure_operator("=", "equals", "boolean", "true"),
    "to_jsonb_of_a_transaction": [
        _lure_function("to_jsonb(public.transactions)", "jsonb", """'{"id": 0}'::jsonb""")
    ],
}


def _lure(conn: Conn, shadow: list[str]) -> None:
    conn.execute("CREATE SCHEMA lure")
    conn.execute("CREATE TABLE lure.ran (name text, run_as text)")
    for statement in shadow:
        conn.execute(statement)
    conn.execute("SET search_path = lure, pg_catalog, public")


@pytest.mark.parametrize("shadow", SHADOWS.values(), ids=SHADOWS.keys())
def test_a_writers_functions_never_run_in_the_ledger(
    dba: Conn, make_writer: MakeWriter, ledger_violations: LedgerViolations, shadow: list[str]
) -> None:
    """With its own names first on search_path a writer still gets exactly the ledger's rules."""
    account_id, _ = _account(dba, 1000)
    bystander_id, _ = _account(dba, 50)
    writer = make_writer(WRITER + INVOKER_RIGHTS + OWN_SCHEMAS)
    insert = (
        "INSERT INTO public.transactions (account_id, kind, amount) VALUES (%s, %s, %s) "
        "RETURNING balance_after"
    )

    with writer.connect() as conn:
        _lure(conn, shadow)
        topped_up = _scalar(conn, insert, account_id, "top_up", 100)
        debited = _scalar(conn, insert, account_id, "debit", 30)
        with pytest.raises(psycopg.Error) as overdraw:
            conn.execute(insert, [account_id, "debit", 1_000_000])

    assert dba.execute("SELECT name, run_as FROM lure.ran").fetchall() == []
    assert (topped_up, debited) == (1100, 1070)
    assert overdraw.value.sqlstate == "WL001"
    assert _balance(dba, account_id) == 1070
    assert _balance(dba, bystander_id) == 50
    assert ledger_violations(dba, [account_id, bystander_id]) == []


GUARD_SHADOWS = {name: SHADOWS[name] for name in ("pg_trigger_depth", "bigint_equals")}


@pytest.mark.parametrize("shadow", GUARD_SHADOWS.values(), ids=GUARD_SHADOWS.keys())
def test_a_writers_functions_cannot_open_the_balance_guard(
    dba: Conn, make_writer: MakeWriter, ledger_violations: LedgerViolations, shadow: list[str]
) -> None:
    """The balance guard's checks are not the writer's: a direct UPDATE is still WL005."""
    account_id, _ = _account(dba, 100)
    writer = make_writer(WRITER + INVOKER_RIGHTS + OWN_SCHEMAS)

    with writer.connect() as conn:
        _lure(conn, shadow)
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(
                "UPDATE public.accounts SET balance = 1000000000 "
                "WHERE id OPERATOR(pg_catalog.=) %s",
                [account_id],
            )

    assert raised.value.sqlstate == "WL005"
    assert dba.execute("SELECT name, run_as FROM lure.ran").fetchall() == []
    assert _balance(dba, account_id) == 100
    assert ledger_violations(dba, [account_id]) == []


@pytest.mark.parametrize("grants", WRITERS.values(), ids=WRITERS.keys())
def test_a_temporary_accounts_table_cannot_stand_in_for_the_real_one(
    dba: Conn, make_writer: MakeWriter, ledger_violations: LedgerViolations, grants: list[str]
) -> None:
    """pg_temp.accounts (any role may create one) is never the table the ledger reads."""
    account_id, _ = _account(dba, 100)
    writer = make_writer(grants)
    insert = (
        "INSERT INTO public.transactions (account_id, kind, amount) VALUES (%s, 'debit', %s) "
        "RETURNING balance_after"
    )

    with writer.connect() as conn:
        conn.execute(
            "CREATE TEMP TABLE accounts "
            "(id bigint, currency char(3), balance bigint, updated_at timestamptz)"
        )
        conn.execute(
            "INSERT INTO pg_temp.accounts VALUES (%s, 'USD', 1000000000000, now())", [account_id]
        )
        with pytest.raises(psycopg.Error) as overdraw:
            conn.execute(insert, [account_id, 5000])
        debited = _scalar(conn, insert, account_id, 30)
        decoy = _scalar(conn, "SELECT balance FROM pg_temp.accounts")

    assert overdraw.value.sqlstate == "WL001"
    assert debited == 70
    assert decoy == 1000000000000
    assert _balance(dba, account_id) == 70
    assert ledger_violations(dba, [account_id]) == []
