"""Screenshots of the dashboard of a running `rftlab serve`, taken with headless Chromium, to look at the pages.

    python scripts/dashboard_screenshot.py [--base-url http://127.0.0.1:8317] [--job JOB_ID] [--out DIR]

Logs in with the key of the `rftlab-local` profile (or $RFTLAB_DASHBOARD_KEY), then saves jobs.png and, for
--job (default: the newest job), job.png with the rollouts of its first kept step. Needs Debian's chromium and
chromium-driver and the selenium package. The screenshots are output, not sources: keep them out of git.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

from rftlab.fireworks.credentials import auth_ini_path, read_auth_ini

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1400,2200",
)


def newest_job(base_url: str, key: str) -> str:
    answer = httpx.get(
        f"{base_url}/v1/accounts/local/reinforcementFineTuningJobs",
        params={"orderBy": "createTime desc", "pageSize": 1},
        headers={"Authorization": f"Bearer {key}"},
    )
    answer.raise_for_status()
    jobs = answer.json()["reinforcementFineTuningJobs"]
    if not jobs:
        raise SystemExit("no jobs on this server yet: rftlab launch wait=true")
    return jobs[0]["name"].rsplit("/", 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8317")
    parser.add_argument("--job", help="a job of account local (default: the newest)")
    parser.add_argument("--out", type=Path, default=Path("outputs/screenshots"))
    args = parser.parse_args()
    key = os.environ.get("RFTLAB_DASHBOARD_KEY") or read_auth_ini(auth_ini_path("rftlab-local")).get(
        "api_key"
    )
    if not key:
        print("no key: start the server once (rftlab serve) or set RFTLAB_DASHBOARD_KEY", file=sys.stderr)
        return 1
    job = args.job or newest_job(args.base_url, key)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(f"{args.base_url}/dashboard/login")
        driver.find_element(By.ID, "api_key").send_keys(key)
        driver.find_element(By.ID, "login").click()
        time.sleep(2)
        driver.save_screenshot(str(args.out / "jobs.png"))
        driver.get(f"{args.base_url}/dashboard/fine-tuning/reinforcement/{job}")
        time.sleep(3)
        driver.find_element(By.ID, "step-slider").send_keys(Keys.HOME)
        time.sleep(2)
        driver.save_screenshot(str(args.out / "job.png"))
    finally:
        driver.quit()
    print(f"saved {args.out / 'jobs.png'} and {args.out / 'job.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
