"""The admin dashboard in a real headless Chromium, against a live server.

Chromium comes from Debian (`apt-get install -y chromium`), never from Playwright's own
download: when /usr/bin/chromium is missing, the session fixture installs it if running as
root, else the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Sum

from quotas.ledger import today
from quotas.models import APIKey, QuotaAdjustment, Tier, UsageRecord, UserQuota
from quotas.policy import quota_for_user
from quotas.services import service

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "password"  # pytest-django's admin_user


@pytest.fixture(scope="session")
def chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{CHROMIUM} is missing; install it with `apt-get install -y chromium` (root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["apt-get", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)

    done = apt("install", "-y", "chromium")
    if done.returncode != 0:  # an old or missing package list
        apt("update")
        done = apt("install", "-y", "chromium")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"`apt-get install -y chromium` failed: {done.stderr[-500:]}")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium: str):
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls of the test
    # itself stay synchronous and safe.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        yield launched
        launched.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def call(user, prompt: int, completion: int, cost: int, model: str = "gpt-4o-mini") -> None:
    """One AI call through the service: reserve the worst case, settle to the real usage."""
    decision, grant = service.reserve(
        user.pk, quota_for_user(user), model=model, tokens=prompt + completion + 200, spend=cost
    )
    assert grant is not None, decision.denied_by
    service.settle(grant, prompt_tokens=prompt, completion_tokens=completion, cost=cost)


def denied(user, tokens: int) -> None:
    _, grant = service.reserve(
        user.pk, quota_for_user(user), model="gpt-4o", tokens=tokens, spend=0
    )
    assert grant is None


def make_user(name: str, tier: Tier):
    user = get_user_model().objects.create_user(name, email=f"{name}@example.com")
    UserQuota.objects.create(user=user, tier=tier)
    return user


@pytest.fixture
def usage():
    """Four users on two tiers, a month of history in the ledger, and today's calls."""
    team = Tier.objects.create(
        slug="team",
        name="Team",
        requests_per_minute=60,
        burst=20,
        requests_per_day=200,
        tokens_per_day=20_000,
        tokens_per_month=300_000,
        spend_per_month=Decimal("5"),
        max_concurrent_requests=4,
    )
    trial = Tier.objects.create(
        slug="trial",
        name="Trial",
        requests_per_day=20,
        tokens_per_day=2_000,
        max_concurrent_requests=1,
    )
    ada, bob = make_user("ada", team), make_user("bob", trial)
    carol, _ = make_user("carol", team), make_user("dave", trial)
    day, first, _ = today()
    for n in range(1, 30):  # history first, so that Redis seeds the month from it
        past = day - timedelta(days=n)
        for user, scale in ((ada, 900), (carol, 400)):
            tokens = scale * (3 + (n * 7) % 11)
            UsageRecord.objects.create(
                user=user,
                day=past,
                model="gpt-4o-mini",
                requests=3 + n % 5,
                prompt_tokens=tokens * 2 // 3,
                completion_tokens=tokens // 3,
                cost=Decimal(tokens) * 6 / 1_000_000,
            )
    for prompt, completion, cost in ((6000, 4000, 60_000), (4000, 3200, 45_000)):
        call(ada, prompt, completion, cost)
    call(bob, 900, 700, 4_000)
    denied(bob, 1_500)
    denied(bob, 1_500)
    call(carol, 1200, 300, 9_000)
    _, key = APIKey.objects.create_key(user=ada, name="laptop")
    return {"ada": ada, "bob": bob, "carol": carol, "key": key, "first": first}


def usd(shown: str) -> Decimal:
    return Decimal(shown.removeprefix("$").replace(",", ""))


def quota_of(base_url: str, key: str) -> dict:
    request = urllib.request.Request(
        f"{base_url}/v1/quota", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def ledger(user, **days) -> dict:
    totals = UsageRecord.objects.filter(user=user, **days).aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), cost=Sum("cost")
    )
    return {"tokens": totals["prompt"] + totals["completion"], "cost": totals["cost"]}


