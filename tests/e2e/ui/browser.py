"""Headless Chromium for the web UI tests: starting it offline and safely, and the
small steps every flow repeats (opening a page, waiting, signing in, posting a form).

Every wait here is bounded; a failed expectation raises FlowError with a message
that names the page and what was missing, since that message is all a CI log shows.
"""

import os
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# Debian's chromium and chromium-driver; Selenium Manager must never look for others
# (nothing outside this machine is reachable).
CHROMIUM = os.environ.get("UI_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("UI_CHROMEDRIVER", "/usr/bin/chromedriver")
os.environ.setdefault("SE_OFFLINE", "true")

DESKTOP = (1280, 900)
PHONE = (390, 844)
WAIT = float(os.environ.get("UI_WAIT_SECONDS", "15"))


class FlowError(AssertionError):
    """A flow's expectation did not hold; the message says what and where."""


def check(condition, message):
    """Fails the flow with MESSAGE unless CONDITION holds."""
    if not condition:
        raise FlowError(message)


def chromium_options():
    """Headless, and unable to reach anything but loopback. Background services are
    turned off where a flag does it; what Chromium still tries at start (sign-in and
    update checks to Google hosts) goes to a proxy on a closed loopback port, and
    every host name but localhost fails to resolve (the tests use 127.0.0.1)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,"
        "NetworkTimeServiceQuerying,CertificateTransparencyComponentUpdater",
        "--no-pings",
        "--metrics-recording-only",
        "--password-store=basic",
        "--proxy-server=http://127.0.0.1:9",  # loopback bypasses it; the rest goes nowhere
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    # The page's own refusals (403 pages) must not hide behind an interstitial.
    options.set_capability("pageLoadStrategy", "normal")
    return options


@contextmanager
def chromium(log_path=None):
    """A Chromium session driven through Debian's chromedriver; always quit, so no
    browser outlives the flow."""
    service = Service(executable_path=CHROMEDRIVER, log_output=log_path or os.devnull)
    driver = webdriver.Chrome(service=service, options=chromium_options())
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(10)
        yield driver
    finally:
        driver.quit()


class Page:
    """One browser session against one berth node at BASE (http://127.0.0.1:PORT)."""

    def __init__(self, driver, base):
        self.driver = driver
        self.base = base.rstrip("/")
        self.host = urlsplit(self.base).netloc

    # ------------------------------------------------------------ navigation

    def url(self, path):
        return self.base + path

    def open(self, path):
        """Loads PATH and returns the HTTP status of the document (from the
        Navigation Timing entry, which Chromium fills with the response status)."""
        self.driver.get(self.url(path))
        return self.status()

    def status(self):
        """HTTP status of the current document, or 0 when the browser does not say."""
        return self.driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return n && n.responseStatus ? n.responseStatus : 0;"
        )

    def path(self):
        return urlsplit(self.driver.current_url).path

    def where(self):
        """The current page, for messages."""
        parts = urlsplit(self.driver.current_url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def mark_document(self):
        """Tags the current document so a later wait can tell it was replaced."""
        self.driver.execute_script("window.__berthOld = true;")

    def wait_new_document(self, what):
        """Waits until the document marked by mark_document is gone and the new one
        has loaded."""
        self.wait(
            lambda d: d.execute_script(
                "return !window.__berthOld && document.readyState === 'complete';"
            ),
            f"a new page after {what}",
        )

    def click_and_load(self, element, what):
        """Clicks ELEMENT (a link or submit button) and waits for the page it loads."""
        self.mark_document()
        element.click()
        self.wait_new_document(what)
        return self.status()

    # ------------------------------------------------------------ finding and waiting

    def wait(self, condition, what, timeout=WAIT):
        """Waits for CONDITION(driver) to be truthy and returns its value. Stale
        elements (a page that refreshed itself meanwhile) just mean: try again."""
        try:
            return WebDriverWait(
                self.driver,
                timeout,
                poll_frequency=0.2,
                ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
            ).until(condition)
        except TimeoutException:
            raise FlowError(f"{self.where()}: timed out after {timeout:g}s waiting for {what}") from None

    def find(self, css, what=None):
        """The element matching CSS on the current page, waited for."""
        return self.wait(lambda d: d.find_element(By.CSS_SELECTOR, css), what or css)

    def find_all(self, css):
        """Every element matching CSS now (no waiting: the page has loaded)."""
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def absent(self, css):
        return not self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        return self.find(css).text.strip()

    def source(self):
        return self.driver.page_source

    # ------------------------------------------------------------ session

    def sign_in(self, user, password, expect_ok=True):
        """Signs in through the form at /ui/signin; by default expects to land on /ui/
        with #whoami naming USER."""
        status = self.open("/ui/signin")
        check(status == 200, f"/ui/signin answered {status}")
        self.find("#signin-form")
        self.find("#username").clear()
        self.find("#username").send_keys(user)
        self.find("#password").send_keys(password)
        status = self.click_and_load(self.find("#signin-submit"), "signing in")
        if expect_ok:
            check(self.path() == "/ui/", f"signing in as {user} led to {self.where()} ({status}), not /ui/")
            whoami = self.text("#whoami")
            check(whoami == user, f"#whoami says {whoami!r} after signing in as {user}")
        return status

    def sign_out(self):
        """Signs out with the header's form; afterwards the sign-in link shows."""
        self.click_and_load(self.find("#signout"), "signing out")
        self.open("/ui/")
        self.find("#signin-link", "the sign-in link after signing out")
        check(self.absent("#whoami"), f"{self.where()}: #whoami still shown after signing out")

    def csrf(self):
        """The CSRF value of the current page's forms (the sign-out form has one on
        every page of a signed-in visitor)."""
        field = self.find("#signout-form input[name=csrf]", "the sign-out form's csrf field")
        value = field.get_attribute("value")
        check(value, f"{self.where()}: the sign-out form's csrf field is empty")
        return value

    def post(self, action, fields):
        """Submits a form built in the page: a POST to ACTION with FIELDS (a dict),
        as a forged or replayed request would. Returns the answer's HTTP status."""
        self.mark_document()
        self.driver.execute_script(
            """
            const form = document.createElement('form');
            form.method = 'post';
            form.action = arguments[0];
            for (const [name, value] of Object.entries(arguments[1])) {
                const input = document.createElement('input');
                input.type = 'hidden';
                input.name = name;
                input.value = value;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            HTMLFormElement.prototype.submit.call(form);
            """,
            action,
            fields,
        )
        self.wait_new_document(f"POST {action}")
        return self.status()

    # ------------------------------------------------------------ sizes and pictures

    def desktop(self):
        """A 1280x900 viewport: headless Chromium's window keeps room for a browser
        frame it does not draw, so the window size alone gives a shorter one."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": DESKTOP[0], "height": DESKTOP[1], "deviceScaleFactor": 1, "mobile": False},
        )

    def phone(self):
        """A phone's viewport (390x844 CSS pixels, touch, mobile layout)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 2, "mobile": True},
        )

    def screenshot(self, directory, name):
        """Saves the viewport as DIRECTORY/NAME.png (when a directory is given)."""
        if not directory:
            return
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"{name}.png")
        # Fonts and images settle after load; a short pause keeps pictures whole.
        self.wait(lambda d: d.execute_script("return document.fonts.status === 'loaded';"), "fonts")
        time.sleep(0.2)
        check(self.driver.save_screenshot(path), f"could not save {path}")
        print(f"# screenshot {path} ({self.where()})")
