"""The admin page in a real browser (Debian's chromium driven by playwright) on a real gunicorn.

Every page a test opens is watched: a console error or a request to any other
origin fails the test (``Watched.check``), unless the test names the error it
provokes. Screenshots go to a temp dir (printed) so regressions can be seen.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace

CHROMIUM = "/usr/bin/chromium"
TOKEN = "s3cret-ui-token"
SHOTS = Path(os.environ.get("ZOLDYQ_UI_SHOTS") or tempfile.gettempdir()) / "zoldyq-ui-shots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium for the module (Debian's; never a downloaded one)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def server(**settings: Any) -> Iterator[servers.Server]:
    ns = unique_namespace()
    try:
        with servers.gunicorn(ns, workers=1, **settings) as srv:
            yield srv
    finally:
        zoldyq.destroy(ns)


@pytest.fixture(scope="module")
def srv() -> Iterator[servers.Server]:
    """A real gunicorn (asgi worker) with the page on; tests use their own queue names."""
    with server() as s:
        yield s


class Watched:
    """A page whose console errors and request URLs are recorded."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page, self.origin = page, origin
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.blocked: list[str] = []  # stopped inside the browser by the CSP: never sent
        self.expected: list[str] = []  # regexes of console errors the test provokes
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda ex: self.errors.append(f"uncaught: {ex}"))
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("requestfailed", lambda r: self.blocked.append(r.url)
                if (r.failure or "") in ("csp", "net::ERR_BLOCKED_BY_CSP") else None)

    def check(self) -> None:
        foreign = [u for u in self.urls
                   if not u.startswith(self.origin + "/") and u not in self.blocked]
        assert not foreign, f"requests to another host: {foreign}"
        unexpected = [e for e in self.errors if not any(re.search(x, e) for x in self.expected)]
        assert not unexpected, f"console errors: {unexpected}"


@contextlib.contextmanager
def open_page(browser: Browser, s: servers.Server, width: int = 1280, height: int = 800
              ) -> Iterator[Watched]:
    ctx = browser.new_context(viewport={"width": width, "height": height})
    try:
        w = Watched(ctx.new_page(), s.url)
        yield w
        w.check()
    finally:
        ctx.close()


def shot(page: Page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def put(s: servers.Server, queue: str, payload: Any = None, raw: bytes | None = None,
        n: int = 1) -> None:
    for _ in range(n):
        if raw is not None:
            r = s.call("POST", f"/queues/{queue}/enqueue", body=raw,
                       headers={"Content-Type": "application/octet-stream"})
        else:
            r = s.call("POST", f"/queues/{queue}/enqueue", json={"payload": payload})
        assert r.status == 200, r


def size(s: servers.Server, queue: str) -> int | None:
    r = s.call("GET", f"/queues/{queue}")
    return None if r.status == 404 else int(r.json()["size"])


def row(page: Page, queue: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=queue, exact=True))


def test_overview_lists_queues_and_follows_sizes_live(browser: Browser,
                                                       srv: servers.Server) -> None:
    """Queues made over HTTP appear as table rows; a size change shows within 2 s, no reload."""
    put(srv, "ov-a", {"n": 1})
    put(srv, "ov-b", {"n": 1}, n=3)
    put(srv, "ov-a.dlq", {"n": 1})
    with open_page(browser, srv) as w:
        page = w.page
        page.goto(srv.url + "/ui")
        expect(row(page, "ov-a").get_by_role("cell").first).to_contain_text("1 / 100 k")
        expect(row(page, "ov-b").get_by_role("cell").first).to_contain_text("3 / 100 k")
        expect(row(page, "ov-a.dlq")).to_contain_text("DLQ")
        expect(row(page, "ov-a")).not_to_contain_text("DLQ")
        requests_before = len(w.urls)
        put(srv, "ov-a", {"n": 2}, n=4)
        t0 = time.monotonic()
        expect(row(page, "ov-a").get_by_role("cell").first).to_contain_text("5 / 100 k",
                                                                           timeout=5000)
        seen_after = time.monotonic() - t0
        assert seen_after < 2.5, f"the size took {seen_after:.2f} s to show"
        assert not any(u.endswith("/ui") for u in w.urls[requests_before:]), "page reloaded"
        meter = row(page, "ov-a").get_by_role("meter")
        expect(meter).to_have_attribute("aria-valuenow", "5")
        expect(page.get_by_role("img", name="ov-a enqueue rate, last 30 s")).to_be_visible()
        totals = page.get_by_role("definition").first
        expect(totals).not_to_have_text("")


