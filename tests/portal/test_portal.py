"""The tenant portal in a real browser: Debian's Chromium driven by Playwright against
local mode (the debug binary the test command builds) and loopback receivers.

Each check is named after what it shows; the last line is `portal: N passed, M failed`.
Screenshots of every page go to docs/portal/ (HOOKLINE_PORTAL_SHOTS to put them elsewhere).

Usage: python tests/portal/test_portal.py [path/to/hookline]
"""

import http.server
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "debug" / "hookline"
SHOTS = Path(os.environ.get("HOOKLINE_PORTAL_SHOTS", ROOT / "docs" / "portal"))
CHROMIUM = os.environ.get("HOOKLINE_CHROMIUM", "/usr/bin/chromium")
# Bounds on waits for something to happen; a check that passes never waits them out.
PATIENCE = 20.0

XSS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>']
XSS_TEXT = " ".join(XSS)
FRAME_ANCESTORS = "https://dashboard.example.com"
TITLE = "Acme Webhooks"
ACCENT = "#8a2be2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, condition, patience=PATIENCE):
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Receiver:
    """A loopback webhook receiver whose answer can be changed, recording every request."""

    def __init__(self, status=200, body="ok"):
        self.status, self.body = status, body
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                outer.requests.append({"headers": dict(self.headers), "body": raw})
                payload = outer.body.encode()
                self.send_response(outer.status)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, status, body="ok"):
        self.status, self.body = status, body

    def got(self, predicate):
        return [r for r in self.requests if predicate(r)]

    def close(self):
        self.server.shutdown()


