"""The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium): log in,
see a job's reward curve with one point per step, read a step's rollouts, be refused another account's job, and
no request leaving 127.0.0.1; multi-turn rollouts with every turn the model trained on marked, and a job's state
timeline; then the same for a job the tiny model really trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rollout_fixtures import TOOL_ROWS, records, sampled_tool_rollouts, seed_job, seed_rollouts
from server_harness import (
    DATASET,
    EVALUATOR,
    LocalServer,
    create_job,
    finished,
    job_metrics,
    small_job,
    wait_for,
)

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
STEPS = 12
JOB = "dashboard-trained"

pytestmark = pytest.mark.slow


def chromium_flags() -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1800",
    ]


def start_chromium():
    """A headless Chromium under Selenium, or a skip naming what is missing."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian's chromium is not installed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in chromium_flags():
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(
        tmp_path_factory.mktemp("server"), max_running_jobs=0, extra_args=["--keep-rollouts", "all"]
    ) as running:
        with running.client() as client:
            seed_job(running, client, "local", "seeded", STEPS)
            seed_job(running, client, "local", "tools", 1)
            for verb in ("cancel", "resume"):
                assert client.post(f"/v1/accounts/local/reinforcementFineTuningJobs/tools:{verb}").is_success
        seed_rollouts(running, "local", "tools", 2, records(sampled_tool_rollouts()))
        running.other_key = running.add_account("other")
        with running.client(running.other_key) as client:
            seed_job(running, client, "other", "theirs", 2)
        yield running


