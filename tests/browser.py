"""A real browser for the tests: the operating system's Chromium (Debian: `chromium`),
driven by Playwright. Playwright's own browser downloads are never used; when the
system's Chromium is missing a test skips saying what to install (fails under CI=true).

Also: a Streamlit app as a real process (`digits app`), waited for as Streamlit's own
end-to-end tests do: its health endpoint says ok, then the page says the script
finished (`data-test-script-state="notRunning"`) while connected.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from .conftest import clean_env, free_port, require_system, wait_healthy

CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Generous: the first page view imports TensorFlow (~5 s alone on these 2 cores).
TIMEOUT_MS = 90_000


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    require_system("chromium", "chromium", "the system's Chromium for the browser tests")
    raise AssertionError("unreachable: require_system skips or fails")


def expect(locator):
    """Playwright's `expect` with this module's timeout (its default, 5 s, is shorter
    than a first prediction, which loads TensorFlow and the models)."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT_MS)
    return playwright_expect(locator)


@contextmanager
def chromium():
    """A headless Chromium (the system's), closed afterwards."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def streamlit_app(*args: str, cwd: Path, log: Path, timeout: float = 90):
    """`digits ARGS app --port N` as a real process; yields its URL once healthy."""
    port = free_port()
    digits = Path(sys.executable).with_name("digits")
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(digits), *args, "app", "--port", str(port)],
            cwd=cwd,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(
            f"{url}/_stcore/health",
            process,
            timeout,
            lambda: f"digits app exited {process.returncode}: {log.read_text()}",
            answer=b"ok",
        )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for_app_run(page) -> None:
    """The script has finished running and the page is connected (Streamlit's own e2e
    helper does the same); assertions then wait for what they expect with `expect`."""
    page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached", timeout=TIMEOUT_MS
    )
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        state="attached", timeout=TIMEOUT_MS
    )


def stroke(page, target, points: list[tuple[float, float]], steps: int = 12) -> None:
    """Draw through `points` (in the target's own pixels) with the mouse, button held."""
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + points[0][0], y0 + points[0][1])
    page.mouse.down()
    for (ax, ay), (bx, by) in zip(points, points[1:]):
        for i in range(1, steps + 1):
            page.mouse.move(x0 + ax + (bx - ax) * i / steps, y0 + ay + (by - ay) * i / steps)
    page.mouse.up()


# --- MLflow's UI ----------------------------------------------------------------------

# From a row's name cell up to the element holding both grids (its values' cells too).
_COMPARE_ROW_VALUES = """cell => {
    let box = cell.parentElement;
    for (let level = 0; box && level < 12; level++, box = box.parentElement) {
        const same = [...box.querySelectorAll('[style]')].filter(
            e => e !== cell && e.style.top === cell.style.top && !e.contains(cell)
                && !cell.contains(e) && e.style.position === 'absolute');
        if (same.length) {
            return same.sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left))
                .map(e => e.innerText.trim());
        }
    }
    return null;
}"""


def mlflow_compare_metric(page, key: str) -> list[str]:
    """On MLflow's compare-runs page, the values of metric `key`, one per run, left to
    right as the page shows the runs (its "Run Name:" row). MLflow 3 draws that table as
    two virtualized grids, names and values, whose cells line up by their `top`: the
    values are the cells at the name's height."""
    name = page.get_by_role("link", name=key, exact=True).first  # a metric's name: a link
    name.wait_for(timeout=TIMEOUT_MS)
    values = name.locator("xpath=..").evaluate(_COMPARE_ROW_VALUES)
    assert values is not None, f"no values beside {key!r} on {page.url}"
    return values


def close_mlflow_assistant(page, wait_ms: int = 3000) -> None:
    """MLflow 3.17 opens its Assistant beside a page (a third of the width) until it is
    closed once (the browser remembers); shut it for screenshots of the page itself.
    Call it once the page's content is there."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    close = page.get_by_role("button", name="Close").first
    try:
        close.wait_for(timeout=wait_ms)
    except PlaywrightTimeout:
        return  # closed already
    close.click()
