"""Drives Chromium through chromedriver (Selenium) against a gpuctl web UI.

Run by gpuctl/tests/web_ui.rs, which starts the cluster and creates the
objects named below; this script checks what a browser shows:

  1. without a token: only the login page, and the API answers 401;
  2. signed in: the Cluster, Jobs, job, Workflows, workflow graph,
     Endpoints and Control plane pages load without console errors and
     show the test's objects;
  3. live: the job page shows the gated job finish (the script releases it)
     without a reload;
  4. screenshots of each page in --shots.

Every wait is bounded. Exits non-zero, naming the check, on failure.
"""

import argparse
import json
import os
import ssl
import urllib.request
import sys
import time
from urllib.parse import urlparse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

WAIT_S = 60


def fail(msg):
    print("FAILED: " + msg, flush=True)
    sys.exit(1)


def wait(what, fn, limit=WAIT_S):
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # the page is being redrawn
            last = e
        time.sleep(0.1)
    fail("timed out after %ss waiting for %s%s" % (limit, what, " (last error: %s)" % last if last else ""))


def on_login(d):
    return urlparse(d.current_url).path == "/login"


def console_errors(d, page):
    """Fails on any SEVERE browser console entry since the last call."""
    errs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    if errs:
        fail("console errors on the %s page: %s" % (page, json.dumps(errs, indent=1)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--chromedriver", required=True)
    p.add_argument("--shots", required=True)
    p.add_argument("--job", required=True, help="a running job gated on --release")
    p.add_argument("--release", required=True, help="file whose creation lets --job finish")
    p.add_argument("--log-text", required=True, help="what --job's log holds")
    p.add_argument("--log-after-text", required=True, help="what --job writes once released")
    p.add_argument("--done-job", required=True, help="a job that succeeded")
    p.add_argument("--workflow", required=True)
    p.add_argument("--workflow-steps", required=True, help="JSON: step name -> phase")
    p.add_argument("--endpoint", required=True, help="an endpoint scaled to zero, serving linear.onnx")
    p.add_argument("--gateway", required=True, help="the inference gateway's URL")
    p.add_argument("--ca", required=True, help="the cluster's CA certificate (PEM)")
    a = p.parse_args()
    url = a.url.rstrip("/")
    os.makedirs(a.shots, exist_ok=True)

    opts = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900", "--no-first-run", "--disable-extensions"]:
        opts.add_argument(arg)
    # The cluster's certificate is from its own dev CA, which Chromium's
    # store does not hold.
    opts.set_capability("acceptInsecureCerts", True)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=a.chromedriver), options=opts)
    d.set_page_load_timeout(WAIT_S)
    try:
        run(d, a, url)
    finally:
        d.quit()
    print("ok: every page checked", flush=True)


def shot(d, a, name):
    path = os.path.join(a.shots, name + ".png")
    d.save_screenshot(path)
    print("screenshot " + path, flush=True)


