#!/usr/bin/env python3
"""The console in a real browser (issue 15): Debian's Chromium driven by Selenium.

Usage: console-browser-test.py BASE_URL FLIGHTS_CSV_GZ [SCREENSHOT_DIR]

Signs in; uploads flights.csv (decompressed) through the tus page and sees the progress reach
100%; creates a pipeline over it, runs it, watches the progress bar move and the result table
appear; receives a notification live (published over the API) and sees the unread badge change;
retries a dead-lettered job; signs out and finds the refresh cookie gone. No browser console
errors and no CSP violations are allowed anywhere. A screenshot of every page goes to
SCREENSHOT_DIR (default: $CAIRN_CONSOLE_SCREENSHOTS or a new temporary folder), printed first.
Every wait has a deadline; nothing sleeps and hopes.
"""
import gzip
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE = sys.argv[1].rstrip("/")
FLIGHTS_GZ = sys.argv[2]
SHOTS = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("CAIRN_CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="cairn-console-shots-")
os.makedirs(SHOTS, exist_ok=True)
print(f"screenshots: {SHOTS}", flush=True)

EMAIL = f"console-{secrets.token_hex(4)}@example.com"
PASSWORD = "console " + secrets.token_urlsafe(12)
CSP_LISTENER = """
window.__cairnCSP = [];
document.addEventListener('securitypolicyviolation', (e) => window.__cairnCSP.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def call(method, path, body=None, token=None, headers=None):
    """One API request; returns (status, parsed JSON body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, (json.loads(text) if text else None)


def eventually(what, check, timeout=60):
    """Re-checks `check` until it returns a truthy value or `timeout` seconds pass."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


# The account and a dead-lettered job, through the API (a noop job told to fail permanently
# is discarded at once: a dead letter).
status, _ = call("POST", "/auth/register", {"email": EMAIL, "password": PASSWORD, "name": "Console Tester", "tenantName": "Console"})
assert status == 201, status
status, tokens = call("POST", "/auth/login", {"email": EMAIL, "password": PASSWORD})
assert status == 200, status
API_TOKEN = tokens["accessToken"]
status, me = call("GET", "/users/me", token=API_TOKEN)
status, dead = call("POST", "/jobs", {"kind": "noop", "args": {"fail": "permanent"}, "maxAttempts": 1}, token=API_TOKEN)
assert status == 201, (status, dead)
eventually("the failing job's dead letter", lambda: call("GET", f"/jobs/{dead['id']}", token=API_TOKEN)[1]["state"] == "discarded")

work = tempfile.mkdtemp(prefix="cairn-console-")
flights = os.path.join(work, "flights.csv")
with gzip.open(FLIGHTS_GZ, "rb") as source, open(flights, "wb") as target:
    shutil.copyfileobj(source, target)

options = webdriver.ChromeOptions()
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--disable-gpu"):
    options.add_argument(argument)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_LISTENER})
driver.set_script_timeout(90)
wait = WebDriverWait(driver, 120, ignored_exceptions=(StaleElementReferenceException,))
problems = []


def collect():
    """Browser console errors and CSP violations so far (the log is drained by each read)."""
    for entry in driver.get_log("browser"):
        if entry["level"] in ("SEVERE", "ERROR") or "Content Security Policy" in entry["message"]:
            problems.append(f"console: {entry['message']}")
    for violation in driver.execute_script("return window.__cairnCSP || []") or []:
        problems.append(f"CSP violation: {violation}")
    driver.execute_script("window.__cairnCSP = []")


def shot(name):
    """A full-page screenshot: the window grows to the page's height for it."""
    print(f"step: {name}", flush=True)
    collect()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(1000, min(height, 6000)))
    driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))
    driver.set_window_size(1280, 1000)


def go(section, ready):
    print(f"page: {section}", flush=True)
    driver.execute_script("location.hash = arguments[0]", f"#/{section}")
    wait.until(ready)


def refresh_cookie():
    cookies = driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
    return next((cookie for cookie in cookies if cookie["name"] == "cairn_refresh"), None)


