"""A browser notification when a question arrives while a dashboard page is open (Debian's
chromium, driven by Playwright). Usage: notify.py URL ADMIN_TOKEN TASK_ID QUESTION CHROMIUM

The page offers "Notify me of questions" while the browser has not been asked; once allowed,
a question that arrives on the open page (a server-sent event) makes one notification naming
the task and carrying the question's text. The Notification constructor is recorded by an init
script (headless Chromium shows none), with the permission granted as a user would.
"""
import sys

from playwright.sync_api import expect, sync_playwright

url, admin, task, question, chromium = sys.argv[1:6]
expect.set_options(timeout=30_000)

RECORD = """
(() => {
  const Real = window.Notification;
  window.__notes = [];
  class Recorded {
    constructor(title, options) {
      const note = {title, body: (options || {}).body, tag: (options || {}).tag};
      window.__notes.push(note);
      console.log("NOTIFICATION " + JSON.stringify(note));
    }
    static get permission() { return window.__granted ? "granted" : "default"; }
    static requestPermission() { window.__granted = true; return Promise.resolve("granted"); }
  }
  window.Notification = Recorded;
})();
"""

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )
    context = browser.new_context()
    context.add_init_script(RECORD)
    page = context.new_page()
    page.goto(f"{url}/login")
    page.get_by_label("Token").fill(admin)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")
    button = page.get_by_role("button", name="Notify me of questions")
    expect(button).to_be_visible()
    # The page's CSP forbids eval, so the wait is on the recorder's console line (an event).
    with page.expect_console_message(
        lambda m: m.text.startswith("NOTIFICATION "), timeout=60_000
    ):
        button.click()
        expect(button).to_be_hidden()
    notes = page.evaluate("window.__notes")
    assert len(notes) == 1, notes
    note = notes[0]
    assert task in note["title"], note
    assert "question 001" in note["title"], note
    assert note["body"] == question, note
    assert note["tag"] == f"{task}/1", note
    browser.close()
print("notify ok")
