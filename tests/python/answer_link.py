"""One-time answer links in a real browser (Debian's chromium, driven by Playwright).
Usage: answer_link.py LINK ANSWERED_LINK EXPIRED_LINK ALTERED_LINK CHROMIUM

LINK opens its question and answers it once; opened again it says the question was answered.
ANSWERED_LINK's question was answered another way first: its page says so and offers no form.
EXPIRED_LINK has passed its expiry; ALTERED_LINK is LINK with its signature changed. Neither
answers anything.
"""
import sys

from playwright.sync_api import expect, sync_playwright

link, answered, expired, altered, chromium = sys.argv[1:6]
expect.set_options(timeout=30_000)

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )
    page = browser.new_context().new_page()

    # The link's page: the question, who answers, and a form; no login.
    page.goto(link)
    expect(page.get_by_text("which database?")).to_be_visible()
    expect(page.get_by_text("answers this question once, as admin")).to_be_visible()
    page.get_by_label("Your answer").fill("postgres")
    page.get_by_role("button", name="Answer").click()
    expect(page.get_by_text("has your answer, as admin")).to_be_visible()

    # Once: the same link again says so, and offers nothing to submit.
    response = page.goto(link)
    assert response.status == 409, response.status
    expect(page.get_by_text("was already answered")).to_be_visible()
    expect(page.get_by_role("button", name="Answer")).to_have_count(0)

    # Answered another way first.
    response = page.goto(answered)
    assert response.status == 409, response.status
    expect(page.get_by_text('was already answered: "by the cli"')).to_be_visible()

    # Expired.
    response = page.goto(expired)
    assert response.status == 410, response.status
    expect(page.get_by_text("This answer link has expired")).to_be_visible()

    # Altered: not this coordinator's link.
    response = page.goto(altered)
    assert response.status == 404, response.status
    expect(page.get_by_text("This answer link is not valid")).to_be_visible()

    browser.close()
print("answer link ok")
