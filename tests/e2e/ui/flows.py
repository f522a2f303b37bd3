"""Browser flows through berth's web UI, run by tests/e2e/ui.sh against a cluster it
set up (users, repositories and images described by the fixture file it writes).

Usage: flows.py --fixture FILE [--down HOST:PORT] [--artifacts DIR] FLOW...

Each flow gets a fresh browser (no cookies), so flows do not lean on each other; the
one exception is delete-tag, which deletes the tag `old` and so runs once per cluster.
A failed flow prints `flow NAME failed: WHY`, leaves a screenshot and the page source
in --artifacts, and makes the exit status 1. Pictures for the documentation are
taken by the screenshots flow into $UI_SCREENSHOTS.
"""

import argparse
import json
import os
import sys
import time
import traceback

from selenium.common.exceptions import NoAlertPresentException, UnexpectedAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from browser import FlowError, Page, check, chromium

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
FLOWS = {}


def flow(name):
    """Registers a flow under the name ui.sh passes on the command line."""

    def register(function):
        FLOWS[name] = function
        return function

    return register


# ---------------------------------------------------------------- small helpers


def tag_row(page, tag):
    return page.find_all(f'#tags tr.tag[data-tag="{tag}"]')


def tags_shown(page):
    page.find("#tags", "the tags table")
    return [row.get_attribute("data-tag") for row in page.find_all("#tags tr.tag")]


def repositories_shown(page):
    return [link.text.strip() for link in page.find_all("#repositories li.repository a.repo")]


def expect_error(page, status, what, expected=403):
    """A refusal: the expected status and a page with #error saying something."""
    check(status == expected, f"{what}: answered {status}, expected {expected} ({page.where()})")
    error = page.text("#error")
    check(error, f"{what}: #error is empty")
    return error


def no_alert(page, what):
    try:
        alert = page.driver.switch_to.alert
        text = alert.text
        alert.dismiss()
    except NoAlertPresentException:
        return
    raise FlowError(f"{what}: a JavaScript alert opened ({text!r}): markup was not escaped")


def digest_shown(cell_text, html, digest):
    """A digest is shown when the row holds it whole, or its text is a long enough
    prefix of it (a shortened digest with the full one in an attribute)."""
    text = cell_text.strip().removesuffix("…").removesuffix("...")
    return digest in html or (len(text) >= len("sha256:") + 12 and digest.startswith(text))


def read_clipboard(page):
    """The clipboard's text, read in the page (the permission must be granted)."""
    result = page.driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        navigator.clipboard.readText().then(
            text => done({text: text}),
            error => done({error: String(error)}));
        """
    )
    check("text" in result, f"reading the clipboard failed: {result.get('error')}")
    return result["text"]


def cluster_rows(page):
    """The members table as {api: (data-state, .state text, .role text, node id)}."""
    page.find("#members", "the members table")
    rows = {}
    for row in page.find_all("#members tr.member"):
        rows[row.get_attribute("data-api")] = (
            row.get_attribute("data-state"),
            row.find_element(By.CSS_SELECTOR, ".state").text.strip(),
            row.find_element(By.CSS_SELECTOR, ".role").text.strip(),
            row.get_attribute("data-node-id"),
        )
    return rows


# ---------------------------------------------------------------- flows


@flow("sign-in")
def sign_in(page, fx, args):
    """The form signs a user in; the session cookie is out of reach of scripts and
    of other sites' requests; a wrong password is refused without a session."""
    status = page.open("/ui/")
    check(status == 200, f"/ui/ answered {status} to an anonymous visitor")
    page.find("#signin-link", "the sign-in link of an anonymous visitor")
    csrf_cookie = page.driver.get_cookie("berth_csrf")
    check(csrf_cookie, f"no berth_csrf cookie after the first visit (cookies: {page.driver.get_cookies()})")
    check(csrf_cookie.get("httpOnly") is True, f"berth_csrf is not HttpOnly: {csrf_cookie}")
    check(csrf_cookie.get("sameSite") == "Strict", f"berth_csrf is not SameSite=Strict: {csrf_cookie}")

    status = page.sign_in("admin", "not the password", expect_ok=False)
    expect_error(page, status, "signing in with a wrong password", expected=401)
    check(page.driver.get_cookie("berth_session") is None, "a wrong password got a berth_session cookie")

    page.sign_in("admin", fx["users"]["admin"])
    session = page.driver.get_cookie("berth_session")
    check(session, f"no berth_session cookie after signing in (cookies: {page.driver.get_cookies()})")
    check(session.get("httpOnly") is True, f"berth_session is not HttpOnly: {session}")
    check(session.get("sameSite") == "Strict", f"berth_session is not SameSite=Strict: {session}")
    check(session.get("path") == "/ui", f"berth_session's path is {session.get('path')!r}, not /ui")
    check(
        page.driver.execute_script("return document.cookie.indexOf('berth_session') < 0;"),
        "document.cookie shows berth_session",
    )
    page.find("#signout-form", "the sign-out form")
    page.open(f"/ui/r/{fx['repo']}")
    check(page.text("#whoami") == "admin", "#whoami does not say admin on the next page")


