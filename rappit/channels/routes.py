"""Channel management API. Responses that carry a plaintext secret are not replayable (no
Idempotency-Key), because replaying would mean storing the secret unencrypted."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody

from rappit.channels import inbox, service
from rappit.channels.schemas import (
    ChannelIn,
    ChannelOut,
    ChannelSettingsIn,
    ChannelWithSecretOut,
    WebhookEventOut,
)
from rappit.platform.http import DbSession, Id, Limit, Offset
from rappit.platform.settings import Settings
from rappit.tenancy.auth import requires
from rappit.tenancy.idempotency import idempotent

READ = [requires("channels:read")]
MANAGE = [requires("channels:manage")]


def _base(state: State) -> str:
    settings: Settings = state.settings
    return settings.base_url()


class ChannelController(Controller):
    path = "/api/v1/channels"
    tags = ["channels"]

    @post("/", guards=MANAGE)
    async def create(
        self, state: State, db_session: DbSession, data: JSONBody[ChannelIn]
    ) -> ChannelWithSecretOut:
        made = await service.create_channel(
            db_session,
            state.secret_box,
            state.channels[data.type],
            name=data.name,
            address=data.address,
            webhook_secret=data.webhook_secret,
            warehouse_code=data.warehouse_code,
            api_access_token=data.api_access_token,
        )
        return ChannelWithSecretOut(
            channel=ChannelOut.of(made.channel, _base(state)), webhook_secret=made.webhook_secret
        )

    @get("/", guards=READ)
    async def list_channels(
        self, state: State, db_session: DbSession, limit: Limit = 50, offset: Offset = 0
    ) -> list[ChannelOut]:
        return [
            ChannelOut.of(c, _base(state))
            for c in await service.list_channels(db_session, limit=limit, offset=offset)
        ]

    @get("/{channel_id:uuid}", guards=READ)
    async def show(self, state: State, db_session: DbSession, channel_id: Id) -> ChannelOut:
        return ChannelOut.of(await service.get_channel(db_session, channel_id), _base(state))

    @post("/{channel_id:uuid}/rotate-secret", guards=MANAGE, status_code=200)
    async def rotate_secret(
        self, state: State, db_session: DbSession, channel_id: Id
    ) -> ChannelWithSecretOut:
        made = await service.rotate_secret(db_session, state.secret_box, channel_id)
        return ChannelWithSecretOut(
            channel=ChannelOut.of(made.channel, _base(state)), webhook_secret=made.webhook_secret
        )

    @post("/{channel_id:uuid}/settings", guards=MANAGE, status_code=200)
    async def update_settings(
        self,
        request: Request[Any, Any, Any],
        state: State,
        db_session: DbSession,
        channel_id: Id,
        data: JSONBody[ChannelSettingsIn],
    ) -> Response[Any]:
        """Set the Admin API token (stored encrypted, never shown) and/or the warehouse its orders use."""

        async def op() -> ChannelOut:
            channel = await service.update_settings(
                db_session,
                state.secret_box,
                channel_id,
                api_access_token=data.api_access_token,
                warehouse_code=data.warehouse_code,
            )
            return ChannelOut.of(channel, _base(state))

        return await idempotent(request, db_session, op, status_code=200)

    @post("/{channel_id:uuid}/disable", guards=MANAGE, status_code=200)
    async def disable(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession, channel_id: Id
    ) -> Response[Any]:
        async def op() -> ChannelOut:
            return ChannelOut.of(await service.disable(db_session, channel_id), _base(state))

        return await idempotent(request, db_session, op, status_code=200)

    @get("/{channel_id:uuid}/events", guards=READ)
    async def events(
        self, db_session: DbSession, channel_id: Id, limit: Limit = 50, offset: Offset = 0
    ) -> list[WebhookEventOut]:
        """The channel's inbox, newest first: what arrived, and what became of it."""
        await service.get_channel(db_session, channel_id)
        return [
            WebhookEventOut.of(e)
            for e in await inbox.list_events(db_session, channel_id, limit=limit, offset=offset)
        ]


ROUTES = [ChannelController]
