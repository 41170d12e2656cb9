"""The operator console (issue 16, points 2 and 3), in a real browser.

Debian's headless Chromium, driven through chromium-driver by python3-selenium, goes through
what an operator does, against a real regpin in front of a real docker-registry, with a real
containerd "node" (its hosts.toml from `regpin hosts-toml --node-name node-ui`): log in, find
the tag containerd pulled, see the node that pulled it, watch a re-point appear live after the
upstream re-pushes the tag, approve it, see the pin move and the history grow, log out. Each
page is saved as a screenshot under build/test-artifacts/console/ (REGPIN_TEST_ARTIFACTS
overrides the folder).

ConsoleSessionTest checks the session rules over plain HTTP: the cookie's attributes, CSRF,
logout, and the console under admin.tls.

Run with, e.g.: cd tests/integration && /usr/bin/python3 -m unittest test_console -v
(Debian's python3: python3-selenium is installed for it.)
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import tempfile
import unittest
import urllib.parse
from pathlib import Path
from typing import Optional

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

import harness as h

TOKEN = "console-ops-token-0123456789abcdef"
VIEWER = "console-viewer-token-0123456789abcdef"  # scope read
ARTIFACTS = Path(os.environ.get("REGPIN_TEST_ARTIFACTS", h.REPO_ROOT / "build" / "test-artifacts")) / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def start_upstream(cls, name: str) -> None:
    """A docker-registry (cls.upstream) and an OCI layout (cls.layout) for the class."""
    cls.upstream = h.Registry(name).start()
    cls.addClassCleanup(cls.upstream.close)
    cls.layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
    cls.addClassCleanup(h.remove_temp_dir, str(cls.layout.path))


def start_browser(width: int = 1280, height: int = 900, accept_any_certificate: bool = False) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile in a temp dir (removed by the caller's cleanup)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if accept_any_certificate:
        options.add_argument("--ignore-certificate-errors")
    profile = tempfile.mkdtemp(prefix="regpin-it-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--metrics-recording-only",
                f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.profile_dir = profile  # type: ignore[attr-defined]
    return driver


class ConsoleBrowserTest(h.LogsOnFailure):
    """One regpin (admin token, policy pin), one docker-registry, one containerd node, one
    headless Chromium. One test: the operator's flow, step after step."""

    @classmethod
    def setUpClass(cls):
        start_upstream(cls, "console-upstream")
        cls.regpin = h.Regpin([h.Upstream.of(cls.upstream.host, cls.upstream)],
                              admin_tokens=[h.AdminToken("ops", TOKEN),
                                            {"name": "viewer", "token": VIEWER, "scope": "read"}],
                              policies=[h.PolicyRule(f"{cls.upstream.host}/**", "pin")])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()
        cls.node = h.Containerd().start()
        cls.addClassCleanup(cls.node.close)
        h.regpin_command("hosts-toml", "--mirror", cls.regpin.url, "--registry", cls.upstream.host,
                         "--fail-closed", "--node-name", "node-ui", "-o", cls.node.hosts_dir, check=True)
        cls.browser = start_browser()
        cls.addClassCleanup(h.remove_temp_dir, cls.browser.profile_dir)
        cls.addClassCleanup(cls.browser.quit)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def failure_report(self):
        report = super().failure_report()
        try:
            self.browser.save_screenshot(str(ARTIFACTS / "failure.png"))
            report.append(("browser page", self.browser.current_url + "\n" +
                           self.browser.find_element(By.TAG_NAME, "main").text[:3000]))
            logs = self.browser.get_log("browser")
            report.append(("browser console", "\n".join(str(l) for l in logs[-30:])))
        except Exception as e:  # noqa: BLE001 - a report must not fail
            report.append(("browser", repr(e)))
        return report

    # -- helpers --------------------------------------------------------------------------------

    def shot(self, name: str) -> Path:
        """Saves the page, after checking that it shows no value the page failed to fill in."""
        text = self.browser.find_element(By.TAG_NAME, "body").text
        for junk in ("null", "undefined", "NaN", "[object Object]"):
            self.assertNotIn(junk, text.split(), f"{junk!r} shown on the page saved as {name}")
        path = ARTIFACTS / f"{name}.png"
        self.assertTrue(self.browser.save_screenshot(str(path)), f"screenshot {path}")
        return path

    def wait(self, condition, timeout: float = 20, message: str = ""):
        try:
            # A view is redrawn whole: an element found just before is replaced, and looked up again.
            return WebDriverWait(self.browser, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)
        except TimeoutException:
            self.fail(f"timed out after {timeout}s: {message}")

    def text_in(self, locator, text: str, message: str = "", timeout: float = 20):
        return self.wait(EC.text_to_be_present_in_element(locator, text), timeout,
                         message or f"{text!r} in {locator}")

    def shown(self, fragment: str) -> None:
        """Waits until the page has drawn the view of `fragment` (the page marks <main> with the
        hash it shows once drawn), so nothing is read from the view before."""
        self.wait(lambda d: d.find_element(By.ID, "main").get_attribute("data-shown") == fragment,
                  message=f"the view {fragment} drawn")

    def main_text(self) -> str:
        return self.browser.find_element(By.ID, "main").text

    def go(self, fragment: str) -> None:
        self.browser.get(f"{self.regpin.admin_url}/ui/{fragment}")

    def push(self, img: h.Image, repo: str, tag: str = "v1") -> None:
        h.push(self.layout, f"{repo}:{tag}", self.upstream, source_tag=img.tag)

    def unlabelled_controls(self) -> list[str]:
        """Form controls and buttons a screen reader could not name."""
        return self.browser.execute_script("""
            const out = [];
            for (const e of document.querySelectorAll('input, select, button, a[href]')) {
              if (e.closest('[hidden]') || e.closest('dialog:not([open])')) continue;
              const named = (e.labels && e.labels.length) || e.getAttribute('aria-label') ||
                            e.getAttribute('aria-labelledby') || e.textContent.trim();
              if (!named) out.push(e.outerHTML.slice(0, 120));
            }
            return out;""")

    def no_sideways_scroll(self) -> bool:
        return self.browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;")

    # -- the flow -------------------------------------------------------------------------------

    def test_an_operator_finds_a_pulled_tag_approves_a_repoint_and_logs_out(self):
        repo = "console/web"
        first = h.make_image(self.layout, "web-1", seed="console-web-1", platforms=("linux/amd64", "linux/arm64"))
        second = h.make_image(self.layout, "web-2", seed="console-web-2", platforms=("linux/amd64", "linux/arm64"))
        self.push(first, repo)
        ref = f"{self.upstream.host}/{repo}:v1"
        self.node.pull(ref)
        self.assertEqual(self.node.image_digest(ref), first.digest, "containerd's pull through regpin")

        # 1. Log in: a wrong token is refused with a message, the right one opens the pins.
        self.go("")
        token = self.wait(EC.visibility_of_element_located((By.ID, "token")), message="the login form")
        self.assertEqual(self.browser.switch_to.active_element, token, "the token field has the focus")
        self.assertEqual(self.unlabelled_controls(), [])
        self.shot("01-login")
        token.send_keys("not-the-token", Keys.ENTER)
        self.text_in((By.ID, "login-error"), "not valid")
        token.clear()
        token.send_keys(TOKEN, Keys.ENTER)
        self.text_in((By.TAG_NAME, "h1"), "Pins", "the pins page after logging in")
        self.assertIn("token ops", self.browser.find_element(By.ID, "who").text)
        cookies = {c["name"]: c for c in self.browser.get_cookies()}
        self.assertTrue(cookies["regpin_session"]["httpOnly"])
        self.assertEqual(cookies["regpin_session"]["sameSite"], "Strict")
        self.assertEqual(self.browser.execute_script("return document.cookie"), "", "the cookie is HttpOnly")

        # 2. Find the tag containerd pulled: search, with the keyboard only.
        self.shown("#/pins")
        search = self.browser.find_element(By.ID, "q")
        search.send_keys("console/web", Keys.ENTER)
        self.shown("#/pins?q=console%2Fweb")
        link = self.wait(EC.element_to_be_clickable((By.LINK_TEXT, ref)), message="the pulled tag in the list")
        self.assertIn("1 shown", self.browser.find_element(By.ID, "pin-count").text)
        self.assertEqual(self.unlabelled_controls(), [])
        self.shot("02-pins")

        # 3. Its page: the digest containerd got, both platforms, and the node that pulled it.
        pin_page = "#/pin?" + urllib.parse.urlencode({"registry": self.upstream.host, "repository": repo, "tag": "v1"})
        link.send_keys(Keys.ENTER)
        self.shown(pin_page)
        self.text_in((By.ID, "pin-digest"), first.digest, "the pinned digest on the pin page")
        self.text_in((By.ID, "main"), "node-ui", "the node that pulled the digest")
        self.assertIn("linux/amd64, linux/arm64", self.main_text())
        self.assertEqual(self.unlabelled_controls(), [])
        self.shot("03-pin")

        # 4. The events timeline: the upstream re-pushes the tag, a check sees it, and the
        # re-point appears without reloading the page.
        self.browser.find_element(By.LINK_TEXT, "Events").click()
        self.shown("#/events")
        self.text_in((By.ID, "timeline"), "pinned", "the first pin in the timeline")
        self.push(second, repo)
        check = self.regpin.admin_request("POST", "/api/v1/pin/check",
                                          {"registry": self.upstream.host, "repository": repo, "tag": "v1"})
        self.assertEqual(check.status, 200, check.body[:300])
        item = self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, "#timeline li.new")),
                         message="the re-point, live in the timeline")
        self.assertIn("repointed", item.text)
        self.assertIn("pulled by 1 client", item.text, "the alert says who pulled the old digest")
        self.shot("04-events")

        # 5. Approve it: the confirmation says what nodes will get and who runs the old bytes;
        # then the pin moves and the history grows.
        self.go(pin_page)
        self.shown(pin_page)
        self.text_in((By.ID, "pending"), second.digest, "the pending re-point on the pin page")
        self.text_in((By.ID, "pin-state"), "pending")
        history = "//table[caption='History of this tag']/tbody/tr"
        history_before = len(self.browser.find_elements(By.XPATH, history))
        self.browser.find_element(By.XPATH, "//button[text()='Approve re-point']").click()
        dialog = self.wait(EC.visibility_of_element_located((By.ID, "confirm")), message="the confirmation")
        self.assertIn(f"will get {second.digest}", dialog.text)
        self.assertIn("node-ui", dialog.text)
        self.shot("05-confirm")
        self.browser.find_element(By.ID, "confirm-ok").click()
        self.shown(pin_page)
        self.text_in((By.ID, "pin-digest"), second.digest, "the pin after approving")
        self.text_in((By.ID, "pin-state"), "pinned")
        self.text_in((By.ID, "action-result"), "Approved")
        rows = self.browser.find_elements(By.XPATH, history)
        self.assertGreater(len(rows), history_before, "the history grew")
        self.assertIn("approved", rows[0].text)
        self.assertIn("token:ops", rows[0].text, "the history says who decided")
        served = self.regpin.request("GET", h.with_query(f"/v2/{repo}/manifests/v1", ns=self.upstream.host),
                                     {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(served.header("Docker-Content-Digest"), second.digest, "what nodes get now")
        self.shot("06-pin-approved")

        # 6. Health, from the same numbers as /metrics.
        self.browser.find_element(By.LINK_TEXT, "Health").click()
        self.shown("#/health")
        self.text_in((By.ID, "main"), "Readiness")
        self.text_in((By.ID, "main"), self.upstream.host, "the upstream's row")
        self.shot("07-health")

        # 7. A phone-sized screen: no sideways scrolling on the pins and the pin page.
        self.browser.set_window_size(390, 844)
        self.go("#/pins")
        self.shown("#/pins")
        self.assertTrue(self.no_sideways_scroll(), "the pins page scrolls sideways on a phone")
        self.shot("08-pins-phone")
        self.go(pin_page)
        self.shown(pin_page)
        self.text_in((By.ID, "pin-digest"), second.digest)
        self.assertTrue(self.no_sideways_scroll(), "the pin page scrolls sideways on a phone")
        self.shot("09-pin-phone")
        self.browser.set_window_size(1280, 900)

        # 8. Log out: back to the login form, and the session is gone on the server too.
        self.browser.find_element(By.ID, "logout").click()
        self.text_in((By.ID, "login-error"), "logged out")
        self.go("#/pins")
        self.wait(EC.visibility_of_element_located((By.ID, "token")), message="the login form after logging out")
        self.shot("10-logged-out")

        # 9. A read token: the same pin page, without a button that changes anything.
        self.browser.find_element(By.ID, "token").send_keys(VIEWER, Keys.ENTER)
        self.text_in((By.ID, "who"), "read: no changes")
        self.go(pin_page)
        self.shown(pin_page)
        self.text_in((By.ID, "pin-digest"), second.digest)
        self.text_in((By.ID, "main"), "scope read")
        buttons = [b.text for b in self.browser.find_elements(By.CSS_SELECTOR, "main button")]
        for change in ("Approve re-point", "Unpin", "Set"):
            self.assertNotIn(change, buttons)
        self.shot("11-pin-read-only")
        self.browser.find_element(By.ID, "logout").click()
        self.text_in((By.ID, "login-error"), "logged out")


class ConsoleSessionTest(h.LogsOnFailure):
    """The session rules, over plain HTTP: cookie attributes, CSRF, logout, admin.tls."""

    @classmethod
    def setUpClass(cls):
        start_upstream(cls, "console-session")
        cls.ca = h.CertificateAuthority("regpin-console-ca")
        cls.addClassCleanup(cls.ca.close)
        cls.regpin = h.Regpin([h.Upstream.of(cls.upstream.host, cls.upstream)],
                              admin_tokens=[h.AdminToken("ops", TOKEN)])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()
        img = h.make_image(cls.layout, "s1", seed="console-session")
        cls.upstream.push_image("session/app", img)
        cls.target = {"registry": cls.upstream.host, "repository": "session/app", "tag": img.tag}
        got = cls.regpin.request("GET", h.with_query(f"/v2/session/app/manifests/{img.tag}", ns=cls.upstream.host),
                                 {"Accept": h.ACCEPT_ALL_MANIFESTS})
        assert got.status == 200, got.body

    @staticmethod
    def call(host: str, method: str, path: str, body: Optional[dict] = None, headers: Optional[dict] = None,
             context: Optional[ssl.SSLContext] = None, raw: Optional[bytes] = None) -> tuple[int, dict[str, list[str]], bytes]:
        hostname, port = host.rsplit(":", 1)
        conn = (http.client.HTTPSConnection(hostname, int(port), context=context, timeout=20) if context
                else http.client.HTTPConnection(hostname, int(port), timeout=20))
        data = json.dumps(body).encode() if body is not None else raw
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        out = resp.read()
        got: dict[str, list[str]] = {}
        for k, v in resp.getheaders():
            got.setdefault(k.lower(), []).append(v)
        conn.close()
        return resp.status, got, out

    def login(self, host: str, context: Optional[ssl.SSLContext] = None) -> tuple[str, str, str]:
        """(cookie header value, the Set-Cookie line, the CSRF token)."""
        status, headers, body = self.call(host, "POST", "/ui/login", {"token": TOKEN}, context=context)
        self.assertEqual(status, 200, body)
        (set_cookie,) = headers["set-cookie"]
        return set_cookie.split(";")[0], set_cookie, json.loads(body)["csrf"]

    def test_the_cookie_is_httponly_samesite_strict_and_the_page_allows_nothing_from_elsewhere(self):
        _, set_cookie, csrf = self.login(self.regpin.admin_host)
        attributes = [a.strip() for a in set_cookie.split(";")]
        self.assertIn("HttpOnly", attributes)
        self.assertIn("SameSite=Strict", attributes)
        self.assertIn("Path=/", attributes)
        self.assertNotIn("Secure", attributes, "plain HTTP: a Secure cookie would never come back")
        self.assertEqual(len(csrf), 64)
        status, headers, body = self.call(self.regpin.admin_host, "GET", "/ui/")
        self.assertEqual(status, 200)
        self.assertIn(b'<script src="console.js"', body)
        self.assertNotIn(b"http://", body.replace(b"http://www.w3.org", b""), "an external asset")
        csp = headers["content-security-policy"][0]
        self.assertIn("default-src 'none'", csp)
        self.assertIn("script-src 'self'", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        for name in ("console.js", "console.css"):
            status, headers, body = self.call(self.regpin.admin_host, "GET", "/ui/" + name)
            self.assertEqual(status, 200, name)
            self.assertNotIn(b"https://", body, f"{name} refers to something elsewhere")

    def test_a_change_needs_the_cookie_and_the_csrf_token(self):
        host = self.regpin.admin_host
        cookie, _, csrf = self.login(host)
        # Reading with the cookie alone is fine.
        status, _, body = self.call(host, "GET", "/api/v1/pins", headers={"Cookie": cookie})
        self.assertEqual(status, 200, body)
        # A change: without the CSRF token, or with another one, refused; nothing changed.
        for headers in ({"Cookie": cookie}, {"Cookie": cookie, "X-CSRF-Token": "0" * 64},
                        {"Cookie": cookie, "X-CSRF-Token": csrf[:-1] + ("0" if csrf[-1] != "0" else "1")}):
            status, _, body = self.call(host, "POST", "/api/v1/pin/unpin", self.target, headers=headers)
            self.assertEqual(status, 403, body)
            self.assertIn(b"CSRF", body)
        # Without the cookie (the token alone), refused too.
        status, _, body = self.call(host, "POST", "/api/v1/pin/unpin", self.target, headers={"X-CSRF-Token": csrf})
        self.assertEqual(status, 401, body)
        pins = self.regpin.admin_request("GET", "/api/v1/pins?" + urllib.parse.urlencode(
            {"registry": self.upstream.host})).json()["pins"]
        self.assertEqual(len(pins), 1, "refused changes changed nothing")
        # Both: the change is made, and the history names the token behind the session.
        status, _, body = self.call(host, "POST", "/api/v1/pin/unpin", self.target,
                                    headers={"Cookie": cookie, "X-CSRF-Token": csrf})
        self.assertEqual(status, 200, body)
        self.assertEqual([e["actor"] for e in json.loads(body)["events"]], ["token:ops"])
        # Logging out needs the CSRF token too, and ends the session on the server.
        status, _, _ = self.call(host, "POST", "/ui/logout", {}, headers={"Cookie": cookie})
        self.assertEqual(status, 403)
        status, headers, _ = self.call(host, "POST", "/ui/logout", {}, headers={"Cookie": cookie, "X-CSRF-Token": csrf})
        self.assertEqual(status, 200)
        self.assertIn("Max-Age=0", headers["set-cookie"][0])
        status, _, _ = self.call(host, "GET", "/api/v1/pins", headers={"Cookie": cookie})
        self.assertEqual(status, 401, "the old cookie after logout")
        status, _, _ = self.call(host, "GET", "/ui/session", headers={"Cookie": cookie})
        self.assertEqual(status, 401)

    def test_login_takes_json_only_so_no_other_site_can_log_a_browser_in(self):
        # What a form on another page could post without a CORS preflight.
        for content_type, body in (("text/plain", json.dumps({"token": TOKEN})),
                                   ("application/x-www-form-urlencoded", f"token={TOKEN}")):
            status, headers, _ = self.call(self.regpin.admin_host, "POST", "/ui/login",
                                           headers={"Content-Type": content_type, "Content-Length": str(len(body))},
                                           raw=body.encode())
            self.assertEqual(status, 415, content_type)
            self.assertNotIn("set-cookie", headers)

    def test_a_wrong_token_gets_no_session(self):
        status, headers, body = self.call(self.regpin.admin_host, "POST", "/ui/login", {"token": "guess"})
        self.assertEqual(status, 401, body)
        self.assertNotIn("set-cookie", headers)
        status, _, _ = self.call(self.regpin.admin_host, "GET", "/api/v1/pins",
                                 headers={"Cookie": "regpin_session=" + "a" * 64})
        self.assertEqual(status, 401, "a made-up session id")

    def test_under_admin_tls_the_cookie_is_secure_and_the_console_works(self):
        cert = self.ca.issue("regpin-console-admin", ips=("127.0.0.1",))
        rp = h.Regpin([h.Upstream.of(self.upstream.host, self.upstream)],
                      admin_tls=cert, admin_tokens=[h.AdminToken("ops", TOKEN)])
        self.addCleanup(rp.close)
        rp.start()
        context = cert.client_context()
        status, _, body = self.call(rp.admin_host, "GET", "/ui/", context=context)
        self.assertEqual(status, 200)
        cookie, set_cookie, csrf = self.login(rp.admin_host, context)
        self.assertIn("Secure", [a.strip() for a in set_cookie.split(";")])
        status, _, body = self.call(rp.admin_host, "GET", "/ui/session", headers={"Cookie": cookie}, context=context)
        self.assertEqual((status, json.loads(body)["csrf"]), (200, csrf))
        # And in the browser, over HTTPS (the test CA is not in Chromium's store: its errors are
        # ignored for this one check of the page working under TLS).
        browser = start_browser(accept_any_certificate=True)
        self.addCleanup(h.remove_temp_dir, browser.profile_dir)
        self.addCleanup(browser.quit)
        browser.get(f"{rp.admin_url}/ui/")
        WebDriverWait(browser, 20).until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(TOKEN, Keys.ENTER)
        WebDriverWait(browser, 20).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Pins"))
        self.assertTrue({c["name"]: c for c in browser.get_cookies()}["regpin_session"]["secure"])


if __name__ == "__main__":
    unittest.main()
