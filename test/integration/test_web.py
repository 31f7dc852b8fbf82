"""The web app (issue 6): its embedded files as served by the gateway (types, caching, ETag/304,
Content-Security-Policy), and the app itself in headless Chromium (Debian's /usr/bin/chromium,
driven by playwright-core from test/browser) against chance + logger + gateway as separate
processes: a player signs up, claims, sees the code, the balance and the history row; an admin
generates a batch and finds it in the categories and the audit log; a player cannot reach admin
pages.  Screenshots (PNG) of each main screen, desktop and phone, go to
$CHANCED_TEST_OUTPUT/screenshots/; each scenario's log to $CHANCED_TEST_OUTPUT/browser/."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gwclient import API, Stack, gw_stack, request  # noqa: F401
from loggerkit import store  # noqa: F401

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = ROOT / "test" / "browser"
CHROMIUM = os.environ.get("CHANCED_CHROMIUM", "/usr/bin/chromium")
STRICT = os.environ.get("CHANCED_TEST_STRICT") == "1"
ADMIN = ("root", "admin password 1")  # what Stack.admin() creates


def need_browser():
    missing = []
    if not shutil.which("node"):
        missing.append("node (Debian nodejs)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("test/browser/node_modules (test/deps.sh runs `npm ci` there)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append("%s (Debian chromium)" % CHROMIUM)
    if missing:
        msg = "the browser tests need: " + ", ".join(missing)
        if STRICT:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def run_browser(scenario, stack, output_dir, timeout=300):
    """Runs `node test/browser/run.mjs SCENARIO` against the stack; fails with its log."""
    need_browser()
    stack.admin()  # `chanced admin create-user --admin` on the test database
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
    env.update({
        "CHANCED_WEB_URL": "http://127.0.0.1:%d" % stack.port,
        "CHANCED_WEB_ADMIN_USER": ADMIN[0],
        "CHANCED_WEB_ADMIN_PASSWORD": ADMIN[1],
        "CHANCED_TEST_OUTPUT": str(output_dir),
        "CHANCED_CHROMIUM": CHROMIUM,
        # the player scenario pauses chance (SIGSTOP/SIGCONT) to see a pending claim (202)
        "CHANCED_WEB_CHANCE_PID": str(stack.chance.pid),
    })
    logdir = output_dir / "browser"
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / ("%s.log" % scenario)
    try:
        p = subprocess.run(["node", str(BROWSER_DIR / "run.mjs"), scenario], cwd=str(BROWSER_DIR),
                           env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
        out, rc = p.stdout, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode("utf-8", "replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or ""), "timeout after %d s" % timeout
    log.write_text(out)
    if rc != 0:
        pytest.fail("browser scenario %r failed (%s); log %s, screenshots in %s:\n%s"
                    % (scenario, rc, log, output_dir / "screenshots", out[-6000:]), pytrace=False)
    return out


@pytest.fixture
def web_stack(chanced, chanced_bin, fresh_postgres_url, redis_client, store):  # noqa: F811
    """gw_stack with a logger store of this test's own: chance's event ids (batch.generated:1)
    start again with each test's fresh Redis, and the logger keeps the first of equal ids."""
    url, _ = store

    def start(role, **keys):
        if role == "logger":
            keys.setdefault("mongo_url", url)
        return chanced(role, **keys)
    return Stack(start, chanced_bin, fresh_postgres_url)


# --- the files, over plain HTTP ------------------------------------------------------------

def one_header(resp, name):
    values = [v for k, v in resp.headers["_all"] if k.lower() == name.lower()]
    assert len(values) == 1, (name, values)
    return values[0]