def test_rates_follow_traffic(browser: Browser, srv: servers.Server) -> None:
    """Enqueues and dequeues while the page is open show as non-zero rates with sparklines."""
    put(srv, "rate-q", 1)
    with open_page(browser, srv) as w:
        w.page.goto(srv.url + "/ui")
        expect(row(w.page, "rate-q")).to_be_visible()
        for i in range(10):  # ~5 s of traffic, varying, so the sparklines have a shape
            for name, k in (("rate-q", 1), ("rate-q2", 3)):
                r = srv.call("POST", f"/queues/{name}/batch",
                             json={"payloads": [{"n": n} for n in range(k * (50 + 30 * (i % 4)))]})
                assert r.status == 200
                got = srv.call("GET", f"/queues/{name}/dequeue?max={k * (40 + 25 * (i % 3))}")
                assert got.status == 200
            w.page.wait_for_timeout(500)
        cells = row(w.page, "rate-q").get_by_role("cell")
        nonzero = re.compile(r"[1-9][0-9.]*( k)?/s")
        expect(cells.nth(3)).to_contain_text(nonzero, timeout=5000)
        expect(cells.nth(4)).to_contain_text(nonzero, timeout=5000)
        points = w.page.get_by_role("img", name="rate-q enqueue rate, last 30 s") \
            .locator("polyline").get_attribute("points")
        assert points is not None
        assert len(points.split()) >= 3
        shot(w.page, "overview")


def test_empty_state_says_how_to_enqueue(browser: Browser) -> None:
    """With no queue, the page says so, gives a curl line for this server and an open form."""
    with server() as s, open_page(browser, s) as w:
        w.page.goto(s.url + "/ui")
        expect(w.page.get_by_role("heading", name="No queues yet")).to_be_visible()
        expect(w.page.get_by_text(f"curl -X POST {s.url}/queues/hello/enqueue")).to_be_visible()
        expect(w.page.get_by_role("table")).to_be_hidden()
        shot(w.page, "empty")
        w.page.get_by_label("Queue", exact=True).fill("hello")  # the form is open when empty
        w.page.get_by_label("Payload").fill('"first"')
        w.page.get_by_role("button", name="Enqueue").click()
        expect(row(w.page, "hello")).to_contain_text("1 / 100 k")
        expect(w.page.get_by_role("heading", name="No queues yet")).to_be_hidden()


def test_queue_page_peeks_without_taking(browser: Browser, srv: servers.Server) -> None:
    """The queue's page shows its head, JSON pretty-printed, raw bytes as hex; nothing is taken."""
    put(srv, "peek-q", {"to": "a@b.c", "tags": [1, 2]})
    put(srv, "peek-q", raw=b"\x00\xffhi")
    with open_page(browser, srv) as w:
        page = w.page
        page.goto(srv.url + "/ui#/queues/peek-q")
        messages = page.get_by_role("list", name="Messages at the head").get_by_role("listitem")
        expect(messages).to_have_count(2)
        expect(messages.nth(0).locator("pre")).to_have_text(
            '{\n  "to": "a@b.c",\n  "tags": [\n    1,\n    2\n  ]\n}')
        expect(messages.nth(1)).to_contain_text("raw · 4 B")
        expect(messages.nth(1).locator("pre")).to_contain_text("00000000  00 ff 68 69")
        expect(page.get_by_role("definition").filter(has_text="100 k").first).to_be_visible()
        shot(page, "queue")
        page.get_by_label("First").fill("1")
        page.get_by_role("button", name="Peek").click()
        expect(messages).to_have_count(1)
    assert size(srv, "peek-q") == 2
    got = srv.call("GET", "/queues/peek-q/dequeue").json()
    assert got["payload"] == {"to": "a@b.c", "tags": [1, 2]}