@flow("multi-arch")
def multi_arch(page, fx, args):
    """Search, a repository, a multi-arch tag, and one platform's image with its layers."""
    page.sign_in("admin", fx["users"]["admin"])
    page.open("/ui/")
    search = page.find("#search #q", "the search field")
    search.clear()
    page.mark_document()
    search.send_keys("acme", Keys.RETURN)
    page.wait_new_document("searching")
    check("q=acme" in page.driver.current_url, f"the search led to {page.where()}")
    found = repositories_shown(page)
    check(fx["repo"] in found, f"searching acme lists {found}, not {fx['repo']}")
    check(fx["public"] not in found, f"searching acme lists {fx['public']} too: {found}")

    links = [a for a in page.find_all("#repositories a.repo") if a.text.strip() == fx["repo"]]
    page.click_and_load(links[0], f"opening {fx['repo']}")
    check(page.path() == f"/ui/r/{fx['repo']}", f"the repository link led to {page.where()}")
    check(page.text("h1") == fx["repo"], f"the repository page's h1 is {page.text('h1')!r}")
    index = fx["index"]
    rows = tag_row(page, index["tag"])
    check(rows, f"tag {index['tag']} is not in #tags: {tags_shown(page)}")
    platforms = rows[0].find_element(By.CSS_SELECTOR, ".platforms").text
    for platform in index["children"]:
        check(platform in platforms, f"the platforms of {index['tag']} ({platforms!r}) lack {platform}")

    link = rows[0].find_element(By.CSS_SELECTOR, "a.tag-link")
    page.click_and_load(link, f"opening tag {index['tag']}")
    check(
        page.path() == f"/ui/r/{fx['repo']}/-/{index['tag']}",
        f"the tag link led to {page.where()}",
    )
    page.find("#summary", "the summary of the index")
    pull = page.find("#pull-command").get_attribute("value")
    expected = f"docker pull {page.host}/{fx['repo']}:{index['tag']}"
    check(pull == expected, f"#pull-command on the tag page is {pull!r}, expected {expected!r}")
    page.find("#manifests", "the manifests table of an index")
    children = page.find_all("#manifests tr.child")
    shown = {
        row.find_element(By.CSS_SELECTOR, ".platform").text.strip(): row for row in children
    }
    check(
        len(children) == 2 and set(shown) == set(index["children"]),
        f"#manifests shows {len(children)} rows with platforms {sorted(shown)}, "
        f"expected {sorted(index['children'])}",
    )

    arm64 = index["children"]["linux/arm64"]
    link = shown["linux/arm64"].find_element(By.CSS_SELECTOR, "a.child-link")
    href = link.get_attribute("href")
    check(
        href.endswith(f"/ui/r/{fx['repo']}/-/{arm64['digest']}"),
        f"the linux/arm64 link goes to {href}, not the child {arm64['digest']}",
    )
    page.click_and_load(link, "opening the linux/arm64 image")
    page.find("#layers", "the layers table of the linux/arm64 image")
    rows = page.find_all("#layers tr.layer")
    check(
        len(rows) == len(arm64["layers"]),
        f"#layers shows {len(rows)} rows, the image has {len(arm64['layers'])} layers",
    )
    for row, layer in zip(rows, arm64["layers"]):
        cells = {
            name: row.find_element(By.CSS_SELECTOR, f".{name}").text.strip()
            for name in ("digest", "media-type", "size", "holders")
        }
        check(
            digest_shown(cells["digest"], row.get_attribute("outerHTML"), layer["digest"]),
            f"layer row {cells} does not show {layer['digest']}",
        )
        check(cells["media-type"] == LAYER_TYPE, f"layer media type shown as {cells['media-type']!r}")
        check(any(c.isdigit() for c in cells["size"]), f"layer size shown as {cells['size']!r}")
        check(cells["holders"], f"no holders shown for layer {layer['digest']}")
    config = page.text("#config")
    for needle in arm64["config_shows"]:
        check(needle in config, f"#config does not show {needle!r}: {config!r}")
    check(page.find_all("#history tr"), "the #history table is empty")
    pull = page.find("#pull-command").get_attribute("value")
    expected = f"docker pull {page.host}/{fx['repo']}@{arm64['digest']}"
    check(pull == expected, f"#pull-command on the image page is {pull!r}, expected {expected!r}")


