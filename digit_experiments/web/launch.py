"""The command line that starts the web app: `streamlit run` on page.py, on one address."""

from __future__ import annotations

import sys
from pathlib import Path

PAGE = Path(__file__).with_name("page.py")


def command(
    tracking_uri: str,
    host: str,
    port: int,
    model_uris: list[str],
    name: str,
    ui_url: str | None = None,
) -> list[str]:
    """`python -m streamlit run page.py` with the server settings of a product, not of a
    development session: no browser opened, no file watcher, no usage statistics, no
    "Deploy" menu; the page's own options after `--`."""
    page_args = ["--tracking-uri", tracking_uri, "--name", name]
    for uri in model_uris:
        page_args += ["--model", uri]
    if ui_url:
        page_args += ["--ui-url", ui_url]
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(PAGE),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--",
        *page_args,
    ]