def test_enqueue_form_puts_a_message(browser: Browser, srv: servers.Server) -> None:
    """The form enqueues JSON or raw text; bad JSON is refused on the page, nothing sent."""
    put(srv, "form-q", 0)
    with open_page(browser, srv) as w:
        page = w.page
        page.goto(srv.url + "/ui#/queues/form-q")
        expect(page.get_by_role("list", name="Messages at the head").get_by_role("listitem")
               ).to_have_count(1)
        page.get_by_label("Payload").fill('{"x": [1, 2')
        page.get_by_role("button", name="Enqueue").click()
        expect(page.get_by_role("status")).to_contain_text("not valid JSON")
        page.get_by_label("Payload").fill('{"x": 1}')
        page.get_by_role("button", name="Enqueue").click()
        expect(page.get_by_role("status")).to_contain_text("it now holds 2 message(s)")
        page.get_by_label("Format").select_option("raw")
        page.get_by_label("Payload").fill("plain text")
        page.get_by_role("button", name="Enqueue").click()
        expect(page.get_by_role("status")).to_contain_text("it now holds 3 message(s)")
    msgs = srv.call("GET", "/queues/form-q/dequeue?max=3").json()["messages"]
    assert [m.get("encoding") for m in msgs] == [None, None, "base64"]
    assert msgs[1]["payload"] == {"x": 1}


def test_purge_acts_only_after_confirming(browser: Browser, srv: servers.Server) -> None:
    """Purge asks first: Cancel and Escape keep every message, Confirm drops them all."""
    put(srv, "purge-q", 1, n=3)
    with open_page(browser, srv) as w:
        page = w.page
        page.goto(srv.url + "/ui#/queues/purge-q")
        dialog = page.get_by_role("dialog")
        page.get_by_role("button", name="Purge").click()
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("Drop every message now in purge-q")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        page.get_by_role("button", name="Purge").focus()  # by keyboard: Enter opens, Escape shuts
        page.keyboard.press("Enter")
        expect(dialog).to_be_visible()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        page.wait_for_timeout(300)
        assert size(srv, "purge-q") == 3
        page.get_by_role("button", name="Purge").click()
        dialog.get_by_role("button", name="Purge").click()
        expect(page.get_by_role("status")).to_contain_text("Purged 3 message(s) from purge-q")
    assert size(srv, "purge-q") == 0


def test_delete_acts_only_after_confirming(browser: Browser, srv: servers.Server) -> None:
    """Delete asks first: Cancel keeps the queue; Confirm deletes it and goes back to the list."""
    put(srv, "del-q", 1)
    with open_page(browser, srv) as w:
        page = w.page
        page.goto(srv.url + "/ui#/queues/del-q")
        page.get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
        page.wait_for_timeout(300)
        assert size(srv, "del-q") == 1
        page.get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete queue").click()
        expect(page.get_by_role("heading", name="Queues", exact=True)).to_be_visible()
        expect(page.get_by_role("status")).to_contain_text("Deleted queue del-q")
        expect(row(page, "del-q")).to_have_count(0)
    assert size(srv, "del-q") is None


def dead_letter(s: servers.Server, queue: str, n: int) -> None:
    """Lease and nack the queue's messages until ``n`` of them are dead letters."""
    for _ in range(5):
        r = s.call("GET", f"/queues/{queue}/dequeue?lease=30&max={n}")
        if r.status == 204:
            return
        for m in r.json()["messages"]:
            assert s.call("POST", f"/queues/{queue}/nack",
                          json={"lease_id": m["lease_id"]}).status == 200


def test_redrive_acts_only_after_confirming(browser: Browser, srv: servers.Server) -> None:
    """A DLQ's page offers Redrive behind a confirmation: Cancel moves nothing, Confirm moves
    its dead letters back to their queue."""
    r = srv.call("PUT", "/queues/rd-q", json={"max_deliveries": 1})
    assert r.status == 201, r
    put(srv, "rd-q", {"n": 1}, n=2)
    dead_letter(srv, "rd-q", 2)
    assert (size(srv, "rd-q"), size(srv, "rd-q.dlq")) == (0, 2)
    with open_page(browser, srv) as w:
        page = w.page
        page.goto(srv.url + "/ui")
        expect(row(page, "rd-q.dlq")).to_contain_text("DLQ")
        expect(row(page, "rd-q")).not_to_contain_text("DLQ")
        page.goto(srv.url + "/ui#/queues/rd-q.dlq")
        expect(page.get_by_role("heading", name="rd-q.dlq")).to_contain_text("DLQ")
        messages = page.get_by_role("list", name="Messages at the head").get_by_role("listitem")
        expect(messages).to_have_count(2)
        page.get_by_role("button", name="Redrive").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("back to rd-q")
        dialog.get_by_role("button", name="Cancel").click()
        page.wait_for_timeout(300)
        assert size(srv, "rd-q.dlq") == 2
        page.get_by_role("button", name="Redrive").click()
        dialog.get_by_role("button", name="Redrive").click()
        expect(page.get_by_role("status")).to_contain_text("Moved 2 message(s) back to rd-q")
    assert (size(srv, "rd-q"), size(srv, "rd-q.dlq")) == (2, 0)
    page_has_no_redrive_for_plain_queues(browser, srv)