def run(d, a, url):
    # 1. Not signed in: the login page only; the API refuses.
    d.get(url + "/")
    wait("the login page", lambda: on_login(d) and d.find_element(By.ID, "login"))
    if d.find_elements(By.ID, "main") or a.job in d.page_source:
        fail("an unauthenticated browser saw more than the login page")
    status = d.execute_async_script(
        "const done = arguments[0]; fetch('/api/jobs').then(r => done(r.status), e => done(String(e)));")
    if status != 401:
        fail("GET /api/jobs without a token answered %s, not 401" % status)
    d.get(url + "/#/jobs")
    wait("the login page for a deep link", lambda: on_login(d))
    d.get_log("browser")  # the refused fetch above logs its 401
    d.find_element(By.ID, "token").send_keys("gpuctl_nothere_0123456789abcdef")
    d.find_element(By.ID, "sign-in").click()
    err = wait("the login error", lambda: d.find_element(By.ID, "login-error"))
    if "not valid" not in err.text and "token" not in err.text:
        fail("unexpected login error: " + err.text)
    d.get_log("browser")  # the refused login answered 401
    shot(d, a, "login")

    # Sign in.
    token = open(a.token_file).read().strip()
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.ID, "sign-in").click()
    wait("the UI after signing in", lambda: d.find_elements(By.ID, "nav"))
    cookie = d.get_cookie("gpuctl_session")
    if not cookie or not cookie.get("httpOnly") or not cookie.get("secure") or cookie.get("sameSite") != "Strict":
        fail("the session cookie is not HttpOnly, Secure and SameSite=Strict: %s" % cookie)
    wait("the live feed", lambda: d.find_element(By.ID, "live").text == "live")

    # 2. Cluster: the node's GPUs as cells, one in use by the running job.
    d.get(url + "/#/cluster")
    wait("the node rows", lambda: d.find_elements(By.CSS_SELECTOR, "#nodes tr[data-node]"))
    cells = d.find_elements(By.CSS_SELECTOR, "#nodes .gpu")
    if not cells:
        fail("no GPU cells on the Cluster page")
    wait("a GPU in use by %s" % a.job,
         lambda: any(int(c.get_attribute("data-used")) > 0 for c in d.find_elements(By.CSS_SELECTOR, "#nodes .gpu")))
    wait("the default queue", lambda: d.find_element(By.CSS_SELECTOR, "#queues tr[data-queue='default']"))
    console_errors(d, "Cluster")
    shot(d, a, "cluster")

    # Jobs: the test's jobs, and the phase filter.
    d.get(url + "/#/jobs")
    wait("job %s in the list" % a.job, lambda: d.find_element(By.CSS_SELECTOR, "#jobs tr[data-job='%s']" % a.job))
    wait("job %s in the list" % a.done_job, lambda: d.find_element(By.CSS_SELECTOR, "#jobs tr[data-job='%s']" % a.done_job))
    shot(d, a, "jobs")
    d.find_element(By.CSS_SELECTOR, "select[data-filter='phase'] option[value='Running']").click()
    wait("only running jobs after filtering",
         lambda: "phase=Running" in d.current_url and
         all(r.get_attribute("data-phase") == "Running" for r in d.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")) and
         not d.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job='%s']" % a.done_job))
    console_errors(d, "Jobs")

    # The running job's page, its log, then it finishes live.
    d.get(url + "/#/jobs/%s?log=0" % a.job)
    wait("job %s running" % a.job, lambda: d.find_element(By.ID, "job-phase").get_attribute("data-phase") == "Running")
    wait("the job's log", lambda: a.log_text in d.find_element(By.ID, "log").text)
    if d.find_element(By.ID, "log").get_attribute("data-state") != "streaming":
        fail("the running job's log is not followed: data-state=%s" % d.find_element(By.ID, "log").get_attribute("data-state"))
    d.execute_script("window.__notReloaded = true; document.getElementById('log').__kept = true;")
    open(a.release, "w").close()
    wait("job %s to show Succeeded without a reload" % a.job,
         lambda: d.find_element(By.ID, "job-phase").get_attribute("data-phase") == "Succeeded")
    # The log streamed on: what the task wrote after the page opened, in the same element, then its end.
    wait("the log's new lines streamed in",
         lambda: a.log_after_text in d.find_element(By.ID, "log").text and
         d.find_element(By.ID, "log").get_attribute("data-state") == "ended")
    if not d.execute_script("return document.getElementById('log').__kept === true;"):
        fail("the log element was replaced (read again) instead of streamed")
    if d.find_element(By.ID, "log").text.count(a.log_text) != 1:
        fail("the streamed log repeats itself: " + d.find_element(By.ID, "log").text)
    if not d.execute_script("return window.__notReloaded === true;"):
        fail("the job page reloaded instead of updating")
    task = d.find_element(By.CSS_SELECTOR, "#tasks tr[data-task='0']")
    if task.get_attribute("data-phase") != "Succeeded" or "dev-node" not in task.text:
        fail("task 0 does not show Succeeded on its node: " + task.text)
    console_errors(d, "job")
    shot(d, a, "job")

    # Workflows: the list, then the graph with one box per step.
    d.get(url + "/#/workflows")
    wait("workflow %s in the list" % a.workflow,
         lambda: d.find_element(By.CSS_SELECTOR, "#workflows tr[data-workflow='%s']" % a.workflow))
    console_errors(d, "Workflows")
    d.get(url + "/#/workflows/" + a.workflow)
    want = json.loads(a.workflow_steps)

    def boxes():
        got = {b.get_attribute("data-step"): b.get_attribute("data-phase")
               for b in d.find_elements(By.CSS_SELECTOR, "#dag g.step")}
        n = len(d.find_elements(By.CSS_SELECTOR, "#dag g.step"))
        return got if got == want and n == len(want) else None
    wait("the graph's boxes %s" % want, boxes)
    first = d.find_elements(By.CSS_SELECTOR, "#dag g.step")[0]
    first.click()
    wait("the step panel", lambda: d.find_element(By.ID, "step"))
    # Its inputs, its output (the script's result) and its log.
    wait("the step's input parameter",
         lambda: d.find_element(By.CSS_SELECTOR, "#step dd[data-input='msg']").text == "prepared")
    if "step-output-prepared" not in d.find_element(By.ID, "step").text:
        fail("the step panel lacks the step's result: " + d.find_element(By.ID, "step").text)
    wait("the step's log", lambda: "step-output-prepared" in d.find_element(By.ID, "log").text and
         d.find_element(By.ID, "log").get_attribute("data-state") == "ended")
    console_errors(d, "workflow")
    shot(d, a, "workflow")

    # Endpoints.
    d.get(url + "/#/endpoints")
    sel = "#endpoints tr[data-endpoint='%s']" % a.endpoint

    def replicas(ready, desired):
        r = d.find_element(By.CSS_SELECTOR, sel)
        return (r.get_attribute("data-ready"), r.get_attribute("data-desired")) == (str(ready), str(desired)) and \
            ("%d / %d" % (ready, desired)) in r.text
    wait("endpoint %s at 0/0 replicas" % a.endpoint, lambda: replicas(0, 0))
    shot(d, a, "endpoints-idle")
    d.execute_script("window.__notReloaded = true;")
    # One request wakes it: the gateway asks for a replica.
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                   "data": [1, 1, 1, 1, 0, -1]}]}).encode()
    req = urllib.request.Request(a.gateway.rstrip("/") + "/v2/models/%s/infer" % a.endpoint, data=body,
                                 headers={"content-type": "application/json"}, method="POST")
    ctx = ssl.create_default_context(cafile=a.ca)
    with urllib.request.urlopen(req, timeout=WAIT_S, context=ctx) as r:
        if r.status != 200:
            fail("the inference request answered %s" % r.status)
    wait("endpoint %s scaled to 1/1 without a reload" % a.endpoint, lambda: replicas(1, 1))
    if not d.execute_script("return window.__notReloaded === true;"):
        fail("the Endpoints page reloaded instead of updating")
    # More traffic: the charts show requests, latency and the replica, with the cold start marked.
    for _ in range(20):
        with urllib.request.urlopen(req, timeout=WAIT_S, context=ctx) as r:
            r.read()
    charts = "[data-endpoint-charts='%s']" % a.endpoint

    def charted():
        # Traffic keeps flowing while the page is watched: a sample is taken
        # once a second, so a burst that ended between two samples is not
        # enough to chart.
        for _ in range(5):
            with urllib.request.urlopen(req, timeout=WAIT_S, context=ctx) as r:
                r.read()
        hist = d.execute_async_script(
            "const name = arguments[0], done = arguments[arguments.length - 1];"
            "fetch('/api/endpoints').then(r => r.json())"
            ".then(es => done((es.find(e => e.metadata.name === name) || {}).history), e => done(null));",
            a.endpoint)
        return hist and any(p[1] > 0 for p in hist) and any(p[3] > 0 for p in hist) and \
            any(p[4] >= 1 for p in hist) and \
            d.find_elements(By.CSS_SELECTOR, charts + " svg[data-chart='replicas'] path.s-ready") and \
            d.find_elements(By.CSS_SELECTOR, charts + " svg[data-chart='latency'] path.s-p99") and \
            d.find_elements(By.CSS_SELECTOR, charts + " svg[data-chart='rps'] path.m-cold") and \
            all(float(d.find_element(By.CSS_SELECTOR, charts + " svg[data-chart='%s']" % c).get_attribute("data-max")) > 0
                for c in ("rps", "latency", "replicas"))
    wait("charts of requests/s, latency and replicas with the cold start", charted)
    console_errors(d, "Endpoints")
    shot(d, a, "endpoints")

    # Control plane.
    d.get(url + "/#/control")
    wait("the leader", lambda: d.find_element(By.ID, "leader").text not in ("", "none"))
    wait("a replica row", lambda: d.find_elements(By.CSS_SELECTOR, "#replicas tr[data-replica]"))
    console_errors(d, "Control plane")
    shot(d, a, "control")

    # Signing out ends the session.
    d.find_element(By.CSS_SELECTOR, "header form button").click()
    wait("the login page after signing out", lambda: on_login(d))
    d.get(url + "/#/cluster")
    wait("the login page again", lambda: on_login(d))
    d.get_log("browser")


if __name__ == "__main__":
    main()
