"""The FedEx adapter against its loopback sandbox: every operation, the error shapes, the OAuth token."""

from __future__ import annotations

from datetime import date

import pytest

from rappit.integrations.carriers.base import CarrierUnavailable, LabelFormat, TrackingStatus
from rappit.integrations.carriers.fedex.adapter import FedExAdapter
from rappit.integrations.carriers.fedex.client import TokenCache
from rappit.integrations.sandboxes.fedex import FakeFedEx
from tests.integrations.helpers import customs, domestic, international


async def test_rate_quotes_every_service_in_minor_units(fedex: FedExAdapter) -> None:
    result = await fedex.rate(domestic("r-1", service=None))  # type: ignore[arg-type]
    assert {r.service for r in result.rates} == {"FEDEX_GROUND", "FEDEX_2_DAY"}
    ground = next(r for r in result.rates if r.service == "FEDEX_GROUND")
    assert (ground.amount_minor, ground.currency) == (1038, "USD")  # 8.50 + 1.25 x 1.5 kg
    assert result.messages == ()


async def test_buy_label_returns_a_real_pdf_and_the_carrier_remembers_our_reference(
    fedex: FedExAdapter, fake_fedex: FakeFedEx
) -> None:
    result = await fedex.buy_label(domestic("shp-42"))
    label = result.label
    assert label is not None and result.messages == ()
    assert label.document.startswith(b"%PDF-1.4") and label.document.rstrip().endswith(b"%%EOF")
    assert (label.cost_minor, label.currency, label.format) == (1234, "USD", LabelFormat.PDF)
    assert label.tracking_numbers[0] == label.carrier_shipment_id
    assert [s.tracking_number for s in fake_fedex.sold_for("shp-42")] == [label.carrier_shipment_id]


async def test_zpl_label(fedex: FedExAdapter) -> None:
    label = (await fedex.buy_label(domestic("shp-z", fmt=LabelFormat.ZPL))).label
    assert label is not None and label.document.startswith(b"^XA") and label.document.endswith(b"^XZ")


async def test_postal_city_mismatch_is_a_warning_on_a_sold_label(
    fedex: FedExAdapter, fake_fedex: FakeFedEx
) -> None:
    fake_fedex.postal_city_mismatch = True
    result = await fedex.buy_label(domestic("shp-w"))
    assert result.label is not None
    assert [(m.code, m.severity) for m in result.messages] == [
        ("SHIP.RECIPIENT.POSTALCITY.MISMATCH", "warning")
    ]


async def test_address_rejected_is_a_message_not_an_exception(
    fedex: FedExAdapter, fake_fedex: FakeFedEx
) -> None:
    fake_fedex.faults.reject_address = True
    result = await fedex.buy_label(domestic("shp-a"))
    assert result.label is None
    assert [m.code for m in result.messages] == ["RECIPIENT.ADDRESS.INVALID"]
    assert fake_fedex.sold_for("shp-a") == []


async def test_international_without_commodities_is_refused_by_fedex(fedex: FedExAdapter) -> None:
    refused = await fedex.buy_label(international("shp-c", None, service="INTERNATIONAL_PRIORITY"))
    assert refused.label is None and refused.messages[0].code == "CUSTOMS.COMMODITIES.REQUIRED"
    sold = await fedex.buy_label(international("shp-c2", customs(), service="INTERNATIONAL_PRIORITY"))
    assert sold.label is not None


async def test_void_and_void_refused(fedex: FedExAdapter, fake_fedex: FakeFedEx) -> None:
    first = (await fedex.buy_label(domestic("shp-v1"))).label
    second = (await fedex.buy_label(domestic("shp-v2"))).label
    assert first and second
    assert (await fedex.void_label(first)).voided is True
    fake_fedex.faults.refuse_void = True
    refused = await fedex.void_label(second)
    assert refused.voided is False
    assert [(m.code, m.severity) for m in refused.messages] == [("SHIPMENT.CANCELLATION.NOTALLOWED", "error")]