def test_web_assets_are_served_safely(gw_stack):
    s = gw_stack
    index = request(s.port, "GET", "/")
    assert index.status == 200 and index.headers["content-type"] == "text/html; charset=utf-8"
    csp = one_header(index, "Content-Security-Policy")
    directives = dict((d.strip().split(" ", 1) + [""])[:2] for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert one_header(index, "X-Content-Type-Options") == "nosniff"
    assert one_header(index, "Referrer-Policy") == "no-referrer"
    assert one_header(index, "Cache-Control") == "no-cache"
    etag = one_header(index, "ETag")
    assert re.fullmatch(r'"[0-9a-f]{16}"', etag)
    # no inline script or style: everything the page runs comes from /assets/
    assert not re.search(r"<script(?![^>]*\bsrc=)", index.body)
    assert " style=" not in index.body and "<style" not in index.body

    # conditional GET
    again = request(s.port, "GET", "/", headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == "" and one_header(again, "ETag") == etag
    assert "content-length" not in again.headers or again.headers["content-length"] == "0"
    weak = request(s.port, "GET", "/", headers={"If-None-Match": 'W/"x", W/%s' % etag})
    assert weak.status == 304

    # every file the page loads, and every module those import, with the build in the URL
    build = re.search(r'/assets/app\.js\?v=([0-9a-f]{16})"', index.body).group(1)
    seen, todo = set(), re.findall(r'(?:href|src)="(/assets/[^"]+)"', index.body)
    assert {"/assets/app.js?v=" + build, "/assets/app.css?v=" + build} <= set(todo)
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".svg": "image/svg+xml"}
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        assert url.endswith("?v=" + build), url  # one URL per module, or it would load twice
        r = request(s.port, "GET", url)
        assert r.status == 200, url
        ext = re.search(r"\.[a-z]+(?=\?)", url).group(0)
        assert r.headers["content-type"] == types[ext], url
        assert one_header(r, "Cache-Control") == "public, max-age=31536000, immutable", url
        assert "unsafe-inline" not in one_header(r, "Content-Security-Policy")
        if ext == ".js":
            assert "innerHTML" not in r.body and "eval(" not in r.body, url
            todo += ["/assets/" + m for m in re.findall(r"from '\./([^']+)'", r.body)]
    assert len(seen) >= 8

    # without the build (or with another) the same file must be revalidated
    plain = request(s.port, "GET", "/assets/app.js")
    assert plain.status == 200 and one_header(plain, "Cache-Control") == "no-cache"
    old = request(s.port, "GET", "/assets/app.js?v=0000000000000000")
    assert one_header(old, "Cache-Control") == "no-cache"

    # client-side routes get the page; files, the API and other methods do not
    for path in ("/signin", "/wallet", "/admin/logs", "/admin/users/12"):
        r = request(s.port, "GET", path)
        assert r.status == 200 and one_header(r, "ETag") == etag, path
    for path in ("/assets/nope.js", "/nope.txt", "/assets/%2e%2e/Makefile", "/%2e%2e/x"):
        r = request(s.port, "GET", path)
        assert r.status == 404 and r.headers["content-type"] == "application/problem+json", path
    for path in ("/assets/../Makefile", "/assets/./app.js", "//etc/passwd"):
        r = request(s.port, "GET", path)  # never a file from the disk: only the embedded ones
        assert r.status in (200, 404) and "non-recursive Makefile" not in r.body, path
        assert "root:x:0:0" not in r.body, path
    r = request(s.port, "GET", API + "/nope")
    assert r.status == 404 and r.code == "route_not_found"
    r = request(s.port, "POST", "/wallet", body={})
    assert r.status == 404 and r.headers["content-type"] == "application/problem+json"
    # the API keeps its own, stricter policy
    me = request(s.port, "GET", API + "/me")
    assert me.status == 401 and "default-src 'none'" in one_header(me, "Content-Security-Policy")
    assert one_header(me, "Cache-Control") == "no-store"


def test_session_cookie_and_csrf_for_the_browser(gw_stack):
    """What the app relies on: the HttpOnly SameSite session cookie, a readable CSRF cookie, and
    state-changing requests refused without the X-CSRF-Token header."""
    s = gw_stack
    r = request(s.port, "POST", API + "/auth/signup", {"username": "webby", "password": "a long password"})
    assert r.status == 201
    cookies = {c.split("=", 1)[0]: c for c in r.set_cookies}
    session, csrf = cookies["chanced_session"], cookies["chanced_csrf"]
    assert "HttpOnly" in session and "SameSite=Strict" in session
    assert "HttpOnly" not in csrf  # the page reads it to send the header
    token = session.split("=", 1)[1].split(";")[0]
    csrf_value = csrf.split("=", 1)[1].split(";")[0]
    jar = {"Cookie": "chanced_session=%s; chanced_csrf=%s" % (token, csrf_value)}
    assert request(s.port, "GET", API + "/me", headers=jar).status == 200
    refused = request(s.port, "POST", API + "/auth/logout", headers=jar)
    assert refused.status == 403 and refused.code == "csrf_failed"
    ok = request(s.port, "POST", API + "/auth/logout", headers={**jar, "X-CSRF-Token": csrf_value})
    assert ok.status == 204


# --- the app, in Chromium ------------------------------------------------------------------

@pytest.mark.slow
def test_player_signs_up_claims_and_sees_code_balance_history(web_stack, output_dir):
    run_browser("player", web_stack, output_dir)


@pytest.mark.slow
def test_admin_generates_a_batch_and_finds_it(web_stack, output_dir):
    run_browser("admin", web_stack, output_dir)


@pytest.mark.slow
def test_player_cannot_reach_admin_pages(web_stack, output_dir):
    run_browser("denied", web_stack, output_dir)