def test_redrive_error_is_shown(browser: Browser, srv: servers.Server) -> None:
    """A refused redrive (here: a queue named .dlq that nothing dead-lettered into) shows the
    server's sentence, or moves nothing; the page never breaks."""
    put(srv, "rd2.dlq", {"n": 1})
    with open_page(browser, srv) as w:
        page = w.page
        w.expected.append(r"status of 4\d\d")
        page.goto(srv.url + "/ui#/queues/rd2.dlq")
        page.get_by_role("button", name="Redrive").click()
        page.get_by_role("dialog").get_by_role("button", name="Redrive").click()
        expect(page.get_by_role("status")).to_contain_text(
            re.compile(r"^(Redrive failed: .+|Moved 0 message\(s\) back to rd2\.)$"))
    assert size(srv, "rd2.dlq") == 1


def page_has_no_redrive_for_plain_queues(browser: Browser, srv: servers.Server) -> None:
    with open_page(browser, srv) as w:
        w.page.goto(srv.url + "/ui#/queues/rd-q")
        expect(w.page.get_by_role("button", name="Purge")).to_be_visible()
        expect(w.page.get_by_role("button", name="Redrive")).to_have_count(0)


def test_read_only_hides_and_refuses_actions(browser: Browser) -> None:
    """ZOLDYQ_UI=read-only: no action on either page, and the server answers 403 to the page's."""
    with server(ui="read-only", worker_class="gthread") as s:
        put(s, "ro-q", {"keep": True}, n=2)
        with open_page(browser, s) as w:
            page = w.page
            page.goto(s.url + "/ui")
            expect(row(page, "ro-q")).to_be_visible()
            expect(page.get_by_role("button")).to_have_count(0)
            page.goto(s.url + "/ui#/queues/ro-q")
            expect(page.get_by_role("list", name="Messages at the head").get_by_role("listitem")
                   ).to_have_count(2)  # peeking is reading
            for name in ("Purge", "Delete", "Enqueue", "Redrive"):
                expect(page.get_by_role("button", name=name)).to_have_count(0)
            w.expected.append(r"status of 403")
            answers = page.evaluate("""async () => {
                const h = {"X-Zoldyq-UI": "1", "Content-Type": "application/json"};
                const out = [];
                for (const [m, p, b] of [["POST", "/queues/ro-q/clear"],
                                         ["DELETE", "/queues/ro-q"],
                                         ["POST", "/queues/ro-q/enqueue", '{"payload": 1}'],
                                         ["GET", "/queues/ro-q/dequeue"]]) {
                    const r = await fetch(p, {method: m, headers: h, body: b});
                    out.push([r.status, (await r.json()).error]);
                }
                return out;
            }""")
            assert answers == [[403, "ui_read_only"]] * 4
        assert size(s, "ro-q") == 2
        r = s.call("POST", "/queues/ro-q/clear")  # without the marker: an ordinary API client
        assert r.status == 200