try:
    # A browser opening the server's root lands on the console's sign-in page.
    driver.get(BASE + "/")
    wait.until(EC.visibility_of_element_located((By.ID, "signin-form")))
    assert "/console/" in driver.current_url, driver.current_url
    shot("01-sign-in")
    driver.find_element(By.ID, "signin-email").send_keys(EMAIL)
    driver.find_element(By.ID, "signin-password").send_keys(PASSWORD)
    driver.find_element(By.ID, "signin-submit").click()
    wait.until(EC.visibility_of_element_located((By.ID, "task-form")))
    cookie = refresh_cookie()
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/auth", cookie
    assert driver.execute_script("return document.cookie").find("cairn_refresh") < 0, "page script can read the refresh cookie"
    form = driver.find_element(By.ID, "task-form")
    form.find_element(By.NAME, "title").send_keys("Try the console")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "main"), "Try the console"))
    # The header names who is signed in.
    wait.until(EC.text_to_be_present_in_element((By.ID, "who-name"), EMAIL))
    # "Skip to content" moves focus to the main area and stays on the page (no "Not found").
    driver.execute_script("document.querySelector('a.skip').focus()")
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait.until(lambda d: d.execute_script("return document.activeElement && document.activeElement.id") == "main")
    assert driver.find_element(By.CSS_SELECTOR, "main h1").text == "Tasks", driver.find_element(By.CSS_SELECTOR, "main h1").text
    # A long unbroken title wraps inside the table instead of widening the page.
    form = driver.find_element(By.ID, "task-form")
    form.find_element(By.NAME, "title").send_keys("x" * 190)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "main"), "x" * 190))
    overflow = driver.execute_script("const wrap = document.querySelector('#main .table-wrap'); return wrap.scrollWidth - wrap.clientWidth")
    assert overflow <= 0, f"a long task title widens the table by {overflow}px"
    # Deleting asks first: Cancel keeps the task, confirming deletes it.
    delete = lambda: next(row for row in driver.find_elements(By.CSS_SELECTOR, "#main tbody tr") if "x" * 190 in row.text).find_element(By.CSS_SELECTOR, "button.task-delete")
    delete().click()
    wait.until(EC.visibility_of_element_located((By.ID, "confirm-dialog")))
    driver.find_element(By.ID, "confirm-cancel").click()
    wait.until(EC.invisibility_of_element_located((By.ID, "confirm-dialog")))
    assert "x" * 190 in driver.find_element(By.ID, "main").text, "Cancel deleted the task"
    delete().click()
    wait.until(EC.element_to_be_clickable((By.ID, "confirm-ok"))).click()
    wait.until(lambda d: "x" * 190 not in d.find_element(By.ID, "main").text)
    shot("02-tasks")

    # A reload keeps the session: the HttpOnly cookie is traded for a new access token.
    driver.refresh()
    wait.until(EC.visibility_of_element_located((By.ID, "task-form")))

    # Files: the tus upload of flights.csv, to 100%.
    go("files", EC.presence_of_element_located((By.ID, "file-input")))
    shot("03-files")
    # Paused as soon as some bytes are in, then the page is reloaded: choosing the same file
    # again resumes at the server's offset (tus HEAD) instead of starting over.
    driver.find_element(By.ID, "file-input").send_keys(flights)
    paused = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const started = Date.now();
        const poll = () => {
          const bar = document.getElementById('upload-progress');
          if (bar && bar.value >= 1 && bar.value < 100) { document.getElementById('upload-pause').click(); done(bar.value); }
          else if (Date.now() - started > 60000) done(-1); else setTimeout(poll, 5);
        };
        poll();""")
    assert 1 <= paused < 100, f"the upload could not be paused mid-way ({paused})"
    wait.until(EC.text_to_be_present_in_element((By.ID, "upload-status"), "Paused."))
    shot("03b-files-paused")
    driver.refresh()
    wait.until(EC.presence_of_element_located((By.ID, "file-input")))
    driver.find_element(By.ID, "file-input").send_keys(flights)
    WebDriverWait(driver, 300, ignored_exceptions=(StaleElementReferenceException,)).until(EC.text_to_be_present_in_element((By.ID, "upload-status"), "Uploaded flights.csv"))
    percent = driver.find_element(By.ID, "upload-percent").text
    assert percent.startswith("100%"), percent
    assert driver.find_element(By.ID, "upload-progress").get_attribute("value") == "100"
    resumed = int(driver.find_element(By.ID, "upload-status").get_attribute("data-resumed-from") or 0)
    assert resumed > 0, "the second choice of the file started over instead of resuming"
    wait.until(EC.text_to_be_present_in_element((By.ID, "file-list"), "flights.csv"))
    names = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#file-list tbody tr td:first-child")]
    assert names.count("flights.csv") == 1, names
    shot("04-files-uploaded")

    # Pipelines: create one over the file, run it, watch the bar, see the result table.
    go("pipelines", EC.presence_of_element_located((By.ID, "pipeline-create")))
    shot("05-pipelines")
    driver.find_element(By.ID, "pipeline-name").send_keys("Delays by origin")
    Select(driver.find_element(By.ID, "pipeline-format")).select_by_value("csv")
    sql = driver.find_element(By.ID, "pipeline-sql")
    sql.clear()
    sql.send_keys("SELECT origin, count(*) AS flights, round(avg(dep_delay), 2) AS mean_delay FROM input GROUP BY origin ORDER BY flights DESC")
    driver.find_element(By.ID, "pipeline-create-submit").click()
    wait.until(EC.presence_of_element_located((By.ID, "run-submit")))
    pipeline_page = driver.execute_script("return location.hash")
    wait.until(EC.text_to_be_present_in_element((By.ID, "pipeline-columns"), "dep_delay"))
    driver.find_element(By.ID, "run-submit").click()
    seen = set()

    def run_finished():
        value = driver.find_element(By.ID, "run-progress").get_attribute("value")
        seen.add(float(value or 0))
        return driver.find_elements(By.CSS_SELECTOR, "#result-table tbody tr") or driver.find_elements(By.ID, "run-failure")

    eventually("the pipeline run's result table", run_finished, timeout=300)
    assert not driver.find_elements(By.ID, "run-failure"), driver.find_element(By.ID, "run-failure").text
    rows = driver.find_elements(By.CSS_SELECTOR, "#result-table tbody tr")
    assert len(rows) >= 3 and "EWR" in driver.find_element(By.ID, "result-table").text, len(rows)
    assert max(seen) == 1.0, seen
    assert any(0 < value < 1 for value in seen), f"the progress bar did not move between 0 and 1: {sorted(seen)}"
    # A schedule's next five runs, computed as the cron expression is typed.
    driver.find_element(By.ID, "pipeline-cron").send_keys("0 6 * * 1-5")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#next-runs li time")) == 5)
    assert all("T06:00:00.000Z" in item.get_attribute("datetime") for item in driver.find_elements(By.CSS_SELECTOR, "#next-runs li time"))
    assert "result rows" in driver.find_element(By.ID, "run-summary").text, driver.find_element(By.ID, "run-summary").text
    # The finished run is listed under Recent runs without a reload.
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recent-runs tbody tr")) >= 1)
    shot("06-pipeline-run")
    # Reopened, the page offers the last run's input again, not the run's newer output file.
    driver.refresh()
    wait.until(EC.text_to_be_present_in_element((By.ID, "pipeline-columns"), "dep_delay"))
    chosen = Select(driver.find_element(By.ID, "run-file")).first_selected_option.text
    assert chosen.startswith("flights.csv"), chosen

    # Notifications: one published over the API arrives live and changes the badge.
    go("tasks", EC.visibility_of_element_located((By.ID, "task-form")))
    badge = driver.find_element(By.ID, "unread-badge")
    before = int(badge.text)
    status, _ = call("POST", "/notifications", {"userIds": [me["id"]], "type": "message", "title": "Hello from the API"}, token=API_TOKEN)
    assert status == 202, status
    eventually("the unread badge's change", lambda: int(driver.find_element(By.ID, "unread-badge").text) == before + 1, timeout=30)
    go("notifications", EC.text_to_be_present_in_element((By.ID, "inbox"), "Hello from the API"))
    shot("07-notifications")

    # Jobs: the dead letter is listed and retried.
    go("jobs", EC.presence_of_element_located((By.ID, "job-state")))
    Select(driver.find_element(By.ID, "job-state")).select_by_value("discarded")
    retry = f"button.retry[data-job='{dead['id']}']"
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, retry)))
    shot("08-jobs-dead-letters")
    # The list re-renders every 2 s: find and click in one step, so the button is never stale.
    eventually("a click on Retry", lambda: driver.execute_script("const b = document.querySelector(arguments[0]); if (b) b.click(); return Boolean(b);", retry))
    wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "Job queued again."))
    # Retried, it runs once more and fails again: a second attempt in its error history.
    eventually("the retried job's second attempt", lambda: len(call("GET", f"/jobs/{dead['id']}", token=API_TOKEN)[1]["errors"]) >= 2)

    # The remaining pages, for their screenshots (and console errors).
    go("catalog", EC.presence_of_element_located((By.CSS_SELECTOR, "form[role=search]")))
    shot("09-catalog")
    go("admin", EC.text_to_be_present_in_element((By.ID, "main"), "Service tokens"))
    # A new service token is listed at once, and its secret is shown once beside the list.
    driver.find_element(By.ID, "token-name").send_keys("browser-token")
    driver.find_element(By.ID, "token-create").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "secret-once"), "not shown again"))
    assert "browser-token" in driver.find_element(By.ID, "main").text, "the new token is not in the list"
    # The signed-in user's own row cannot be removed.
    own = next(row for row in driver.find_elements(By.CSS_SELECTOR, "#main tbody tr") if EMAIL in row.text)
    assert not own.find_elements(By.XPATH, ".//button[normalize-space()='Remove']"), "the own user row offers Remove"
    shot("10-admin")
    go("operators", EC.presence_of_element_located((By.CSS_SELECTOR, "#charts svg.chart")))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#routes table tbody tr")) > 0)
    # Three samples draw a line of two segments.
    wait.until(lambda d: any(len((line.get_attribute("points") or "").split()) >= 2 for line in d.find_elements(By.CSS_SELECTOR, "#charts polyline")))
    shot("11-operators")
    go("account", EC.text_to_be_present_in_element((By.ID, "main"), "Notification preferences"))
    shot("12-account")
    # Dark mode and a phone's width.
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    go("pipelines", EC.presence_of_element_located((By.ID, "pipeline-create")))
    shot("13-dark-pipelines")
    driver.set_window_size(390, 844)
    # On a phone a pipeline's page (SQL editor, columns, results) fits the width and the header stays short.
    wait.until(lambda d: d.execute_script("return window.innerWidth") <= 400)
    driver.execute_script("location.hash = arguments[0]", pipeline_page)
    wait.until(EC.presence_of_element_located((By.ID, "run-submit")))
    overflow = driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the pipelines page is {overflow}px wider than a phone"
    header = driver.execute_script("return document.querySelector('header.top').getBoundingClientRect().height")
    assert header <= 120, f"the header takes {header}px of a phone's height"
    collect()
    driver.save_screenshot(os.path.join(SHOTS, "13b-dark-phone-pipelines.png"))
    go("jobs", EC.presence_of_element_located((By.ID, "job-state")))
    collect()
    driver.save_screenshot(os.path.join(SHOTS, "14-dark-phone-jobs.png"))
    driver.set_window_size(1280, 1000)
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

    # Sign out: the session ends and the refresh cookie is gone.
    assert refresh_cookie() is not None
    driver.find_element(By.ID, "sign-out").click()
    wait.until(EC.visibility_of_element_located((By.ID, "signin-form")))
    eventually("the refresh cookie's removal", lambda: refresh_cookie() is None, timeout=10)
    driver.refresh()
    wait.until(EC.visibility_of_element_located((By.ID, "signin-form")))
    shot("15-signed-out")
    # A deep link opened signed out is where signing in lands.
    driver.get(BASE + "/console/#/files")
    wait.until(EC.visibility_of_element_located((By.ID, "signin-form")))
    driver.find_element(By.ID, "signin-email").send_keys(EMAIL)
    driver.find_element(By.ID, "signin-password").send_keys(PASSWORD)
    driver.find_element(By.ID, "signin-submit").click()
    wait.until(EC.presence_of_element_located((By.ID, "file-input")))
    assert driver.execute_script("return location.hash") == "#/files", driver.execute_script("return location.hash")

    collect()
    assert not problems, "\n".join(problems)
    print("console browser test passed", flush=True)
except Exception as error:
    # The step that failed, in one line, before the driver's long stack trace.
    print(f"FAILED: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", flush=True)
    shot("failure")
    raise
finally:
    driver.quit()
    shutil.rmtree(work, ignore_errors=True)