@pytest.fixture
def browser(tmp_path):
    driver = start_chromium()
    yield driver
    driver.save_screenshot(str(tmp_path / "last-page.png"))
    driver.quit()


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def texts(driver, selector: str) -> list[str]:
    """The text of every element matching `selector`, read in one go (the page re-renders while it polls)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)", selector
    )


def test_log_in_read_the_curve_and_a_steps_rollouts_and_be_refused_anothers_job(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    job_page = f"{server.base_url}/dashboard/fine-tuning/reinforcement/seeded"
    browser.get(job_page)
    assert "/dashboard/login" in browser.current_url
    browser.find_element(By.ID, "api_key").send_keys(server.local_key())
    browser.find_element(By.ID, "login").click()
    wait_for(lambda: browser.current_url == job_page, "the login to lead back to the job page", timeout_s=30)

    wait_for(
        lambda: texts(browser, f'#chart-reward[data-points="{STEPS}"] canvas'),
        "the reward curve drawn with one point per step",
        timeout_s=30,
    )
    width = browser.execute_script("return document.querySelector('#chart-reward canvas').width")
    assert width > 200
    assert texts(browser, "#chart-reward + .caption") == [f"reward (mean of valid rollouts): {STEPS} points"]

    wait_for(lambda: len(texts(browser, "#groups .group")) == 2, "the latest step's two groups", 30)
    assert f"step {STEPS}: 8 kept, 6 valid" in texts(browser, "#step-label")[0]

    browser.find_element(By.ID, "step-slider").send_keys(Keys.HOME)  # the first step
    wait_for(
        lambda: "The answer is 31" in texts(browser, "#groups .card.best .completion"),
        "step 1's best completion",
        timeout_s=30,
    )
    assert "step 1: 8 kept" in texts(browser, "#step-label")[0]
    assert texts(browser, "#groups .card.best .completion mark.trained")[0] == "31"
    worst = texts(browser, "#groups .card.worst")
    assert len(worst) == 2 and all("no number in the reply" in card for card in worst)
    assert "evaluator: exact match" in texts(browser, "#groups .card.best")[0]

    browser.get(f"{server.base_url}/dashboard")
    wait_for(lambda: texts(browser, '#jobs tr[data-job="seeded"]'), "the job list", 30)
    assert not texts(browser, '#jobs tr[data-job="theirs"]')

    browser.get(f"{server.base_url}/dashboard/fine-tuning/reinforcement/theirs")
    missing = wait_for(lambda: texts(browser, "#missing"), "the not-found page", 30)
    assert missing == ["No job theirs in account local."]

    urls = requested_urls(browser)
    assert urls and all(url.startswith(server.base_url) for url in urls), [
        url for url in urls if not url.startswith(server.base_url)
    ]
    problems = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    # the only error the pages may log is the 404 of the refused job page
    assert all("reinforcement/theirs" in problem and "404" in problem for problem in problems), problems


def test_the_other_account_sees_its_own_job(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{server.base_url}/dashboard/login")
    browser.find_element(By.ID, "api_key").send_keys(server.other_key)
    browser.find_element(By.ID, "login").click()
    # leaving the page before the login's answer sets the session cookie would go on as the account before
    wait_for(lambda: "/dashboard/login" not in browser.current_url, "the login to lead on", timeout_s=30)
    browser.get(f"{server.base_url}/dashboard/fine-tuning/reinforcement/theirs")
    wait_for(lambda: texts(browser, '#chart-reward[data-points="2"]'), "their curve with two points", 30)
    browser.get(f"{server.base_url}/dashboard/fine-tuning/reinforcement/seeded")
    assert wait_for(lambda: texts(browser, "#missing"), "the not-found page", 30)


def log_in(browser, server: LocalServer, page: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.base_url}{page}")
    browser.find_element(By.ID, "api_key").send_keys(server.local_key())
    browser.find_element(By.ID, "login").click()
    wait_for(
        lambda: browser.current_url == f"{server.base_url}{page}", "the login to lead back", timeout_s=30
    )


CARD_MARKS = """return [...document.querySelectorAll('#groups .card')].map((card) => ({
  assistant: card.querySelectorAll('.turns .msg.assistant').length,
  trained: card.querySelectorAll('.turns .msg.assistant mark.trained').length,
  tool: card.querySelectorAll('.turns .msg.tool').length,
  otherMarks: card.querySelectorAll('.turns .msg:not(.assistant) mark, .conversation mark').length,
}))"""


def test_multi_turn_rollouts_mark_every_turn_trained_on_and_the_timeline_shows_each_state(server, browser):
    log_in(browser, server, "/dashboard/fine-tuning/reinforcement/tools")
    wait_for(lambda: len(texts(browser, "#groups .group")) == TOOL_ROWS, "step 2's groups", 30)
    cards = browser.execute_script(CARD_MARKS)
    assert any(card["tool"] for card in cards), "no multi-turn rollout shown"
    for card in cards:
        assert card["trained"] == card["assistant"] >= 1 and card["otherMarks"] == 0, card
    states = wait_for(lambda: texts(browser, "#state-history li .state"), "the state timeline", 30)
    assert states == ["pending", "cancelled", "pending"]
    assert "cancelled before it started" in texts(browser, "#state-history li")[1]
    assert len(texts(browser, "#state-strip .state")) == 3
    assert all(url.startswith(server.base_url) for url in requested_urls(browser))


@pytest.fixture(scope="module")
def trained(training_server):
    """The shared training server, once it trained a real short job (4 steps, an eval before and after)."""
    with training_server.client() as client:
        create_job(client, "local", JOB, small_job(DATASET, EVALUATOR, evalAutoCarveout=True))
        job = wait_for(lambda: finished(client, "local", JOB), "the job to end", timeout_s=600)
        assert job["state"] == "JOB_STATE_COMPLETED", job
        steps = len(job_metrics(client, "local", JOB))
        last = client.get(
            f"/v1/accounts/local/reinforcementFineTuningJobs/{JOB}/rollouts", params={"step": steps}
        )
    return training_server, steps, {r["completion_text"] for r in last.json()["rollouts"]}


def test_a_trained_jobs_link_shows_its_curve_and_rollouts(trained, browser):
    from selenium.webdriver.common.by import By

    server, steps, last_step_texts = trained
    browser.get(f"{server.base_url}/dashboard/fine-tuning/reinforcement/{JOB}")
    browser.find_element(By.ID, "api_key").send_keys(server.local_key())
    browser.find_element(By.ID, "login").click()
    wait_for(
        lambda: texts(browser, f'#chart-reward[data-points="{steps}"] canvas'),
        f"the reward curve with {steps} points",
        timeout_s=30,
    )
    wait_for(lambda: texts(browser, "#groups .group"), "the last step's groups", 30)
    assert f"step {steps}: " in texts(browser, "#step-label")[0]
    shown = texts(browser, "#groups .card .completion")
    assert shown and set(shown) <= last_step_texts
    assert texts(browser, "#eval-summary")[0].startswith("eval reward ")
    assert all(url.startswith(server.base_url) for url in requested_urls(browser))