def test_token_is_asked_once_and_sent_as_bearer(browser: Browser) -> None:
    """With a token set, the page asks for it, sends it as a Bearer header (never in a URL) and
    keeps it for the tab; a wrong one is asked again."""
    with server(token=TOKEN) as s:
        put_auth = s.call("POST", "/queues/tok-q/enqueue", json={"payload": 1},
                          headers={"Authorization": f"Bearer {TOKEN}"})
        assert put_auth.status == 200
        with open_page(browser, s) as w:
            page = w.page
            auth_headers: list[str | None] = []
            page.on("request", lambda r: auth_headers.append(r.headers.get("authorization"))
                    if "/queues" in r.url else None)
            page.goto(s.url + "/ui")
            dialog = page.get_by_role("dialog", name="Token required")
            expect(dialog).to_be_visible()
            page.keyboard.press("Escape")  # the page cannot work without it: it stays
            expect(dialog).to_be_visible()
            w.expected.append(r"status of 401")
            page.get_by_label("Token", exact=True).fill("wrong")
            dialog.get_by_role("button", name="Sign in").click()
            expect(dialog).to_contain_text("refused")
            page.get_by_label("Token", exact=True).fill(TOKEN)
            page.keyboard.press("Enter")
            expect(row(page, "tok-q")).to_be_visible()
            shot(page, "token")
            page.reload()
            expect(row(page, "tok-q")).to_be_visible()
            expect(dialog).to_be_hidden()
            assert f"Bearer {TOKEN}" in auth_headers
            assert all(TOKEN not in u for u in w.urls)
            stored = page.evaluate("sessionStorage.getItem('zoldyq-token')")
            assert stored == TOKEN
            assert page.evaluate("localStorage.length") == 0


def test_phone_layout_fits_the_screen(browser: Browser, srv: servers.Server) -> None:
    """On a phone-sized screen the page has no horizontal scroll outside the table's own box."""
    put(srv, "phone-q", {"a": 1})
    with open_page(browser, srv, width=390, height=844) as w:
        w.page.goto(srv.url + "/ui")
        expect(row(w.page, "phone-q")).to_be_visible()
        width = w.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        shot(w.page, "overview-phone")
        w.page.goto(srv.url + "/ui#/queues/phone-q")
        expect(w.page.get_by_role("list", name="Messages at the head").get_by_role("listitem")
               ).to_have_count(1)
        assert w.page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(w.page, "queue-phone")


def test_content_security_policy_blocks_other_hosts(browser: Browser,
                                                    srv: servers.Server) -> None:
    """The page's CSP stops even a script bug from reaching another host."""
    with open_page(browser, srv) as w:
        page = w.page
        page.goto(srv.url + "/ui")
        w.expected.append(r"Content Security Policy")
        blocked = page.evaluate("""() => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation",
                (e) => resolve(e.blockedURI), {once: true});
            const img = new Image();
            img.src = "http://127.0.0.2:9/x.png";
            document.body.append(img);
        })""")
        assert blocked.startswith("http://127.0.0.2:9")
        page.wait_for_timeout(200)
        sent = [u for u in w.urls if "127.0.0.2" in u and u not in w.blocked]
        assert not sent


# -- the server side, without a browser ------------------------------------------------


def app_client(broker: zoldyq.Broker, **env: str) -> Any:
    from falcon import testing

    from zoldyq.http.app import create_app
    from zoldyq.settings import Settings

    settings = Settings.load(env={"ZOLDYQ_CONFIG": os.devnull, "ZOLDYQ_WORKER_CLASS": "gthread",
                                  **{f"ZOLDYQ_{k.upper()}": v for k, v in env.items()}})
    return testing.TestClient(create_app(settings, broker))


def test_page_and_files_carry_the_csp(broker: zoldyq.Broker) -> None:
    """The page and each of its files come with CSP default-src 'self', nosniff, no referrer."""
    client = app_client(broker)
    for path, ctype in (("/ui", "text/html"), ("/ui/ui.js", "text/javascript"),
                        ("/ui/ui.css", "text/css"), ("/ui/favicon.svg", "image/svg+xml")):
        r = client.simulate_get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith(ctype)
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert client.simulate_get("/ui/").text == client.simulate_get("/ui").text
    html = client.simulate_get("/ui").text
    assert '<meta name="zoldyq-ui" content="on">' in html
    assert '<meta name="zoldyq-auth" content="none">' in html
    assert "http" not in html.replace('http-equiv', '')  # nothing from any host, no absolute URL


def test_only_shipped_files_are_served(broker: zoldyq.Broker) -> None:
    """An unknown or path-like asset name is a JSON 404, never a file of the server."""
    client = app_client(broker)
    for name in ("nope.js", "..%2F__init__.py", "index.html", "%2Fetc%2Fpasswd"):
        r = client.simulate_get(f"/ui/{name}")
        assert r.status_code == 404, name
        assert r.json["error"] in ("ui_file_not_found", "not_found"), r.json