@flow("copy-pull")
def copy_pull(page, fx, args):
    """The copy button puts the pull command, with the host the browser used, on the
    clipboard."""
    page.sign_in("admin", fx["users"]["admin"])
    page.open(f"/ui/r/{fx['repo']}")
    expected = f"docker pull {page.host}/{fx['repo']}"
    command = page.find("#pull-command").get_attribute("value")
    check(command == expected, f"#pull-command is {command!r}, expected {expected!r}")
    page.driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"], "origin": page.base},
    )
    page.find("#copy-pull").click()
    page.wait(
        lambda d: "Copied" in d.find_element(By.ID, "copy-status").text,
        "#copy-status to say Copied",
    )
    copied = read_clipboard(page)
    check(copied == command, f"the clipboard holds {copied!r}, #pull-command is {command!r}")


@flow("delete-tag")
def delete_tag(page, fx, args):
    """An administrator deletes a tag with its button; a reader gets no button, and
    a crafted POST with the reader's own valid csrf value is refused."""
    repo = fx["repo"]
    page.sign_in("admin", fx["users"]["admin"])
    page.open(f"/ui/r/{repo}")
    rows = tag_row(page, "old")
    check(rows, f"tag old is not in #tags before the delete: {tags_shown(page)}")
    button = rows[0].find_element(By.CSS_SELECTOR, "form.delete-tag button.delete")
    # A confirmation dialog, if the UI asks one, is answered yes.
    page.driver.execute_script("window.confirm = () => true;")
    status = page.click_and_load(button, "deleting tag old")
    check(status == 200, f"deleting tag old ended on a {status} page ({page.where()})")
    check(page.path() == f"/ui/r/{repo}", f"deleting tag old led to {page.where()}")
    page.find("#notice", "#notice after deleting tag old")
    remaining = tags_shown(page)
    check("old" not in remaining, f"tag old is still in #tags after its delete: {remaining}")
    check("v2" in remaining, f"tag v2 went missing too: {remaining}")

    page.sign_out()
    page.sign_in("reader", fx["users"]["reader"])
    page.open(f"/ui/r/{repo}")
    shown = tags_shown(page)
    check("v2" in shown, f"the reader does not see tag v2: {shown}")
    check(page.absent(".delete"), "the reader sees a .delete button")
    check(page.absent("form.delete-tag"), "the reader sees a delete form")
    csrf = page.csrf()
    status = page.post(f"/ui/r/{repo}/-/v2/delete", {"csrf": csrf})
    expect_error(page, status, "a reader's POST to delete v2")
    page.open(f"/ui/r/{repo}")
    check(tag_row(page, "v2"), f"tag v2 is gone after the reader's refused delete: {tags_shown(page)}")