def log_in(page, base_url: str, user) -> None:
    page.goto(f"{base_url}/admin/login/?next=/admin/quotas/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/quotas/")


def overflows(page) -> bool:
    """Whether the page itself scrolls sideways (tables may scroll in their own box)."""
    return page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("width", [1280, 390])
def test_dashboard_shows_the_ledger_every_user_over_and_sorts(
    browser, live_server, admin_user, usage, width
):
    ada, day = usage["ada"], today()[0]
    report = quota_of(live_server.url, usage["key"])  # before the pages: it counts a request
    ada_today, ada_month = ledger(ada, day=day), ledger(ada, day__gte=usage["first"])
    assert report["limits"]["tokens_per_day"]["used"] == ada_today["tokens"]
    # 60 more trial users over their 2,000 tokens a day: every one is counted
    trial = Tier.objects.get(slug="trial")
    User = get_user_model()
    crowd = User.objects.bulk_create(User(username=f"over{n:02}") for n in range(60))
    UserQuota.objects.bulk_create(UserQuota(user=u, tier=trial) for u in crowd)
    UsageRecord.objects.bulk_create(
        UsageRecord(user=u, day=day, model="gpt-4o-mini", requests=1, prompt_tokens=2_000 + n)
        for n, u in enumerate(crowd)
    )

    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        log_in(page, live_server.url, admin_user)
        page.click("text=Usage dashboard")  # linked from the app's admin index
        page.wait_for_selector("#users")
        assert page.url.endswith("/admin/quotas/usagerecord/dashboard/")
        assert not overflows(page)
        shoot(page, f"dashboard-{width}")

        page.fill("#quotas-q", "ada")
        page.click("#users input[type=submit]")
        page.wait_for_url("**q=ada**")
        row = page.locator('#users tr[data-user="ada"]')

        def cell(limit: str, part: str) -> str:
            return row.locator(f'[data-limit="{limit}"] .quotas-{part}').inner_text()

        limits = report["limits"]
        assert cell("tokens_per_day", "used") == f"{ada_today['tokens']:,}"
        assert cell("tokens_per_day", "limit") == f"{limits['tokens_per_day']['limit']:,}"
        assert cell("tokens_per_month", "used") == f"{ada_month['tokens']:,}"
        assert usd(cell("spend_per_month", "used")) == ada_month["cost"]
        percent = ada_today["tokens"] * 100 // limits["tokens_per_day"]["limit"]
        assert cell("tokens_per_day", "percent") == f"{percent}%"

        today_card = page.locator("#totals-today")
        site_today = UsageRecord.objects.filter(day=day).aggregate(
            p=Sum("prompt_tokens"), c=Sum("completion_tokens"), d=Sum("denied")
        )
        assert today_card.locator('[data-figure="tokens"]').inner_text() == (
            f"{site_today['p'] + site_today['c']:,}"
        )
        assert today_card.locator('[data-figure="denied"]').inner_text() == "2"
        denied_row = page.locator('#denied tr[data-user="bob"]')
        assert denied_row.locator('[data-figure="denied-today"]').inner_text() == "2"
        top = page.locator('#top-spenders tr[data-user="ada"] [data-figure="spend"]')
        assert usd(top.inner_text()) == ledger(ada, day__gte=day - timedelta(days=29))["cost"]
        assert page.locator("#site svg").count() == 4
        assert page.locator("#site .quotas-gridline").count() == 20

        over = page.locator('#limits tr[data-limit="tokens_per_day"] [data-figure="over"]')
        assert over.inner_text() == "60"  # all of them, not a sample

        over.click()
        page.wait_for_selector("#users")
        assert page.locator('#users [data-figure="matched"]').inner_text() == "60"

        page.goto(f"{live_server.url}/admin/quotas/usagerecord/dashboard/")
        page.click('#users th[data-sort="tokens_per_day"] a')
        page.wait_for_url("**sort=-tokens_per_day**")
        names = page.locator("#users tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.user)"
        )
        assert names[:3] == ["over59", "over58", "over57"]  # highest percent first
        page.click('#users th[data-sort="tokens_per_day"] a')  # again: lowest first
        page.wait_for_url("**sort=tokens_per_day**")
        first = page.locator("#users tbody tr").first.get_attribute("data-user")
        assert first in ("dave", "admin")
    finally:
        page.close()