def test_ui_off_serves_no_page(broker: zoldyq.Broker) -> None:
    """ZOLDYQ_UI=off: /ui and its files answer 404 ui_off; the API is unchanged."""
    client = app_client(broker, ui="off")
    for path in ("/ui", "/ui/ui.js"):
        r = client.simulate_get(path)
        assert r.status_code == 404
        assert r.json == {"error": "ui_off",
                          "message": "the admin page is turned off (ZOLDYQ_UI=off)"}
    assert client.simulate_get("/queues").status_code == 200


def test_token_is_never_in_the_page(broker: zoldyq.Broker) -> None:
    """With a token the page only says one is needed: /ui itself needs none and holds none."""
    client = app_client(broker, token=TOKEN)
    r = client.simulate_get("/ui")
    assert r.status_code == 200
    assert TOKEN not in r.text
    assert '<meta name="zoldyq-auth" content="token">' in r.text
    assert client.simulate_get("/queues/q/peek").status_code == 401


def test_read_only_refuses_marked_writes_and_allows_reads(broker: zoldyq.Broker) -> None:
    """read-only: every state-changing route answers 403 to the page's marker; reads work."""
    broker.queue("q").put(1)
    client = app_client(broker, ui="read-only")
    ui = {"X-Zoldyq-UI": "1"}
    for method, path in (("POST", "/queues/q/enqueue"), ("POST", "/queues/q/batch"),
                         ("PUT", "/queues/q"), ("DELETE", "/queues/q"),
                         ("POST", "/queues/q/clear"), ("GET", "/queues/q/dequeue"),
                         ("POST", "/admin/snapshot")):
        r = client.simulate_request(method, path, headers=ui, json={"payload": 1})
        assert r.status_code == 403, (method, path)
        assert r.json["error"] == "ui_read_only"
    for path in ("/queues", "/queues/q", "/queues/q/peek", "/health", "/ui"):
        assert client.simulate_get(path, headers=ui).status_code == 200, path
    assert broker.queue("q").get() is not None  # nothing was taken


def test_peek_route_leaves_messages_in_place(broker: zoldyq.Broker) -> None:
    """GET /queues/{name}/peek?max=N: the head, oldest first, JSON inline and raw as base64."""
    q = broker.queue("q")
    q.put({"a": 1})
    q.put_bytes(b"\x00\x01")
    q.put(3)
    client = app_client(broker)
    r = client.simulate_get("/queues/q/peek", params={"max": "2"})
    assert r.status_code == 200
    doc = r.json
    assert doc["count"] == 2
    assert doc["queue_size"] == 3
    assert doc["queue_name"] == "q"
    assert doc["messages"][0]["payload"] == {"a": 1}
    assert doc["messages"][0]["size"] == len(b'{"a":1}')
    assert doc["messages"][1] == {"payload": "AAE=", "encoding": "base64",
                                  "enqueued_at": doc["messages"][1]["enqueued_at"], "size": 2}
    assert len(client.simulate_get("/queues/q/peek").json["messages"]) == 3  # default max 10
    assert len(q) == 3
    bad = client.simulate_get("/queues/q/peek", params={"max": "0"})
    assert bad.status_code == 400
    assert bad.json["error"] == "bad_max"
    missing = client.simulate_get("/queues/nope/peek")
    assert missing.status_code == 404
    assert missing.json["error"] == "queue_not_found"


def test_no_cors_grant_so_other_sites_cannot_send_the_marker(broker: zoldyq.Broker) -> None:
    """A browser preflights the page's header for another origin; the server grants nothing."""
    for worker_class in ("gthread", "asgi"):
        client = app_client(broker, worker_class=worker_class)
        # in a thread of its own: the asgi client runs an event loop, and playwright's
        # sync API may hold one in this thread when the browser tests ran first
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            r = pool.submit(client.simulate_options, "/queues/q/clear", headers={
                "Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-zoldyq-ui"}).result()
        assert r.status_code == 200
        assert not [k for k in r.headers if k.lower().startswith("access-control-allow")]