@flow("csrf")
def csrf(page, fx, args):
    """A delete without the csrf field, or with a wrong one, is refused even for an
    administrator, and the tag stays."""
    repo = fx["repo"]
    page.sign_in("admin", fx["users"]["admin"])
    page.open(f"/ui/r/{repo}")
    check(tag_row(page, "v2"), f"tag v2 is not in #tags: {tags_shown(page)}")
    real = page.csrf()
    forged = ("0" if real[0] != "0" else "1") + real[1:]
    for fields, what in (({}, "without csrf"), ({"csrf": forged}, "with a wrong csrf")):
        status = page.post(f"/ui/r/{repo}/-/v2/delete", fields)
        error = expect_error(page, status, f"a delete {what}")
        check(
            "forged" in error.lower() or "stale" in error.lower(),
            f"a delete {what}: #error does not say the form is stale or forged: {error!r}",
        )
        page.open(f"/ui/r/{repo}")
        check(tag_row(page, "v2"), f"tag v2 is gone after a delete {what}: {tags_shown(page)}")


@flow("script-text")
def script_text(page, fx, args):
    """Markup in an annotation and a label is shown as text, never run."""
    image = fx["annotated"]
    page.sign_in("admin", fx["users"]["admin"])
    page.open(f"/ui/r/{fx['repo']}/-/{image['tag']}")
    no_alert(page, "the annotated image's page")
    annotations = page.find("#annotations", "the annotations of the image").text
    check(image["text"] in annotations, f"#annotations does not show {image['text']!r}: {annotations!r}")
    source = page.source()
    check("&lt;script&gt;alert(1)" in source, "the page source has no &lt;script&gt;alert(1)")
    check(image["text"] not in source, f"the page source holds {image['text']!r} unescaped")
    config = page.text("#config")
    check(image["label"] in config, f"#config does not show the label {image['label']!r}: {config!r}")
    check(page.absent('img[src="x"]'), "the label's <img> became an element")
    check(
        page.driver.execute_script("return document.querySelectorAll('script:not([src])').length;") == 0,
        "the page holds an inline <script>",
    )
    no_alert(page, "the annotated image's page, after loading")
    page.open(f"/ui/r/{fx['repo']}")
    no_alert(page, "the repository page")


@flow("anonymous")
def anonymous(page, fx, args):
    """A visitor who is not signed in sees public repositories only, and no name of
    a private one anywhere."""
    private = [fx["hidden"], fx["repo"]]
    status = page.open("/ui/")
    check(status == 200, f"/ui/ answered {status}")
    found = repositories_shown(page)
    check(fx["public"] in found, f"/ui/ lists {found}, not the public {fx['public']}")
    for path in ("/ui/", "/ui/?q=secret", "/ui/?q=acme", "/ui/?q=hidden"):
        page.open(path)
        source = page.source()
        for name in private:
            check(name not in source, f"{path} shows the private repository {name} to an anonymous visitor")
    page.open("/ui/?q=secret")
    page.find("#empty", "#empty for a search that finds nothing public")

    def refused(path):
        status = page.open(path)
        if page.find_all("#signin-form"):
            kind = "sign-in"
        else:
            check(status == 404, f"{path} answered {status} to an anonymous visitor, expected 404 or sign-in")
            page.find("#error", f"#error on {path}")
            kind = "404"
        for css in ("#tags", "#pull-command", "#copy-pull"):
            check(page.absent(css), f"{path} shows {css} to an anonymous visitor")
        return kind, status

    hidden = refused(f"/ui/r/{fx['hidden']}")
    missing = refused(f"/ui/r/{fx['hidden'].split('/')[0]}/no-such-repository")
    check(
        hidden == missing,
        f"an anonymous visitor can tell {fx['hidden']} exists: {hidden} for it, {missing} for a missing one",
    )
    refused(f"/ui/r/{fx['hidden']}/-/latest")

    status = page.open(f"/ui/r/{fx['public']}")
    check(status == 200, f"the public {fx['public']} answered {status}")
    check(tag_row(page, "latest"), f"{fx['public']} shows no tag latest: {tags_shown(page)}")
    check(page.absent(".delete"), f"an anonymous visitor sees a .delete button on {fx['public']}")


