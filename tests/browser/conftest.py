"""Browser tests: Playwright driving Chromium (Debian's /usr/bin/chromium where it is installed, else
Playwright's own build) against a live server this session starts: uvicorn serving the real app and an
arq worker, both in one thread with its own event loop, on the test stack. No browser is a failure with
the install command, never a skip. Every test leaves a screenshot in .artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from arq.worker import Worker
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from rappit.app.factory import create_app
from rappit.integrations.sandboxes.dhl import FakeDhlExpress
from rappit.integrations.sandboxes.fedex import FakeFedEx
from rappit.platform.settings import REPO_ROOT, Settings
from rappit.workers.inbox import run_inbox
from rappit.workers.settings import WorkerSettings, redis_settings

SCREENSHOTS = REPO_ROOT / ".artifacts" / "screenshots"
# Debian's chromium, headless, with nothing that reaches outside (see ../shared/NOTES.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "the browser tests need Chromium: as root `apt-get install chromium` (Debian's package, found at "
    "/usr/bin/chromium), or `.venv/bin/python -m playwright install chromium`, or set RAPPIT_CHROMIUM "
    "to a Chromium executable"
)


def chromium_path() -> str | None:
    """RAPPIT_CHROMIUM, else a system Chromium, else None (Playwright's own download, if installed)."""
    chosen = os.environ.get("RAPPIT_CHROMIUM")
    if chosen:
        return chosen
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The app under uvicorn plus a worker (arq and the inbox's claim loops), in a thread of their own
    (their own event loop)."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.settings = dataclasses.replace(settings, port=self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        app = create_app(self.settings)
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        worker = Worker(
            functions=WorkerSettings.functions,
            on_startup=WorkerSettings.on_startup,
            on_shutdown=WorkerSettings.on_shutdown,
            redis_settings=redis_settings(self.settings),
            ctx={"settings": self.settings, "webhook_backoff": (0.2, 0.2, 0.2)},
            poll_delay=0.05,
            handle_signals=False,
        )
        working = asyncio.create_task(worker.async_run())
        stop = asyncio.Event()  # and the webhook inbox's claim loops, as `rappit worker` runs them
        inbox = asyncio.create_task(
            run_inbox(self.settings, stop, pool_size=2, max_overflow=2, webhook_backoff=(0.2, 0.2, 0.2))
        )
        try:
            await self._server.serve()
        finally:
            stop.set()
            await asyncio.gather(inbox, return_exceptions=True)
            working.cancel()
            await worker.close()

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the live server did not answer /health/live within 60 s")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)


@pytest.fixture(scope="package")
def live_server(settings: Settings, redis: Any) -> Iterator[LiveServer]:
    """Up only while the browser tests run: its worker would otherwise take jobs queued by later tests
    (the arq queue is shared)."""
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Browser]:
    """Like the live server, up only while the browser tests run: a Chromium left running for the rest
    of the suite costs the later tests memory and CPU."""
    playwright = await async_playwright().start()
    try:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
    except Exception as exc:
        await playwright.stop()
        pytest.fail(f"{INSTALL_HINT} ({type(exc).__name__}: {str(exc).splitlines()[0]})", pytrace=False)
    yield launched
    await launched.close()
    await playwright.stop()


@pytest.fixture
async def context(browser: Browser, live_server: LiveServer) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(
        base_url=live_server.url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    ctx.set_default_timeout(15_000)
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context: BrowserContext, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh page; its screenshot is saved when the test ends, passed or failed."""
    tab = await context.new_page()
    yield tab
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await tab.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)


@pytest.fixture
def fake_fedex() -> Iterator[FakeFedEx]:
    fake = FakeFedEx().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_dhl() -> Iterator[FakeDhlExpress]:
    fake = FakeDhlExpress().start()
    yield fake
    fake.stop()


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
