"""Property tests for what strangers send us: the channel mappers and the stock CSV/JSON importer.

Whatever the bytes or JSON, the answer is a valid result or a domain error (PayloadError for a
webhook, BadRequest or per-line errors for an import), never another exception; and every accepted
value fits the column it is stored in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rappit.integrations.channels.base import TopicKind
from rappit.integrations.channels.canonical import (
    MAX_LINE_QUANTITY,
    MAX_MINOR,
    MAX_TEXT,
    CanonicalOrder,
    PayloadError,
    decode_json,
)
from rappit.integrations.channels.shopify import ShopifyAdapter
from rappit.integrations.channels.woocommerce import WooCommerceAdapter, dedup_key
from rappit.inventory import bulk
from rappit.inventory.stock import MAX_QUANTITY
from rappit.platform.errors import BadRequest

ADAPTERS = [ShopifyAdapter("https://{shop}"), WooCommerceAdapter()]
INT4 = 2**31 - 1
INT8 = 2**63 - 1

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
# Values that look like what the platforms send, with every field sometimes wrong.
scalar = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=120),
    st.sampled_from(["19.99", "1e400", "NaN", "-Infinity", "9" * 30, "0", "", "12.5", "-3"]),
    st.floats(),
    st.none(),
    st.booleans(),
)
line_item = st.fixed_dictionaries(
    {},
    optional={
        "id": scalar, "sku": scalar, "title": scalar, "name": scalar, "quantity": scalar,
        "current_quantity": scalar, "price": scalar,
    },
)  # fmt: skip
order_like = st.fixed_dictionaries(
    {"id": scalar},
    optional={
        "currency": st.one_of(st.sampled_from(["USD", "EUR", "JPY", "KWD", "usd", "US", "€€€"]), scalar),
        "name": scalar, "number": scalar, "status": scalar, "cancelled_at": scalar,
        "updated_at": st.one_of(st.datetimes(timezones=st.timezones()).map(datetime.isoformat), scalar),
        "date_modified_gmt": st.one_of(st.datetimes().map(datetime.isoformat), scalar),
        "line_items": st.one_of(st.lists(line_item, max_size=4), scalar),
    },
)  # fmt: skip


def assert_fits(order: CanonicalOrder) -> None:
    assert isinstance(order.external_id, str) and len(order.external_id) <= MAX_TEXT["external_id"]
    assert len(order.name) <= MAX_TEXT["name"]
    assert len(order.currency) == 3 and order.currency.isascii() and order.currency.isalpha()
    assert order.updated_at is None or (isinstance(order.updated_at, datetime) and order.updated_at.tzinfo)
    for line in order.lines:
        assert line.sku is None or 0 < len(line.sku) <= MAX_TEXT["sku"]
        assert line.external_line_id is None or len(line.external_line_id) <= MAX_TEXT["external_line_id"]
        assert len(line.title) <= 500
        assert 0 <= line.quantity <= MAX_LINE_QUANTITY <= INT4
        assert 0 <= line.unit_price_minor <= MAX_MINOR <= INT8


def map_or_refuse(payload: Any) -> None:
    for adapter in ADAPTERS:
        for kind in (TopicKind.ORDER, TopicKind.CANCEL):
            try:
                order = adapter.map_order(payload, kind)
            except PayloadError:
                continue
            assert_fits(order)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_like)
def test_mappers_accept_only_orders_that_fit_their_columns(payload: dict[str, Any]) -> None:
    map_or_refuse(payload)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_mappers_refuse_any_other_json_with_a_payload_error(payload: Any) -> None:
    map_or_refuse(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_stored_body_decodes_or_is_a_payload_error(body: bytes) -> None:
    try:
        data = decode_json(body)
    except PayloadError:
        data = None
    if data is not None:
        map_or_refuse(data)
    assert dedup_key("order.created", "d", body)  # ingress always has a key, whatever the body


def assert_rows_fit(parsed: bulk.Parsed) -> None:
    for row in parsed.rows:
        assert row.sku and row.warehouse and "\x00" not in row.sku + row.warehouse
        assert row.sku == row.sku.strip() and row.warehouse == row.warehouse.strip()
        assert 0 <= row.quantity <= MAX_QUANTITY <= INT4
        assert row.mode in bulk.MODES
    assert parsed.received == len(parsed.rows) + len(parsed.errors)


csv_cells = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 2 * MAX_QUANTITY).map(str),
    st.sampled_from(["set", "add", "SET", "nuke", ""]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(csv_cells, min_size=3, max_size=4), max_size=8), st.sampled_from(["set", "add"]))
def test_csv_rows_are_accepted_only_when_they_fit(rows: list[list[str]], mode: str) -> None:
    header = "sku,quantity,warehouse_code" + (",mode" if rows and len(rows[0]) == 4 else "")
    lines = [header] + [",".join('"' + c.replace('"', '""') + '"' for c in r) for r in rows]
    try:
        parsed = bulk.parse_csv("\n".join(lines).encode(), mode)
    except BadRequest:
        return  # a malformed file is refused whole, with its line number
    assert_rows_fit(parsed)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_csv_give_rows_or_a_bad_request(body: bytes) -> None:
    try:
        parsed = bulk.parse_csv(body, "set")
    except BadRequest:
        return
    assert_rows_fit(parsed)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_as_an_import_gives_rows_or_errors(items: Any) -> None:
    try:
        parsed = bulk.parse_json(items, "add")
    except BadRequest:
        return
    assert_rows_fit(parsed)


@settings(max_examples=500, deadline=None)
@example("9999-12-31T23:59:59-10:00")  # past the calendar once moved to UTC (an OverflowError before)
@example("0001-01-01T00:00:00+14:00")
@given(
    st.one_of(
        st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
        st.datetimes().map(datetime.isoformat),
        st.text(max_size=40),
    )
)
def test_any_timestamp_parses_to_utc_or_is_a_payload_error(value: str) -> None:
    from rappit.integrations.channels.canonical import parse_time

    try:
        parsed = parse_time(value)
    except PayloadError:
        return
    assert parsed is None or parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0