def watch_cluster(page, settled, what, seconds=30):
    """Reloads /ui/cluster about once a second (rather than waiting for its own 5 s
    refresh) until SETTLED(rows) holds; returns the rows. Bounded in time and count."""
    deadline = time.monotonic() + seconds
    rows = {}
    for _ in range(2 * seconds):
        page.open("/ui/cluster")
        rows = cluster_rows(page)
        if settled(rows):
            return rows
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    raise FlowError(f"/ui/cluster: not {what} within {seconds} s; rows (state, text, role, id): {rows}")


def leaders(rows):
    return [api for api, row in rows.items() if "leader" in row[2]]


@flow("cluster")
def cluster(page, fx, args):
    """Every member up, exactly one leader, and the under-replicated count shown."""
    page.sign_in("admin", fx["users"]["admin"])
    wanted = set(fx["nodes"])

    def all_up(rows):
        up = {api for api, (state, text, _, _) in rows.items() if state == "up" and text == "up"}
        return set(rows) == wanted and up == wanted and len(leaders(rows)) == 1

    watch_cluster(page, all_up, "every member up with one leader")
    page.find("#cluster-summary #under-replicated", "#under-replicated in the cluster summary")
    check(page.find_all('meta[http-equiv="refresh"]'), "/ui/cluster does not refresh itself")


@flow("node-down")
def node_down(page, fx, args):
    """A node killed with SIGKILL (--down HOST:PORT) shows down within 30 s; the two
    others up, one of them the leader."""
    check(args.down, "node-down needs --down HOST:PORT")
    check(args.down in fx["nodes"], f"--down {args.down} is not one of {fx['nodes']}")
    page.sign_in("admin", fx["users"]["admin"])

    def shown_down(rows):
        row = rows.get(args.down)
        return row is not None and row[0] == "down" and row[1] == "down"

    rows = watch_cluster(page, shown_down, f"showing {args.down} down")
    others = [api for api in fx["nodes"] if api != args.down]
    for api in others:
        check(api in rows, f"/ui/cluster has no row for {api}: {rows}")
        check(rows[api][0] == "up" and rows[api][1] == "up", f"{api} is not shown up: {rows[api]}")
    check(len(leaders(rows)) == 1, f"leader rows: {leaders(rows)}, expected one; rows: {rows}")
    check(leaders(rows)[0] in others, f"the killed node {args.down} is shown as the leader")


@flow("screenshots")
def screenshots(page, fx, args):
    """Pictures of each kind of page, for the documentation and for reviewing a change."""
    directory = os.environ.get("UI_SCREENSHOTS")
    check(directory, "the screenshots flow needs UI_SCREENSHOTS=DIR")
    page.open("/ui/signin")
    page.find("#signin-form")
    page.screenshot(directory, "signin")
    page.sign_in("admin", fx["users"]["admin"])
    page.open("/ui/")
    page.find("#repositories")
    page.screenshot(directory, "repositories")
    page.open(f"/ui/r/{fx['repo']}")
    page.find("#tags")
    page.screenshot(directory, "repository")
    page.open(f"/ui/r/{fx['repo']}/-/{fx['index']['tag']}")
    page.find("#manifests")
    page.screenshot(directory, "index")
    page.open(f"/ui/r/{fx['repo']}/-/{fx['index']['children']['linux/arm64']['digest']}")
    page.find("#layers")
    page.screenshot(directory, "image")
    page.open("/ui/cluster")
    page.find("#members")
    page.screenshot(directory, "cluster")
    page.phone()
    page.open(f"/ui/r/{fx['repo']}")
    page.find("#tags")
    page.screenshot(directory, "phone")
    page.desktop()


