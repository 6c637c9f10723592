"""Screenshots of the dashboard's main pages for the README: `python docs/screenshots.py URL OUT_DIR
NAME=PATH ...` (headless Debian Chromium, as the tests use). E.g. after `make demo` and `peftlab ui`:
    python docs/screenshots.py http://localhost:7860 docs/img runs=/ \
        "compare=/compare?run=demo-sst2-minilm/full&run=demo-sst2-minilm/lora-r4"
"""

import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def main(url: str, out: str, pages: list[str]) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1050",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        for page in pages:
            name, path = page.split("=", 1)
            driver.get(url + path)
            time.sleep(2.5)  # images and the first pushed progress
            driver.save_screenshot(f"{out}/ui-{name}.png")
            print(f"{out}/ui-{name}.png")
    finally:
        driver.quit()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