class Hookline:
    """Local mode on a fresh data file."""

    def __init__(self, workdir, **env):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.operator = "hkop_portal_" + secrets.token_hex(16)
        self.log = open(Path(workdir) / f"hookline-{self.port}.log", "wb")
        full = dict(os.environ)
        full.update(
            HOOKLINE_LISTEN=f"127.0.0.1:{self.port}",
            HOOKLINE_DATA=str(Path(workdir) / f"hookline-{self.port}.db"),
            HOOKLINE_OPERATOR_KEY=self.operator,
            HOOKLINE_ALLOW_HTTP="true",
            HOOKLINE_ALLOWED_NETWORKS="127.0.0.1/32",
            HOOKLINE_RETRY_SCHEDULE="0s",
            HOOKLINE_REQUEST_TIMEOUT="3s",
            HOOKLINE_LOG="info",
        )
        full.update(env)
        self.proc = subprocess.Popen([str(BINARY)], env=full, stdout=self.log, stderr=self.log)
        wait_until("local mode to listen", self._listening)

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"hookline exited with {self.proc.returncode}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def call(self, method, path, key=None, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        if key:
            req.add_header("authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=PATIENCE) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text.startswith("{") else text)

    def ok(self, method, path, key=None, body=None):
        status, answer = self.call(method, path, key, body)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer}"
        return answer

    def tenant(self, name):
        t = self.ok("POST", "/v1/tenants", self.operator, {"name": name})
        return t["id"], t["api_key"]

    def link(self, key, body=None):
        status, answer = self.call("POST", "/v1/portal/sessions", key, body or {})
        assert status == 201, f"magic link: {status} {answer}"
        return answer["url"]

    def publish(self, key, event_type, payload):
        answer = self.ok("POST", "/v1/events", key, {"type": event_type, "payload": payload})
        return answer.get("id") or answer["ids"][0]

    def delivery_status(self, key, message):
        # Publishing answers once the event is queued; the message is stored a moment later.
        status, m = self.call("GET", f"/v1/messages/{message}", key)
        if status == 404:
            return []
        assert status == 200, f"message {message}: {status} {m}"
        return [d["status"] for d in m["deliveries"]]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Run:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def check(self, name, fn):
        try:
            fn()
            self.passed += 1
            print(f"ok   {name}", flush=True)
        except Exception:
            self.failed += 1
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()


def shot(page, name, full_page=True):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def main():
    workdir = tempfile.mkdtemp(prefix="hookline-portal-")
    hl = Hookline(
        workdir,
        HOOKLINE_PORTAL_TITLE=TITLE,
        HOOKLINE_PORTAL_ACCENT=ACCENT,
        HOOKLINE_PORTAL_FRAME_ANCESTORS=FRAME_ANCESTORS,
    )
    # A second instance whose sessions last two seconds, for the expired-session check.
    short = Hookline(workdir, HOOKLINE_PORTAL_SESSION_TTL="2s")
    good = Receiver(200)
    flaky = Receiver(500, "receiver is down")
    hostile = Receiver(500, XSS_TEXT)
    run = Run()
    dialogs = []

    tenant, key = hl.tenant("Portal tenant")
    other, other_key = hl.tenant("Other tenant")
    hl.ok("POST", "/v1/domains", key, {"name": "mg.example.com"})

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        ctx.set_default_timeout(PATIENCE * 1000)
        expect.set_options(timeout=PATIENCE * 1000)
        page = ctx.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        state = {}

        def magic_link_logs_in_once():
            url = hl.link(key)
            assert url.startswith(hl.base + "/portal/login?token="), url
            response = page.goto(url)
            expect(page).to_have_url(hl.base + "/portal/endpoints")
            expect(page.get_by_role("heading", name="Endpoints")).to_be_visible()
            assert response.ok, response.status
            cookie = next(c for c in ctx.cookies() if c["name"] == "hookline_portal")
            assert cookie["httpOnly"], cookie
            assert cookie["sameSite"] == "Lax", cookie
            assert not cookie["secure"], "no Secure on loopback HTTP"
            # The token appears nowhere in the log.
            token = url.split("token=")[1]
            assert token.encode() not in Path(hl.log.name).read_bytes()
            other_ctx = browser.new_context()
            second = other_ctx.new_page()
            answer = second.goto(url)
            assert answer.status == 403, answer.status
            expect(second.get_by_role("heading")).to_have_text(
                "This link has expired or was already used"
            )
            shot(second, "link-used")
            other_ctx.close()

        def operator_links_name_the_tenant():
            status, _ = hl.call("POST", "/v1/portal/sessions", hl.operator, {})
            assert status == 400, status
            assert hl.link(hl.operator, {"tenant": tenant})
            status, _ = hl.call("POST", "/v1/portal/sessions", key, {"tenant": other})
            assert status == 404, "a tenant key cannot open another tenant's portal"

        def headers_are_strict_and_branded():
            response = page.goto(hl.base + "/portal/endpoints")
            csp = response.headers["content-security-policy"]
            assert f"frame-ancestors {FRAME_ANCESTORS}" in csp, csp
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
            assert response.headers["x-content-type-options"] == "nosniff"
            expect(page.locator("header .brand")).to_have_text(TITLE)
            theme = page.request.get(hl.base + "/portal/assets/theme.css").text()
            assert ACCENT in theme, theme

        def test_before_save_refuses_then_saves():
            page.goto(hl.base + "/portal/endpoints")
            form = page.locator("form[action='/portal/endpoints']")
            form.get_by_label("URL", exact=True).fill(flaky.url)
            form.get_by_label("Description").fill("orders")
            form.locator("input[name=event_types][value=delivered]").check()
            expect(form.get_by_label("Test before save", exact=False)).to_be_checked()
            form.get_by_role("button", name="Save endpoint").click()
            error = page.locator("form[action='/portal/endpoints'] .field-error")
            expect(error).to_contain_text("HTTP 500")
            expect(page.locator("form[action='/portal/endpoints'] .receiver")).to_contain_text(
                "receiver is down"
            )
            shot(page, "create-test-failed")
            assert hl.ok("GET", "/v1/endpoints", key)["data"] == [], "nothing saved"
            flaky.answer(200)
            form.get_by_role("button", name="Save endpoint").click()
            expect(page).to_have_url(hl.base + "/portal/endpoints?created=1")
            expect(page.locator("table a.url", has_text=flaky.url)).to_be_visible()
            saved = hl.ok("GET", "/v1/endpoints", key)["data"]
            assert [e["url"] for e in saved] == [flaky.url], saved
            state["endpoint"] = saved[0]["id"]

        def publishes_show_in_the_log():
            message = hl.publish(key, "delivered", {"recipient": "alice@example.com"})
            state["first_message"] = message
            wait_until("the message to be stored", lambda: hl.delivery_status(key, message))
            page.goto(hl.base + "/portal/messages")
            expect(page.get_by_role("link", name=message)).to_be_visible()
            page.get_by_role("link", name=message).click()
            expect(page.locator("pre.payload")).to_contain_text('"recipient": "alice@example.com"')
            wait_until("the delivery", lambda: hl.delivery_status(key, message) == ["succeeded"])

        def a_failed_delivery_replayed_reaches_the_receiver():
            flaky.answer(503, "try later")
            message = hl.publish(key, "delivered", {"recipient": "bob@example.com"})
            wait_until("the failure", lambda: hl.delivery_status(key, message) == ["failed"])
            flaky.answer(200)
            before = len(flaky.got(lambda r: b"bob@example.com" in r["body"]))
            page.goto(f"{hl.base}/portal/messages/{message}")
            expect(page.locator(".delivery-card")).to_contain_text("HTTP 503")
            shot(page, "message")
            page.get_by_role("button", name="Replay").click()
            expect(page.locator(".notice")).to_have_text("Queued 1 deliveries again.")
            wait_until(
                "the replayed delivery at the receiver",
                lambda: len(flaky.got(lambda r: b"bob@example.com" in r["body"])) > before,
            )
            wait_until("success", lambda: hl.delivery_status(key, message) == ["succeeded"])
            page.reload()
            expect(page.locator(".delivery-card .tag").first).to_have_text("succeeded")

        def filters_narrow_the_log():
            page.goto(hl.base + "/portal/messages")
            page.get_by_label("Delivery status").select_option("failed")
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("table.log tbody tr")).to_have_count(0)
            page.get_by_label("Delivery status").select_option("succeeded")
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("table.log tbody tr")).to_have_count(2)
            shot(page, "messages")

        def attacker_controlled_values_stay_text():
            # A receiver answering with markup, an endpoint described with it, a payload
            # and an event type carrying it.
            hl.ok(
                "POST",
                "/v1/event-types",
                hl.operator,
                {"name": "xss.test", "description": XSS_TEXT, "sample": {"html": XSS_TEXT}},
            )
            ep = hl.ok(
                "POST",
                "/v1/endpoints",
                key,
                {"url": hostile.url + "?q=%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E",
                 "description": XSS_TEXT, "event_types": ["xss.test"]},
            )
            message = hl.publish(key, "xss.test", {"html": XSS_TEXT, "link": "javascript:alert(1)"})
            wait_until("the failure", lambda: "failed" in hl.delivery_status(key, message))
            for path in [
                "/portal/endpoints",
                f"/portal/endpoints/{ep['id']}",
                "/portal/messages",
                f"/portal/messages/{message}",
                "/portal/event-types",
            ]:
                page.goto(hl.base + path)
                page.wait_for_load_state("load")
                html = page.content()
                assert "<script>alert(1)</script>" not in html, path
                assert page.locator("[onerror]").count() == 0, path
                assert page.locator("img[src=x]").count() == 0, path
            page.goto(f"{hl.base}/portal/messages/{message}")
            expect(page.locator("pre.payload")).to_contain_text(XSS[0])
            expect(page.locator("pre.excerpt").first).to_contain_text(XSS[1])
            page.goto(f"{hl.base}/portal/endpoints/{ep['id']}")
            expect(page.locator("dl.facts")).to_contain_text(XSS[0])
            assert dialogs == [], f"dialogs opened: {dialogs}"

        def secret_is_shown_only_on_reveal():
            page.goto(f"{hl.base}/portal/endpoints/{state['endpoint']}")
            assert "whsec_" not in page.content()
            page.get_by_role("button", name="Reveal secret").click()
            expect(page.locator("#secret")).to_contain_text("whsec_")
            secret = hl.ok("GET", f"/v1/endpoints/{state['endpoint']}/secret", key)["key"]
            expect(page.locator("#secret")).to_have_text(secret)
            shot(page, "endpoint")

        def a_form_without_its_token_is_refused():
            page.goto(f"{hl.base}/portal/endpoints/{state['endpoint']}")
            form = page.locator("form.inline", has=page.locator("input[value=disable]"))
            form.locator("input[name=_csrf]").evaluate("e => e.remove()")
            form.get_by_role("button", name="Disable").click()
            expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
            assert hl.ok("GET", f"/v1/endpoints/{state['endpoint']}", key)["status"] == "active"
            answer = page.request.post(
                hl.base + "/portal/endpoints",
                form={"_csrf": "forged", "url": good.url},
                max_redirects=0,
            )
            assert answer.status == 403, answer.status
            assert len(hl.ok("GET", "/v1/endpoints", key)["data"]) == 2, "nothing stored"

        def another_tenants_ids_are_404():
            message = hl.publish(other_key, "delivered", {"recipient": "eve@example.com"})
            answer = page.goto(f"{hl.base}/portal/messages/{message}")
            assert answer.status == 404, answer.status
            expect(page.locator("main")).to_contain_text("No such message")
            ep = hl.ok("POST", "/v1/endpoints", other_key, {"url": good.url})
            answer = page.goto(f"{hl.base}/portal/endpoints/{ep['id']}")
            assert answer.status == 404, answer.status

        def endpoint_actions_work():
            path = f"{hl.base}/portal/endpoints/{state['endpoint']}"
            page.goto(path)
            page.get_by_role("button", name="Send test event").click()
            expect(page.locator(".receiver")).to_contain_text("HTTP 200")
            page.get_by_role("button", name="Disable").click()
            expect(page.locator("dl.facts .tag")).to_have_text("disabled")
            page.get_by_role("button", name="Enable").click()
            expect(page.locator("dl.facts .tag")).to_have_text("active")
            edit = page.locator("form", has=page.locator("input[value=update]"))
            edit.get_by_label("URL", exact=True).fill("ftp://example.com/hook")
            edit.get_by_role("button", name="Save changes").click()
            expect(page.locator("#edit-url-error")).to_be_visible()
            expect(page.locator("#edit-url")).to_have_attribute("aria-invalid", "true")
            assert hl.ok("GET", f"/v1/endpoints/{state['endpoint']}", key)["url"] == flaky.url
            edit.get_by_label("URL", exact=True).fill(flaky.url)
            edit.get_by_label("Rate limit", exact=False).fill("50")
            edit.get_by_label("Description").fill("orders, limited")
            edit.get_by_role("button", name="Save changes").click()
            expect(page.locator("dl.facts")).to_contain_text("50 requests/s")
            # Replay everything that failed since a time, with the count queued.
            flaky.answer(500)
            message = hl.publish(key, "delivered", {"recipient": "carol@example.com"})
            wait_until("the failure", lambda: hl.delivery_status(key, message) == ["failed"])
            flaky.answer(200)
            page.get_by_label("Everything that failed since", exact=False).fill("2020-01-01T00:00")
            page.get_by_role("button", name="Replay").click()
            expect(page.locator(".notice")).to_have_text("Queued 1 failed deliveries again.")
            wait_until("success", lambda: hl.delivery_status(key, message) == ["succeeded"])

        def filter_and_signing_in_the_edit_form():
            ep = hl.ok("POST", "/v1/endpoints", key,
                       {"url": good.url, "description": "filtered", "event_types": ["opened"]})
            page.goto(f"{hl.base}/portal/endpoints/{ep['id']}")
            edit = page.locator("form", has=page.locator("input[value=update]"))
            # A filter with a fault: 422 shown beside the field, naming the node; nothing saved.
            edit.get_by_label("Payload filter", exact=False).fill(
                '{"and": [{"path": "recipient", "prefix": 5}]}')
            edit.get_by_label("Signatures").select_option("both")
            edit.get_by_role("button", name="Save changes").click()
            expect(page.locator("#edit-filter-error")).to_contain_text("filter at /and/0")
            stored = hl.ok("GET", f"/v1/endpoints/{ep['id']}", key)
            assert stored["filter"] is None and stored["signing"] == "hmac", stored
            edit.get_by_label("Payload filter", exact=False).fill(
                '{"path": "recipient", "prefix": "carol@"}')
            edit.get_by_role("button", name="Save changes").click()
            expect(page.locator("dl.facts")).to_contain_text('"prefix":"carol@"')
            stored = hl.ok("GET", f"/v1/endpoints/{ep['id']}", key)
            assert stored["filter"] == {"path": "recipient", "prefix": "carol@"}, stored
            assert stored["signing"] == "both", stored
            public = hl.ok("GET", f"/v1/endpoints/{ep['id']}/public-key", key)["key"]
            expect(page.locator("#public-key")).to_have_text(public)
            hl.call("DELETE", f"/v1/endpoints/{ep['id']}", key)

        def headers_auth_and_ordering_in_the_edit_form():
            ep = hl.ok("POST", "/v1/endpoints", key, {"url": good.url, "description": "authed"})
            page.goto(f"{hl.base}/portal/endpoints/{ep['id']}")
            edit = page.locator("form", has=page.locator("input[value=update]"))
            token = "portal-bearer-" + secrets.token_hex(8)
            edit.get_by_label("Extra headers", exact=False).fill("X-Tenant: acme")
            edit.get_by_label("Authentication kind").select_option("bearer")
            edit.locator("input[name=auth_token]").fill(token)
            edit.get_by_label("Ordering").select_option("strict")
            edit.get_by_role("button", name="Save changes").click()
            expect(page.locator("dl.facts")).to_contain_text("x-tenant: acme")
            stored = hl.ok("GET", f"/v1/endpoints/{ep['id']}", key)
            assert stored["headers"] == {"x-tenant": "acme"}, stored
            assert stored["auth"] == {"type": "bearer"}, stored
            assert stored["ordering"] == "strict", stored
            # Write-only: the page after saving, and the edit form, never carry the token.
            page.goto(f"{hl.base}/portal/endpoints/{ep['id']}")
            assert token not in page.content()
            expect(edit.locator("input[name=auth_token]")).to_have_value("")
            # Saving again with "keep" leaves the credentials as they are.
            edit.get_by_role("button", name="Save changes").click()
            assert hl.ok("GET", f"/v1/endpoints/{ep['id']}", key)["auth"] == {"type": "bearer"}
            hl.call("DELETE", f"/v1/endpoints/{ep['id']}", key)

        def delete_asks_first():
            ep = hl.ok("POST", "/v1/endpoints", key, {"url": good.url, "description": "temporary"})
            page.goto(f"{hl.base}/portal/endpoints/{ep['id']}")
            page.get_by_role("button", name="Delete…").click()
            expect(page.get_by_role("alert")).to_contain_text("Delete this endpoint?")
            assert hl.call("GET", f"/v1/endpoints/{ep['id']}", key)[0] == 200
            page.get_by_role("button", name="Delete endpoint").click()
            expect(page).to_have_url(hl.base + "/portal/endpoints?deleted=1")
            assert hl.call("GET", f"/v1/endpoints/{ep['id']}", key)[0] == 404

        def catalog_and_domains_pages():
            page.goto(hl.base + "/portal/event-types")
            expect(page.get_by_role("heading", name="delivered", exact=True)).to_be_visible()
            shot(page, "event-types", full_page=False)
            hl.ok(
                "POST",
                "/v1/endpoints",
                key,
                {"url": good.url, "domain": "mg.example.com", "format": "mailgun",
                 "event_types": ["delivered"]},
            )
            page.goto(hl.base + "/portal/domains")
            expect(page.locator("section.card", has_text="mg.example.com")).to_be_visible()
            shot(page, "domains")

        def a_parent_switches_to_its_sub_accounts():
            sub = hl.ok("POST", "/v1/sub-accounts", key, {"name": "Sub shop"})
            hl.ok("POST", "/v1/endpoints", sub["api_key"], {"url": good.url, "description": "sub hook"})
            page.goto(hl.base + "/portal/endpoints")
            page.get_by_label("Account").select_option(sub["id"])
            page.get_by_role("button", name="Switch").click()
            expect(page.locator("table")).to_contain_text("sub hook")
            expect(page.locator("table")).not_to_contain_text("orders")
            page.get_by_label("Account").select_option(tenant)
            page.get_by_role("button", name="Switch").click()
            expect(page.locator("table")).to_contain_text("orders")
            shot(page, "endpoints")

        def keyboard_and_phone_width():
            page.goto(hl.base + "/portal/endpoints")
            page.keyboard.press("Tab")
            focused = page.evaluate("document.activeElement.textContent")
            assert focused == "Skip to content", focused
            unlabelled = page.evaluate(
                """() => [...document.querySelectorAll('input:not([type=hidden]), select')]
                    .filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"""
            )
            assert unlabelled == [], unlabelled
            phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=ctx.storage_state())
            small = phone.new_page()
            for path, name in [("/portal/endpoints", "endpoints-phone"), ("/portal/messages", "messages-phone")]:
                small.goto(hl.base + path)
                width = small.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"{path} is {width}px wide on a phone"
                shot(small, name, full_page=False)
            phone.close()

        def the_log_pages_through_older_messages():
            published = [
                hl.publish(key, "delivered", {"recipient": f"page{i}@example.com"}) for i in range(60)
            ]
            wait_until(
                "every message to be stored",
                lambda: all(hl.delivery_status(key, m) for m in published),
            )
            page.goto(hl.base + "/portal/messages")
            pages = []
            while True:
                links = page.locator("table.log tbody tr td:first-child a")
                pages.append([links.nth(i).inner_text() for i in range(links.count())])
                older = page.locator("a[rel=next]")
                if older.count() == 0:
                    break
                older.click()
                page.wait_for_load_state()
            seen = [m for ids in pages for m in ids]
            assert len(pages) >= 2, f"one page only: {len(seen)} messages"
            assert len(pages[0]) == 50, f"the first page holds {len(pages[0])}"
            assert len(seen) == len(set(seen)), "a message shows on two pages"
            missing = set(published) - set(seen)
            assert not missing, f"not on any page: {sorted(missing)}"
            assert seen == sorted(seen, reverse=True), "pages are not newest first"

        def logout_ends_the_session():
            page.goto(hl.base + "/portal/endpoints")
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading")).to_have_text("You are signed out")
            answer = page.goto(hl.base + "/portal/endpoints")
            assert answer.status == 401, answer.status

        def an_expired_session_gets_the_link_expired_page():
            _, short_key = short.tenant("Short sessions")
            c = browser.new_context()
            p2 = c.new_page()
            p2.goto(short.link(short_key))
            expect(p2).to_have_url(short.base + "/portal/endpoints")

            def sent_back():
                p2.goto(short.base + "/portal/messages")
                return p2.url == short.base + "/portal/expired"

            wait_until("the session to expire", sent_back)
            expect(p2.get_by_role("heading")).to_have_text("Your link has expired")
            shot(p2, "link-expired")
            c.close()

        for check in [
            magic_link_logs_in_once,
            operator_links_name_the_tenant,
            headers_are_strict_and_branded,
            test_before_save_refuses_then_saves,
            publishes_show_in_the_log,
            a_failed_delivery_replayed_reaches_the_receiver,
            filters_narrow_the_log,
            attacker_controlled_values_stay_text,
            secret_is_shown_only_on_reveal,
            a_form_without_its_token_is_refused,
            another_tenants_ids_are_404,
            endpoint_actions_work,
            filter_and_signing_in_the_edit_form,
            headers_auth_and_ordering_in_the_edit_form,
            delete_asks_first,
            catalog_and_domains_pages,
            a_parent_switches_to_its_sub_accounts,
            keyboard_and_phone_width,
            the_log_pages_through_older_messages,
            logout_ends_the_session,
            an_expired_session_gets_the_link_expired_page,
        ]:
            run.check(check.__name__.replace("_", " "), check)
        browser.close()

    for r in (good, flaky, hostile):
        r.close()
    hl.stop()
    short.stop()
    print(f"portal: {run.passed} passed, {run.failed} failed")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