def sideways(page):
    """How far the page scrolls sideways, and the elements that reach the far right
    of what scrolls (the ones that widen it)."""
    return page.driver.execute_script(
        """
        const root = document.documentElement;
        const width = root.clientWidth, scroll = root.scrollWidth;
        const culprits = [];
        if (scroll > width) {
            for (const e of document.querySelectorAll('body *')) {
                const right = Math.round(e.getBoundingClientRect().right + window.scrollX);
                if (Math.abs(right - scroll) <= 1) {
                    const classes = e.classList.length ? '.' + [...e.classList].join('.') : '';
                    culprits.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + classes);
                }
            }
        }
        return {overflow: scroll - width, culprits: culprits.slice(-5)};
        """
    )


@flow("phone")
def phone(page, fx, args):
    """At a phone's size (390x844) the pages fit the screen: a viewport meta tag, and
    nothing that makes the whole page scroll sideways (wide tables scroll by themselves)."""
    page.sign_in("admin", fx["users"]["admin"])
    page.phone()
    child = fx["index"]["children"]["linux/arm64"]["digest"]
    problems = []
    for path in ("/ui/", f"/ui/r/{fx['repo']}", f"/ui/r/{fx['repo']}/-/{fx['index']['tag']}",
                 f"/ui/r/{fx['repo']}/-/{child}", "/ui/cluster", "/ui/access"):
        page.open(path)
        page.find("#main")
        meta = page.find_all('meta[name="viewport"]')
        if not meta or "width=device-width" not in (meta[0].get_attribute("content") or ""):
            problems.append(f"{path}: no <meta name=viewport content=width=device-width>")
            continue
        result = sideways(page)
        if result["overflow"] > 0:
            problems.append(
                f"{path} scrolls sideways by {result['overflow']} px at 390 px wide "
                f"(reaching the right edge: {', '.join(result['culprits'])})"
            )
    check(not problems, "; ".join(problems))


# ---------------------------------------------------------------- running


def save_artifacts(page, directory, name):
    """A picture and the source of the page a flow failed on, to see why."""
    if not directory:
        return
    try:
        os.makedirs(directory, exist_ok=True)
        page.driver.save_screenshot(os.path.join(directory, f"failed-{name}.png"))
        with open(os.path.join(directory, f"failed-{name}.html"), "w", encoding="utf-8") as out:
            out.write(f"<!-- {page.driver.current_url} -->\n{page.source()}")
    except Exception as error:  # the browser may be what failed
        print(f"# no artifacts for {name}: {error}", file=sys.stderr)


def run(name, fx, args):
    """Runs one flow in a fresh browser; True when it passed."""
    started = time.monotonic()
    log = os.path.join(args.artifacts, f"chromedriver-{name}.log") if args.artifacts else None
    try:
        with chromium(log) as driver:
            page = Page(driver, fx["base"])
            page.desktop()
            try:
                FLOWS[name](page, fx, args)
            except UnexpectedAlertPresentException as error:
                # Chromedriver dismisses the alert and fails the next command.
                raise FlowError(
                    f"{page.where()}: a JavaScript alert opened ({error.alert_text!r}): "
                    "markup ran instead of showing as text"
                ) from None
            except Exception:
                save_artifacts(page, args.artifacts, name)
                raise
    except FlowError as error:
        print(f"flow {name} failed: {error}", flush=True)
        return False
    except Exception as error:
        traceback.print_exc()
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"flow {name} failed: {type(error).__name__}: {first}", flush=True)
        return False
    print(f"flow {name} passed ({time.monotonic() - started:.1f} s)", flush=True)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", required=True, help="JSON file ui.sh wrote")
    parser.add_argument("--down", help="HOST:PORT of the node killed, for node-down")
    parser.add_argument("--artifacts", help="directory for logs and failure screenshots")
    parser.add_argument("flows", nargs="+", metavar="FLOW", help=", ".join(FLOWS))
    args = parser.parse_args()
    unknown = [name for name in args.flows if name not in FLOWS]
    if unknown:
        parser.error(f"unknown flows {unknown} (known: {', '.join(FLOWS)})")
    with open(args.fixture, encoding="utf-8") as file:
        fx = json.load(file)
    results = [run(name, fx, args) for name in args.flows]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
