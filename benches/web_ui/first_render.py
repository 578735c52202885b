"""Size and time to first render of the web UI's pages, in headless Chromium.

    python3 benches/web_ui/first_render.py --url https://127.0.0.1:PORT/ \
        --token-file STATE/admin.token [--chromedriver /usr/bin/chromedriver] [--runs 5]

Signs in, then for each page loads it afresh RUNS times and reports the median
of: the time from navigation start until the page's view is drawn (the
script's `main.dataset.drawnAt`, in the page's own clock), and the bytes of
the HTML, script, style sheet and the API answers it read: as the page sees
them (decoded) and on the wire (encoded: gzipped where the server did).
"""

import argparse
import statistics
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

PAGES = ["cluster", "jobs", "workflows", "endpoints", "control"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    url = a.url.rstrip("/")
    opts = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900"]:
        opts.add_argument(arg)
    opts.set_capability("acceptInsecureCerts", True)
    d = webdriver.Chrome(service=Service(executable_path=a.chromedriver), options=opts)
    d.set_page_load_timeout(120)
    try:
        d.get(url + "/login")
        d.find_element(By.ID, "token").send_keys(open(a.token_file).read().strip())
        d.find_element(By.ID, "sign-in").click()
        print("| page | first render (median of %d) | bytes: page + script + style | bytes: API | on the wire: page + script + style | on the wire: API |" % a.runs)
        print("|---|---|---|---|---|---|")
        for page in PAGES:
            times, static, api, static_z, api_z = [], [], [], [], []
            for _ in range(a.runs):
                d.get("about:blank")
                d.get(url + "/#/" + page)
                deadline = time.monotonic() + 120
                drawn = None
                while drawn is None and time.monotonic() < deadline:
                    drawn = d.execute_script("return document.getElementById('main') && document.getElementById('main').dataset.drawnAt || null;")
                    if drawn is None:
                        time.sleep(0.02)
                if drawn is None:
                    raise SystemExit("page %s was not drawn within 120 s" % page)
                times.append(float(drawn))
                entries = d.execute_script(
                    "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
                    ".map(e => [e.name, e.decodedBodySize || 0, e.encodedBodySize || 0]);")
                static.append(sum(n for name, n, _ in entries if "/api/" not in name))
                api.append(sum(n for name, n, _ in entries if "/api/" in name and "/api/events" not in name))
                static_z.append(sum(z for name, _, z in entries if "/api/" not in name))
                api_z.append(sum(z for name, _, z in entries if "/api/" in name and "/api/events" not in name))
            print("| %s | %.0f ms | %d | %d | %d | %d |" % (
                page, statistics.median(times), statistics.median(static), statistics.median(api),
                statistics.median(static_z), statistics.median(api_z)))
    finally:
        d.quit()


if __name__ == "__main__":
    main()