async def test_track_known_and_unknown(fedex: FedExAdapter) -> None:
    label = (await fedex.buy_label(domestic("shp-t"))).label
    assert label is not None
    tracked = await fedex.track(label.carrier_shipment_id)
    assert tracked.status is TrackingStatus.LABEL_CREATED and tracked.events[0].code == "OC"
    unknown = await fedex.track("999999999999")
    assert unknown.status is TrackingStatus.UNKNOWN
    assert unknown.messages[0].code == "TRACKING.TRACKINGNUMBER.NOTFOUND"


async def test_label_sold_but_answer_lost_is_found_by_reference(
    fedex: FedExAdapter, fake_fedex: FakeFedEx
) -> None:
    fake_fedex.faults.sell_then_drop = True
    with pytest.raises(CarrierUnavailable) as lost:
        await fedex.buy_label(domestic("shp-lost"))
    assert lost.value.maybe_processed is True
    assert fake_fedex.api_calls("/ship/") == 1  # a label purchase is never retried
    fake_fedex.faults.sell_then_drop = False
    lookup = await fedex.find_label("shp-lost", date(2026, 11, 20))
    assert lookup.found is True
    assert lookup.tracking_numbers == tuple(s.tracking_number for s in fake_fedex.sold_for("shp-lost"))
    assert (await fedex.find_label("shp-never", date(2026, 11, 20))).found is False


async def test_hang_after_sale_is_a_read_timeout_that_may_have_sold(
    fedex: FedExAdapter, fake_fedex: FakeFedEx
) -> None:
    fake_fedex.faults.sell_then_hang = True
    with pytest.raises(CarrierUnavailable) as lost:
        await fedex.buy_label(domestic("shp-hang"))
    assert (lost.value.reason, lost.value.maybe_processed) == ("timeout", True)
    assert len(fake_fedex.sold_for("shp-hang")) == 1


async def test_5xx_on_rate_is_retried_boundedly_then_unavailable(
    fedex: FedExAdapter, fake_fedex: FakeFedEx
) -> None:
    fake_fedex.faults.server_error = 2
    assert (await fedex.rate(domestic("r-2"))).rates  # two 503s, third attempt answers
    fake_fedex.faults.server_error = -1
    before = fake_fedex.api_calls("/rate/")
    with pytest.raises(CarrierUnavailable) as down:
        await fedex.rate(domestic("r-3"))
    assert fake_fedex.api_calls("/rate/") - before == 3
    assert down.value.reason == "server_error"
    assert down.value.carrier_messages[0].code == "SERVICE.UNAVAILABLE.ERROR"


async def test_token_is_cached_and_refreshed_once_on_401(
    fedex: FedExAdapter, fake_fedex: FakeFedEx, tokens: TokenCache
) -> None:
    await fedex.rate(domestic("t-1"))
    await fedex.track("794000000001")
    assert fake_fedex.token_requests == 1 and tokens.fetched == 1
    fake_fedex.expire_tokens()  # FedEx now answers 401 NOT.AUTHORIZED.ERROR to the cached token
    assert (await fedex.rate(domestic("t-2"))).rates
    assert fake_fedex.token_requests == 2
    assert fake_fedex.requests[-3:] == [
        ("POST", "/rate/v1/rates/quotes"),
        ("POST", "/oauth/token"),
        ("POST", "/rate/v1/rates/quotes"),
    ]


async def test_401_after_a_fresh_token_is_answered_not_looped(
    fedex: FedExAdapter, fake_fedex: FakeFedEx, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fedex.rate(domestic("t-3"))
    monkeypatch.setattr(fake_fedex, "tokens", _NeverValid())
    result = await fedex.rate(domestic("t-4"))
    assert result.rates == () and result.messages[0].code == "NOT.AUTHORIZED.ERROR"
    assert fake_fedex.token_requests == 2  # refreshed once, then the 401 is the answer


async def test_wrong_client_secret_is_a_message(fake_fedex: FakeFedEx, fedex: FedExAdapter) -> None:
    fake_fedex.client_secret = "rotated"
    result = await fedex.rate(domestic("t-5"))
    assert result.rates == () and result.messages[0].code == "NOT.AUTHORIZED.ERROR"


class _NeverValid(dict[str, bool]):
    """The sandbox's token table after FedEx revoked every token, including ones issued from now on."""

    def get(self, key: str, default: object = None) -> bool:  # type: ignore[override]
        return False
