"""The DHL Express adapter against its loopback sandbox, customs validation, the registry."""

from __future__ import annotations

from datetime import date

import pytest

from rappit.integrations.carriers.base import CarrierUnavailable, OperationNotSupported
from rappit.integrations.carriers.customs import missing_customs_fields
from rappit.integrations.carriers.dhl.adapter import DhlExpressAdapter
from rappit.integrations.carriers.registry import CARRIER_NAMES, adapter_class
from rappit.integrations.sandboxes.dhl import FakeDhlExpress
from tests.integrations.helpers import customs, customs_line, international


async def test_rate_in_billing_currency_minor_units(dhl: DhlExpressAdapter) -> None:
    result = await dhl.rate(international("r", customs()))
    assert [(r.service, r.amount_minor, r.currency, r.transit_days) for r in result.rates] == [
        ("P", 5100, "EUR", 2),
        ("U", 4500, "EUR", 3),
    ]


async def test_service_not_on_lane_is_a_message_with_dhls_code(dhl: DhlExpressAdapter) -> None:
    result = await dhl.rate(international("r", customs(), service="Z"))
    assert result.rates == () and result.messages[0].code == "7008"


async def test_dutiable_label_with_paperless_trade(dhl: DhlExpressAdapter, fake_dhl: FakeDhlExpress) -> None:
    result = await dhl.buy_label(international("shp-d1", customs(paperless_trade=True)))
    label = result.label
    assert label is not None and label.document.startswith(b"%PDF")
    assert (label.cost_minor, label.currency) == (5210, "EUR")
    assert [s.tracking_number for s in fake_dhl.sold_for("shp-d1")] == [label.carrier_shipment_id]


async def test_dutiable_without_export_declaration_is_refused_the_dhl_way(dhl: DhlExpressAdapter) -> None:
    result = await dhl.buy_label(international("shp-d2", None))
    assert result.label is None
    assert [m.text for m in result.messages][1:] == ["required key [exportDeclaration] not found"]
    bad_line = customs(customs_line(hs_code=None, origin_country=None))
    result = await dhl.buy_label(international("shp-d3", bad_line))
    assert result.label is None
    assert any("[manufacturerCountry]" in m.text for m in result.messages)
    assert any("[commodityCodes]" in m.text for m in result.messages)


def test_customs_validator_names_every_sku_and_field_before_any_call() -> None:
    declaration = customs(
        customs_line("MUG-1"),
        customs_line("TEE-2", hs_code=None, origin_country=None, weight_grams=None),
        customs_line("CAP-3", value_minor=None, description=" "),
        exporter_eori=None,
    )
    problems = {(p.sku, p.field) for p in missing_customs_fields("DE", "US", declaration)}
    assert problems == {
        ("TEE-2", "hs_code"),
        ("TEE-2", "origin_country"),
        ("TEE-2", "weight"),
        ("CAP-3", "customs_value"),
        ("CAP-3", "description"),
        (None, "exporter_registration_number (EORI or VAT)"),
    }
    assert missing_customs_fields("DE", "DE", None) == []
    assert [p.field for p in missing_customs_fields("DE", "US", None)] == ["customs_declaration"]


async def test_void_is_not_supported(dhl: DhlExpressAdapter, fake_dhl: FakeDhlExpress) -> None:
    label = (await dhl.buy_label(international("shp-v", customs()))).label
    assert label is not None
    before = len(fake_dhl.requests)
    with pytest.raises(OperationNotSupported) as refused:
        await dhl.void_label(label)
    assert refused.value.operation == "void" and len(fake_dhl.requests) == before
    assert DhlExpressAdapter.can_void is False


async def test_track_and_find_by_reference(dhl: DhlExpressAdapter, fake_dhl: FakeDhlExpress) -> None:
    fake_dhl.faults.sell_then_drop = True
    with pytest.raises(CarrierUnavailable) as lost:
        await dhl.buy_label(international("shp-lost", customs()))
    assert lost.value.maybe_processed and fake_dhl.api_calls("/mydhlapi/shipments") == 1
    fake_dhl.faults.sell_then_drop = False
    lookup = await dhl.find_label("shp-lost", date(2026, 11, 20))
    assert lookup.found is True and len(lookup.tracking_numbers) == 1
    assert (await dhl.find_label("nope", date(2026, 11, 20))).found is False
    tracked = await dhl.track(lookup.tracking_numbers[0])
    assert tracked.events[0].code == "SA"
    assert (await dhl.track("0000000000")).messages[0].code == "221"


async def test_process_failure_is_unavailable_with_dhls_999(
    dhl: DhlExpressAdapter, fake_dhl: FakeDhlExpress
) -> None:
    fake_dhl.faults.server_error = 1
    with pytest.raises(CarrierUnavailable) as down:
        await dhl.buy_label(international("shp-5", customs()))
    assert down.value.carrier_messages[0].code == "999" and fake_dhl.sold_for("shp-5") == []


def test_registry() -> None:
    assert CARRIER_NAMES == ("fedex", "dhl_express")
    assert adapter_class("dhl_express") is DhlExpressAdapter
