"""The dashboard in a real browser (Debian's chromium, driven by Playwright; no browser
download). Usage: dashboard.py URL ADMIN_TOKEN VIEWER_TOKEN TASK_ID SCREENSHOT CHROMIUM

As the admin: the task's checklist ticks on the open page without a reload (server-sent
events), its question appears with an answer box, the answer is sent from the page and the task
completes; the worker's output and output.md appear on the open page as they are written. As a viewer: the task shows as a summary, with no answer box anywhere.
"""
import sys

from playwright.sync_api import expect, sync_playwright

url, admin, viewer, task, shot, chromium = sys.argv[1:7]
card = f"#task-{task}"
# Every wait below is on an event in the page, with this deadline.
expect.set_options(timeout=30_000)


def login(page, token):
    page.goto(f"{url}/login")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        ],
    )
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.set_default_timeout(30_000)
    login(page, admin)
    expect(page.locator(card)).to_be_visible()
    # The worker asks first: its question shows with an answer box (live or at load).
    box = page.locator(f"{card} textarea")
    expect(box).to_be_visible()
    expect(page.locator(f"{card} .question")).to_contain_text("may the worker start?")
    page.screenshot(path=shot, full_page=True)
    box.fill("yes, start")
    page.locator(f"{card} button", has_text="Answer").click()
    page.wait_for_url(f"{url}/task/{task}")
    # From here the page is not reloaded (a reload would lose the marker): every tick
    # arrives as a server-sent event.
    page.evaluate("window.__stayed = true")
    progress = page.locator(f"{card} .progress")
    at_load = progress.text_content()
    # Four steps and the summary item the plan always ends with; the two sleeps (2.5 s each)
    # are still ahead.
    assert at_load in ("0/5", "1/5"), at_load
    expect(progress).to_have_text("2/5")
    expect(page.locator(card)).to_have_attribute("data-state", "completed")
    expect(progress).to_have_text("5/5")
    assert page.evaluate("window.__stayed === true"), "the page was reloaded"
    # The worker's output, its output.md and (none here) diff follow live too: lines the worker
    # printed after the page loaded, and the summary written at the end.
    expect(page.locator("#log-text")).to_contain_text("sim: working on item 3")
    expect(page.locator("#log-text")).to_contain_text("sim: all items checked")
    expect(page.locator("#output-section")).to_be_visible()
    expect(page.locator("#output-text")).not_to_be_empty()
    assert page.locator("#diff-section").is_hidden(), "a task without changes shows a diff"
    # Ended completed: nothing to cancel or retry.
    assert page.get_by_role("button", name="Cancel task").count() == 0
    assert page.get_by_role("button", name="Retry task").count() == 0
    assert page.evaluate("window.__stayed === true"), "the page was reloaded"
    expect(page.locator("details")).to_contain_text("yes, start")
    # The inbox is empty now.
    page.goto(f"{url}/inbox")
    expect(page.locator("main")).to_contain_text("No worker is waiting")

    # A viewer sees how far tasks are, never their text, and cannot answer.
    viewer_page = browser.new_context().new_page()
    viewer_page.set_default_timeout(30_000)
    login(viewer_page, viewer)
    expect(viewer_page.locator(card)).to_contain_text("a summary")
    assert viewer_page.locator("textarea").count() == 0, "a viewer got an answer box"
    viewer_page.goto(f"{url}/task/{task}")
    expect(viewer_page.locator(card)).to_be_visible()
    assert viewer_page.locator("textarea").count() == 0, "a viewer got a form"
    assert "yes, start" not in viewer_page.content(), "a viewer saw the answer"
    # Nodes and keyboard: the nav links are reachable with Tab.
    viewer_page.goto(f"{url}/nodes")
    expect(viewer_page.locator("table")).to_contain_text("web1")
    viewer_page.keyboard.press("Tab")
    viewer_page.keyboard.press("Tab")
    focused = viewer_page.evaluate("document.activeElement.textContent")
    assert focused in ("Tasks", "dispatch"), focused
    browser.close()
print("dashboard ok")
