"""The subscription store: validation, secrets, rotation, enable and disable."""

from __future__ import annotations

import asyncpg
import pytest

from notifier.subscriptions.store import InvalidSubscription, SubscriptionStore, validate_secret


async def test_create_generates_a_valid_secret_and_hides_it(pool: asyncpg.Pool) -> None:
    store = SubscriptionStore(pool, allow_private_targets=True)
    sub = await store.create("http://example.com/hook", event_types=["transaction.*"])
    assert validate_secret(sub.secret) == sub.secret
    assert "secret" not in sub.as_dict()
    assert sub.as_dict()["event_types"] == ["transaction.*"]
    assert (await store.get(sub.id)) == sub


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "ftp://example.com"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "http://x", "event_types": ["Transaction"]}, "event_types"),
        ({"url": "http://x", "event_types": ["transaction.moved"]}, "event_types"),
        ({"url": "http://x", "secret": "nope"}, "secret"),
        ({"url": "http://x", "secret": "whsec_c2hvcnQ="}, "secret"),
    ],
)
async def test_invalid_fields_are_named(
    pool: asyncpg.Pool, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidSubscription) as raised:
        await SubscriptionStore(pool, allow_private_targets=True).create(**kwargs)  # type: ignore[arg-type]
    assert raised.value.field == field
    assert await pool.fetchval("SELECT count(*) FROM notifier.subscriptions") == 0


async def test_rotate_keeps_the_old_secret_for_the_overlap(pool: asyncpg.Pool) -> None:
    store = SubscriptionStore(pool, allow_private_targets=True)
    sub = await store.create("http://example.com/hook")
    rotated = await store.rotate_secret(sub.id, overlap_seconds=3600)
    assert rotated is not None
    assert rotated.secret != sub.secret
    assert rotated.previous_secret == sub.secret
    assert rotated.previous_secret_expires_at is not None
    assert (rotated.previous_secret_expires_at - rotated.updated_at).total_seconds() == 3600


async def test_disable_then_enable_clears_the_reason(pool: asyncpg.Pool) -> None:
    store = SubscriptionStore(pool, allow_private_targets=True)
    sub = await store.create("http://example.com/hook")
    disabled = await store.disable(sub.id, "endpoint answered 410 Gone")
    assert disabled is not None
    assert (disabled.enabled, disabled.disabled_reason) == (False, "endpoint answered 410 Gone")
    assert await store.disable(sub.id, "again") is None
    enabled = await store.update(sub.id, enabled=True)
    assert enabled is not None
    assert (enabled.enabled, enabled.disabled_reason, enabled.disabled_at) == (True, None, None)
    assert await store.delete(sub.id)
    assert await store.get(sub.id) is None


async def test_type_matching_in_sql(pool: asyncpg.Pool) -> None:
    cases = {
        ("transaction.created", "{*}"): True,
        ("transaction.created", "{transaction.*}"): True,
        ("transaction.created", "{transaction.created}"): True,
        ("transaction.created", "{transaction.updated}"): False,
        ("transactions.created", "{transaction.*}"): False,
        ("order.deleted", "{transaction.*,order.deleted}"): True,
    }
    for (event_type, patterns), expected in cases.items():
        got = await pool.fetchval(
            "SELECT notifier.type_matches($1, $2::text::text[])", event_type, patterns
        )
        assert got is expected, (event_type, patterns)


async def test_the_claims_type_patterns_match_as_type_matches_does(pool: asyncpg.Pool) -> None:
    # The claim matches types with LIKE (sql/021): LIKE's own wildcards in a type or a
    # pattern are literal characters, and a pattern's '*' is a wildcard only alone or
    # after a final dot.
    types = [
        "transaction.created",
        "transaction.",
        "transactions.created",
        "a.b.created",
        "a_b.created",
        "axb.created",
        "a%b.created",
        "a\\b.created",
        "x.y",
        "*.created",
    ]
    patterns = [
        "{*}", "{transaction.*}", "{transaction.created}", "{a.*}", "{a.b.*}", "{a_b.*}",
        '{"a%b.*"}', '{"a\\\\b.*"}', "{*.created}", "{x.y,transaction.*}", "{}", "{.*}",
        "{transaction*}", "{a.*.created}",
    ]  # fmt: skip
    rows = await pool.fetch(
        "SELECT t, p, notifier.type_matches(t, p::text[]) AS matches,"
        "       t LIKE ANY (notifier.type_like(p::text[])) AS likes"
        "  FROM unnest($1::text[]) AS t, unnest($2::text[]) AS p",
        types,
        patterns,
    )
    assert len(rows) == len(types) * len(patterns)
    assert sum(row["matches"] for row in rows) >= 15
    assert [(r["t"], r["p"]) for r in rows if r["matches"] is not r["likes"]] == []
