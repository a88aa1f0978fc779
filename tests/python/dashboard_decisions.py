"""Approvals and budget questions on the dashboard, in a real browser (Debian's chromium,
driven by Playwright). Usage: dashboard_decisions.py URL ADMIN_TOKEN OLDER NEWER SCREENSHOT CHROMIUM

OLDER waits on a tool approval and NEWER, asked after it, on its budget. The inbox lists
OLDER first with how long each has waited; the approval is three buttons (Allow, Always allow
for this task, Deny) and the budget question two (Continue, Stop the task), neither a text
box. Pressing Allow, then Continue, answers each (the page then shows the task)."""
import sys

from playwright.sync_api import expect, sync_playwright

url, admin, older, newer, shot, chromium = sys.argv[1:7]
expect.set_options(timeout=30_000)

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update"],
    )
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{url}/login")
    page.get_by_label("Token").fill(admin)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")

    page.goto(f"{url}/inbox")
    cards = page.locator("main article.task")
    expect(cards).to_have_count(2)
    ids = [cards.nth(i).get_attribute("id") for i in range(2)]
    assert ids[0].startswith(f"inbox-{older}-") and ids[1].startswith(f"inbox-{newer}-"), ids
    for i in range(2):
        expect(cards.nth(i).locator(".waited")).to_contain_text("waiting ")
    approval, budget = cards.nth(0), cards.nth(1)
    expect(approval).to_contain_text("Allow Bash: git push origin main")
    expect(budget).to_contain_text("continue with 1k tokens more?")
    assert page.locator("main textarea").count() == 0, "a decision got a text box"
    names = [b.text_content() for b in approval.locator("button").all()]
    assert names == ["Allow", "Always allow for this task", "Deny"], names
    names = [b.text_content() for b in budget.locator("button").all()]
    assert names == ["Continue", "Stop the task"], names
    page.screenshot(path=shot, full_page=True)

    approval.get_by_role("button", name="Allow", exact=True).click()
    page.wait_for_url(f"{url}/task/{older}")
    page.goto(f"{url}/inbox")
    expect(cards).to_have_count(1)
    cards.nth(0).get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{url}/task/{newer}")
    browser.close()
print("decisions ok")
