"""`/docs` in a real browser with no way out to the internet renders every operation.

The browserless tests (tests/integration/test_docs_assets.py) see what the page loads and
which Swagger UI it is; only a browser sees that the script runs, fetches `/openapi.json`
and draws it. Skipped where no headless Chromium is installed (`apt-get install
chromium-headless-shell`).

The browser is cut off rather than the machine: every host name resolves to nothing and
every address but loopback goes to a proxy that is not there, so a file still taken from a
CDN leaves the page blank here even on a machine that is online."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.devstack.embedded import free_port
from testbed.processes import serving

BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no chromium-headless-shell or chromium on PATH to load /docs in "
    "(apt-get install chromium-headless-shell)",
)


@pytest.fixture(scope="module")
async def docs_gateway(
    database_url: str, redis_url: str, models_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "FERRUMDECK_DATABASE_URL": database_url,
        "FERRUMDECK_REDIS_URL": redis_url,
        "FERRUMDECK_STREAM_PREFIX": f"fdtest:docs-{uuid.uuid4().hex[:8]}",
        "FERRUMDECK_MODELS": str(models_file),
        "FERRUMDECK_PORT": str(port),
    }
    log = tmp_path_factory.mktemp("docs") / "gateway.log"
    async with serving("gateway", env, log, ready_url=f"{url}/readyz"):
        yield url


def _dump_dom(browser: str, url: str, profile: Path) -> str:
    """The page's DOM once its scripts are done: virtual time runs on while the fetches
    are pending, up to the budget, so the dump is of the drawn page, not of the HTML."""
    offline = [
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--proxy-server=127.0.0.1:{free_port()}",  # loopback bypasses it; nothing listens
    ]
    headless = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    done = subprocess.run(
        [
            browser,
            *headless,
            *offline,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_docs_renders_every_operation_with_no_internet(docs_gateway: str, tmp_path: Path) -> None:
    assert BROWSER is not None
    paths = httpx.get(f"{docs_gateway}/openapi.json").json()["paths"]
    assert len(paths) >= 20
    dom = _dump_dom(BROWSER, f"{docs_gateway}/docs", tmp_path / "profile")
    assert "Unable to render this definition" not in dom
    missing = sorted(path for path in paths if f'data-path="{path}"' not in dom)
    drawn = len(paths) - len(missing)
    assert not missing, f"/docs drew {drawn} of {len(paths)} paths, not {missing}"
