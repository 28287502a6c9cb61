"""Channels, carrier accounts and the team: connect, rotate, disable, invite, issue and revoke. A
secret (webhook secret, callback secret, API token) is rendered once, in the answer to the POST that
made it, and never stored where a later page could show it again."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from rappit.channels import inbox
from rappit.channels import service as channels
from rappit.dashboard.web import PREFIX, done, form_text, optional, principal, render
from rappit.integrations.carriers.registry import CARRIER_NAMES
from rappit.platform.errors import BadRequest
from rappit.platform.http import DbSession
from rappit.platform.settings import Settings
from rappit.shipping import accounts
from rappit.tenancy import service as tenancy
from rappit.tenancy.auth import PASSIVE, requires
from rappit.tenancy.permissions import ROLE_RANK

Id = Annotated[uuid.UUID, PathParameter()]
ROLES = tuple(sorted(ROLE_RANK, key=ROLE_RANK.__getitem__))
CREDENTIAL_FIELDS = {"fedex": ("client_id", "client_secret"), "dhl_express": ("username", "password")}


def webhook_url(state: State, channel: Any) -> str:
    settings: Settings = state.settings
    return f"{settings.base_url()}/webhooks/{channel.type}/{channel.id}"


class ChannelPages(Controller):
    path = "/channels"

    @get("/", guards=[requires("channels:read")], name="dashboard.channels")
    async def list_channels(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession
    ) -> Template:
        found = await channels.list_channels(db_session, limit=100, offset=0)
        return render(
            request,
            "channels.html",
            channels=[(c, webhook_url(state, c)) for c in found],
            types=[a.type for a in state.channels],
        )

    @post("/", guards=[requires("channels:manage")], status_code=201)
    async def connect(self, request: Request[Any, Any, Any], state: State, db_session: DbSession) -> Template:
        form = await request.form()
        kind = form_text(form, "type")
        adapter = state.channels.get(kind)
        if adapter is None:
            raise BadRequest(f"type: one of {', '.join(a.type for a in state.channels)}", code="BAD_FORM")
        if not form_text(form, "name"):
            raise BadRequest("name: give the channel a name", code="BAD_FORM")
        made = await channels.create_channel(
            db_session,
            state.secret_box,
            adapter,
            name=form_text(form, "name"),
            address=form_text(form, "address"),
            webhook_secret=optional(form_text(form, "webhook_secret")),
            warehouse_code=optional(form_text(form, "warehouse_code")),
        )
        return render(
            request,
            "secret_once.html",
            status_code=201,
            title=f"Channel {made.channel.name} connected",
            lines=[
                ("Webhook URL", webhook_url(state, made.channel)),
                ("Webhook secret", made.webhook_secret),
            ],
            back=f"{PREFIX}/channels/{made.channel.id}",
        )

    @get("/{channel_id:uuid}", guards=[requires("channels:read")])
    async def show(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession, channel_id: Id
    ) -> Template:
        channel = await channels.get_channel(db_session, channel_id)
        events = await inbox.list_events(db_session, channel_id, limit=50, offset=0)
        return render(
            request, "channel.html", channel=channel, url=webhook_url(state, channel), events=events
        )

    @get("/{channel_id:uuid}/events", guards=[requires("channels:read")], opt={PASSIVE: True})
    async def events(
        self, request: Request[Any, Any, Any], db_session: DbSession, channel_id: Id
    ) -> Template:
        """Polled by the channel page: new deliveries show up without a reload."""
        events = await inbox.list_events(db_session, channel_id, limit=50, offset=0)
        return render(request, "_events.html", events=events)

    @post("/{channel_id:uuid}/rotate", guards=[requires("channels:manage")])
    async def rotate(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession, channel_id: Id
    ) -> Template:
        made = await channels.rotate_secret(db_session, state.secret_box, channel_id)
        return render(
            request,
            "secret_once.html",
            title=f"New webhook secret for {made.channel.name}",
            lines=[
                ("Webhook URL", webhook_url(state, made.channel)),
                ("Webhook secret", made.webhook_secret),
            ],
            back=f"{PREFIX}/channels/{channel_id}",
        )

    @post("/{channel_id:uuid}/disable", guards=[requires("channels:manage")])
    async def disable(
        self, request: Request[Any, Any, Any], db_session: DbSession, channel_id: Id
    ) -> Redirect:
        channel = await channels.disable(db_session, channel_id)
        return done(
            request, f"Channel {channel.name} disabled: its webhooks are refused.", f"{PREFIX}/channels/"
        )


class CarrierPages(Controller):
    path = "/carriers"

    @get("/", guards=[requires("shipments:read")], name="dashboard.carriers")
    async def list_accounts(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession
    ) -> Template:
        states = await accounts.breaker_states(db_session, state.carriers.breakers)
        return render(
            request, "carriers.html", states=states, carriers=CARRIER_NAMES, fields=CREDENTIAL_FIELDS
        )

    @post("/", guards=[requires("carriers:manage")], status_code=201)
    async def add(self, request: Request[Any, Any, Any], state: State, db_session: DbSession) -> Template:
        form = await request.form()
        carrier = form_text(form, "carrier")
        if carrier not in CARRIER_NAMES:
            raise BadRequest(f"carrier: one of {', '.join(CARRIER_NAMES)}", code="BAD_FORM")
        credentials = {f: form_text(form, f"cred_{f}") for f in CREDENTIAL_FIELDS.get(carrier, ())}
        missing = [f for f, v in credentials.items() if not v]
        if missing or not form_text(form, "name") or not form_text(form, "account_number"):
            names = ", ".join(missing + [f for f in ("name", "account_number") if not form_text(form, f)])
            raise BadRequest(f"required: {names}", code="BAD_FORM")
        base_url = optional(form_text(form, "base_url"))
        if base_url and not base_url.startswith(("http://", "https://")):
            raise BadRequest("base_url: must start with http:// or https://", code="BAD_FORM")
        made = await accounts.create_account(
            db_session,
            state.secret_box,
            carrier=carrier,
            name=form_text(form, "name"),
            credentials=credentials,
            account_number=form_text(form, "account_number"),
            base_url=base_url,
        )
        return render(
            request,
            "secret_once.html",
            status_code=201,
            title=f"Carrier account {made.account.name} added",
            lines=[("Callback secret", made.callback_secret)],
            back=f"{PREFIX}/carriers/",
        )

    @post("/{account_id:uuid}/disable", guards=[requires("carriers:manage")])
    async def disable(
        self, request: Request[Any, Any, Any], db_session: DbSession, account_id: Id
    ) -> Redirect:
        account = await accounts.disable_account(db_session, account_id)
        return done(request, f"Carrier account {account.name} disabled.", f"{PREFIX}/carriers/")


class TeamPages(Controller):
    path = "/team"

    @get("/", guards=[requires("org:read")], name="dashboard.team")
    async def team(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template:
        me = principal(request)
        assert me is not None
        users = (
            await tenancy.list_users(db_session, limit=200, offset=0)
            if "users:manage" in me.permissions
            else []
        )
        tokens = (
            await tenancy.list_tokens(db_session, limit=200, offset=0)
            if "tokens:manage" in me.permissions
            else []
        )
        grantable = [r for r in ROLES if ROLE_RANK[r] <= ROLE_RANK.get(me.role, -1)]
        return render(request, "team.html", users=users, tokens=tokens, roles=grantable)

    @post("/users", guards=[requires("users:manage")])
    async def add_user(self, request: Request[Any, Any, Any], db_session: DbSession) -> Redirect:
        form = await request.form()
        me = principal(request)
        assert me is not None
        user = await tenancy.add_user(
            db_session,
            email=form_text(form, "email"),
            role=form_text(form, "role"),
            password=optional(form.get("password") or ""),
            granter_role=me.role,
        )
        return done(request, f"Added {user.email} as {user.role}.", f"{PREFIX}/team/")

    @post("/tokens", guards=[requires("tokens:manage")], status_code=201)
    async def create_token(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template:
        form = await request.form()
        me = principal(request)
        assert me is not None
        if not form_text(form, "name"):
            raise BadRequest("name: give the token a name", code="BAD_FORM")
        issued = await tenancy.create_token(
            db_session,
            name=form_text(form, "name"),
            role=form_text(form, "role"),
            user_id=me.user_id,
            expires_at=None,
            granter_role=me.role,
        )
        return render(
            request,
            "secret_once.html",
            status_code=201,
            title=f"API token {issued.token.name} ({issued.token.role})",
            lines=[("Token", issued.plaintext)],
            back=f"{PREFIX}/team/",
        )

    @post("/tokens/{token_id:uuid}/revoke", guards=[requires("tokens:manage")])
    async def revoke(self, request: Request[Any, Any, Any], db_session: DbSession, token_id: Id) -> Redirect:
        me = principal(request)
        assert me is not None
        token = await tenancy.revoke_token(db_session, token_id, revoker_role=me.role)
        return done(request, f"Token {token.name} revoked.", f"{PREFIX}/team/")
