"""Schema-driven fuzzing of the live app: every /api/v1 and /auth operation, with a valid token, gets
generated valid and invalid requests; none may answer 5xx, and every answer must be one the OpenAPI
document lists, in the content type and shape it documents (errors: the envelope)."""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import client_for

EXAMPLES_PER_MODE = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def generate(operation: Any, mode: GenerationMode, n: int) -> list[Any]:
    """Draw cases without sending anything (hypothesis drives sync code; the app is async)."""
    drawn: list[Any] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def draw(case: Any) -> None:
        drawn.append(case)

    try:
        draw()
    except Unsatisfiable:  # nothing to negate (an operation without parameters or body)
        pass
    return drawn


def httpx_kwargs(case: Any, headers: dict[str, str]) -> dict[str, Any]:
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    out = {k: kwargs[k] for k in ("method", "url", "headers", "params", "cookies", "files") if kwargs.get(k)}
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    elif isinstance(kwargs.get("data"), str | bytes):
        out["content"] = kwargs["data"]
    elif kwargs.get("data") is not None:
        out["data"] = kwargs["data"]
    return out


async def test_schema_fuzzing_finds_no_5xx_and_no_undocumented_response(app, make_org) -> None:
    org = await make_org()
    started = time.monotonic()
    async with client_for(app, ip="10.99.0.1") as c:  # its own address: its own /auth rate-limit bucket
        document = (await c.get("/schema/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(document).include(path_regex="^/(api/v1|auth)/")
        failures: list[str] = []
        sent = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                for case in generate(operation, mode, EXAMPLES_PER_MODE):
                    kwargs = httpx_kwargs(case, org.headers)
                    response = await c.request(**kwargs)
                    sent += 1
                    try:
                        case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"))
                    except (Exception, BaseExceptionGroup) as exc:  # collect every failure, report at the end
                        failures.append(
                            f"{operation.label} [{mode.value}] -> {response.status_code}: "
                            f"{' | '.join(str(exc).splitlines()[2:6])[:400]}\n    {kwargs}"[:1000]
                        )
    elapsed = time.monotonic() - started
    print(f"schemathesis: {sent} requests in {elapsed:.1f} s, {len(failures)} failures")
    assert sent > 100
    assert not failures, f"{len(failures)} of {sent} cases failed:\n" + "\n".join(failures[:40])
