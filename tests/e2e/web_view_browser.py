# The web view in a real headless browser (Debian's chromium, through chromedriver), against a
# running test: run by crates/cli/tests/e2e/web_view.rs with the page's URL, the file that
# lets the test script go on, where to save a screenshot of the page, and the machines' names.
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

url, go, screenshot, *names = sys.argv[1:]
LIMIT = 90.0


def wait(what: str, check, limit: float = LIMIT):
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            sys.exit(f"web view: {what} did not happen in {limit} s")
        time.sleep(0.2)


# The server answers only requests addressed to 127.0.0.1 or localhost (no DNS rebinding).
request = urllib.request.Request(url + "state", headers={"Host": "rebound.example"})
try:
    urllib.request.urlopen(request, timeout=10)
    sys.exit("web view: a request for another host was answered")
except urllib.error.HTTPError as e:
    assert e.code == 403, e.code

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,900"]:
    options.add_argument(argument)
browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    browser.get(url)

    # Every machine's screen: noVNC connected through ntd's proxy and drew something.
    lit_pixels = """
        const card = document.querySelector(`[data-machine="${arguments[0]}"]`);
        if (!card || card.dataset.connected !== "true") return 0;
        const canvas = card.querySelector("canvas");
        if (!canvas || canvas.width === 0) return 0;
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let lit = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 200) lit++;
        return lit;
    """
    for name in names:
        lit = wait(f"{name}'s screen", lambda: browser.execute_script(lit_pixels, name))
        print(f"web view: {name}'s screen has {lit} lit pixels")
        card_input = browser.execute_script(f'return document.querySelector(`[data-machine="{name}"]`).dataset.input')
        assert card_input == "off", f"{name}'s input is {card_input!r} before the user asked for it"

    # The progress: the subtest, the machine and what it waits for, with its time.
    progress = lambda: browser.find_element("id", "progress").text
    wait("the progress line", lambda: "subtest: watched › alpha: waiting for the browser (" in progress())
    print(f"web view: progress {progress()!r}")
    browser.save_screenshot(screenshot)

    # Let the test go on to its failure: the page lists the artifacts and the outcome.
    Path(go).touch()
    figures = lambda: [f.get_attribute("data-file") for f in browser.find_elements("css selector", "#artifact-list figure")]
    wait("the failure artifacts", lambda: "alpha-command-failed-screen.png" in figures(), 60)
    wait("the outcome", lambda: browser.find_element("id", "outcome").get_attribute("data-outcome") == "failed", 60)
    print(f"web view: artifacts {figures()}")
finally:
    browser.quit()