@pytest.mark.parametrize("width", [1280, 390])
def test_user_page_boost_reset_and_keys(browser, live_server, admin_user, usage, width):
    ada, day = usage["ada"], today()[0]
    ada_today = ledger(ada, day=day)
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        log_in(page, live_server.url, admin_user)
        page.goto(f"{live_server.url}/admin/auth/user/{ada.pk}/change/")
        panel = page.locator("#quota-panel")
        panel.wait_for()
        tokens = panel.locator('[data-limit="tokens_per_day"]')
        assert tokens.locator(".quotas-used").inner_text() == f"{ada_today['tokens']:,}"
        assert panel.locator("svg").count() == 4
        assert panel.locator(".quotas-limit-line").count() >= 2  # requests and tokens a day
        assert "laptop" in page.locator("#user-api-keys").inner_text()
        assert not overflows(page)
        shoot(page, f"user-{width}")

        page.click("text=Grant a temporary boost")
        page.fill("#id_tokens", "5000")
        page.click("input[name=apply]")
        page.wait_for_selector("#quota-panel")  # back on ada's page
        assert "Boost of 5,000 tokens" in page.locator(".messagelist").inner_text()
        assert tokens.locator(".quotas-used").inner_text() == f"{ada_today['tokens']:,}"
        assert tokens.locator(".quotas-limit").inner_text() == "25,000"
        assert tokens.locator(".quotas-boost").inner_text() == "+5,000 boost today"

        page.click("text=Reset today's counters")
        confirm = page.locator("input[name=apply]")
        assert confirm.get_attribute("value") == "Yes, reset today's counters"
        assert tokens.count() == 0  # a page asking first, the counters untouched
        assert "ada" in page.locator("#reset-users").inner_text()
        page.click("input[name=apply]")
        page.wait_for_selector("#quota-panel")
        assert tokens.locator(".quotas-used").inner_text() == "0"
        assert tokens.locator(".quotas-limit").inner_text() == "25,000"
        kinds = QuotaAdjustment.objects.filter(user=ada, created_by=admin_user)
        assert sorted(kinds.values_list("kind", flat=True)) == ["boost", "reset"]
        page.goto(f"{live_server.url}/admin/quotas/usagerecord/dashboard/?q=ada")
        row = page.locator('#users tr[data-user="ada"] [data-limit="tokens_per_day"]')
        assert row.locator(".quotas-used").inner_text() == "0"  # cleared here too

        page.goto(f"{live_server.url}/admin/auth/user/{ada.pk}/change/")
        page.click("text=Add a key for this user")
        page.fill("#id_name", f"phone-{width}")
        page.click("input[name=_save]")
        secret = page.locator("#api-key-secret")
        secret.wait_for()
        key = secret.inner_text()
        font = secret.evaluate("e => getComputedStyle(e).fontFamily")
        assert "mono" in font.lower() or "consolas" in font.lower()
        assert page.locator("#api-key-copy").is_visible()
        assert APIKey.objects.get(name=f"phone-{width}").is_valid(key)
        assert all(key not in c["value"] for c in page.context.cookies())
        assert not overflows(page)
        shoot(page, f"key-{width}")
        page.reload()
        assert key not in page.content()
    finally:
        page.close()


def test_api_docs_render_offline(browser, live_server):
    """Swagger UI comes from the sidecar's static files: any request off the server fails."""
    page = browser.new_page()
    elsewhere: list[str] = []

    def only_here(route) -> None:
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    try:
        page.route("**/*", only_here)
        page.goto(f"{live_server.url}/api/docs/")
        page.get_by_text("/v1/chat/completions", exact=True).wait_for()
        assert page.locator(".opblock-tag").count() >= 2  # the api and v1 groups
        assert elsewhere == []
    finally:
        page.close()
