"""The web page end to end: headless Chromium drives the real page against the real service.

The service runs in this process (uvicorn on loopback, in a thread) with the shared tiny
package; the browser is Debian's chromium through /usr/bin/chromedriver. Every value the
page shows is checked against what ``GET /v1/jobs/{id}`` answers for the same job.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import need
from tests.registry.pkgfix import Published

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 120.0


@dataclass(frozen=True)
class Service:
    """A running service: its base URL and a valid token."""

    url: str
    token: str

    def get(self, path: str) -> bytes:
        """GET ``path`` with the token; the body."""
        req = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return bytes(resp.read())

    def post_files(self, path: str, files: list[tuple[str, bytes]]) -> tuple[int, bytes]:
        """POST ``files`` as multipart field ``files``; (status, body), errors included."""
        boundary = "echoscreen-test-boundary"
        parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                  f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                  ).encode() + data + b"\r\n" for name, data in files]  # fmt: skip
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {"Authorization": f"Bearer {self.token}",
                   "Content-Type": f"multipart/form-data; boundary={boundary}"}  # fmt: skip
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, bytes(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, bytes(err.read())


@pytest.fixture(scope="module")
def service(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The real service (engine, tokens, FastAPI app) on a free loopback port."""
    import uvicorn

    from echoscreen.datasite.server import free_port
    from echoscreen.service.app import create_app
    from echoscreen.service.config import ServiceConfig
    from echoscreen.service.engine import ScreeningEngine
    from echoscreen.service.metrics import Metrics
    from echoscreen.service.tokens import TokenStore

    state = tmp_path_factory.mktemp("web-state")
    cfg = ServiceConfig(registry=published.registry, model=published.ref, state_dir=state,
                        port=free_port(), backend="onnx", cpu_workers=1, job_threads=2,
                        explain_clips=2).validate()  # fmt: skip
    metrics = Metrics()
    engine = ScreeningEngine(cfg, metrics)
    engine.start()
    tokens = TokenStore(state / "tokens.db")
    secret = tokens.create("web-test")
    app = create_app(cfg, engine, tokens, metrics)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    try:
        yield Service(url=f"http://{cfg.host}:{cfg.port}", token=secret)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.close(drain=False, timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian chromium driven by chromedriver."""
    need(CHROMIUM.exists() and CHROMEDRIVER.exists(), "chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1000", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=DriverService(str(CHROMEDRIVER)))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def by_id(driver: Any, element_id: str) -> Any:
    """The element with ``element_id``."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """Wait (up to WAIT_S) until ``condition(driver)`` is truthy; fail with the page's error."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition)
    except Exception as exc:  # selenium's TimeoutException: show what the page said instead
        status, error = by_id(driver, "status").text, by_id(driver, "error").text
        raise AssertionError(f"{what}: status {status!r}, error {error!r}") from exc


def open_page(driver: Any, service: Service) -> None:
    """Load the page signed out."""
    driver.get(service.url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(service.url + "/")
    assert by_id(driver, "signin").is_displayed()


def sign_in(driver: Any, service: Service, token: str) -> None:
    """Type ``token`` and submit; wait until the page has answered."""
    open_page(driver, service)
    by_id(driver, "token").send_keys(token)
    by_id(driver, "signin-button").click()
    answered = ("return !document.getElementById('upload').hidden"
                " || !document.getElementById('error').hidden")  # fmt: skip
    wait_for(driver, lambda d: d.execute_script(answered), "the page did not answer the sign-in")


def screen(driver: Any, chooser: str, path: Path) -> None:
    """Choose ``path`` with the ``chooser`` file input and press 'Screen this study'."""
    by_id(driver, chooser).send_keys(str(path))
    wait_for(driver, lambda d: by_id(d, "screen-button").is_displayed(), "nothing was selected")
    by_id(driver, "screen-button").click()


def shown_result(driver: Any, service: Service) -> dict[str, Any]:
    """Wait for the result on the page; the job document the API gives for it."""
    wait_for(driver, lambda d: by_id(d, "result").is_displayed(), "no result was shown")
    job = by_id(driver, "job-id").text
    doc: dict[str, Any] = json.loads(service.get(f"/v1/jobs/{job}"))
    assert doc["status"] == "done"
    assert doc["result"]["job"] == job
    return doc["result"]


def test_signed_in_clinician_screens_a_study_folder(
    browser: Any, service: Service, published: Published
) -> None:
    """Folder upload -> decision, probability, model, clips by file name, key frames."""
    folder = published.train_study_folders()[0]
    sign_in(browser, service, service.token)
    assert by_id(browser, "upload").is_displayed(), by_id(browser, "error").text
    screen(browser, "folder-input", folder)
    result = shown_result(browser, service)

    assert by_id(browser, "decision").get_attribute("data-decision") == result["decision"]
    if result["decision"] == "inconclusive":
        assert result["reason"] in by_id(browser, "decision-reason").text
    else:
        shown_p = by_id(browser, "probability").get_attribute("data-value")
        assert float(shown_p) == result["p_screen"]
        assert by_id(browser, "probability").text == f"{result['p_screen']:.3f}"
    assert float(by_id(browser, "threshold").get_attribute("data-value")) == result["threshold"]
    name = result["model"].split(":")[0]
    assert by_id(browser, "model-version").text == f"{name}, version {result['model_version']}"

    # The page uploads the folder's files in name order; file_index maps back to them.
    names = [f"{folder.name}/{p.relative_to(folder).as_posix()}"
             for p in sorted(folder.rglob("*")) if p.is_file()]  # fmt: skip
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#clips tbody tr')).map(r =>"
        " [Number(r.dataset.clip), r.querySelector('th').textContent,"
        "  r.cells[1].textContent, Number(r.cells[2].dataset.value)])"
    )
    assert len(result["clips"]) == len(names) == len(rows)
    for clip, (index, name, view, confidence) in zip(result["clips"], rows, strict=True):
        assert index == clip["index"]
        assert name == names[clip["file_index"]]
        assert view == clip["view"]
        assert confidence == pytest.approx(clip["confidence"], abs=1e-12)

    check_key_frames(browser, service, result)


def check_key_frames(driver: Any, service: Service, result: dict[str, Any]) -> None:
    """Each explanation is shown once, loaded from a blob: URL holding the API's PNG."""
    explanations = result["explanations"]
    assert explanations, "the study's evidence clips should have key frames"
    wait_for(driver, lambda d: d.execute_script(
        "const imgs = document.querySelectorAll('#keyframes img');"
        "return imgs.length > 0 && Array.from(imgs).every(i => i.complete && i.naturalWidth > 0"
        " && i.src.startsWith('blob:'))"), "key frames did not load")  # fmt: skip
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll('#keyframes figure')).map(f =>"
        " [Number(f.dataset.clip), Number(f.dataset.frame), f.querySelector('img').src])"
    )
    assert [(c, f) for c, f, _ in shown] == [(e["clip"], e["frame"]) for e in explanations]
    for (_, _, src), ex in zip(shown, explanations, strict=True):
        encoded = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {"
            " let s = ''; new Uint8Array(b).forEach(x => { s += String.fromCharCode(x); });"
            " done(btoa(s)); });", src)  # fmt: skip
        png = base64.b64decode(encoded)
        assert png.startswith(b"\x89PNG")
        assert png == service.get(ex["url"])


def test_zip_upload_shows_the_same_clips(
    browser: Any, service: Service, published: Published, tmp_path: Path
) -> None:
    """A zip of the study (members not in name order) is screened; clips carry member names."""
    folder = published.train_study_folders()[1]
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes/", b"")  # a folder entry: not a file of the upload
        members = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*.dcm"))][::-1]
        for member in members:
            zf.write(folder / member, member)
    sign_in(browser, service, service.token)
    screen(browser, "zip-input", archive)
    result = shown_result(browser, service)
    assert by_id(browser, "decision").get_attribute("data-decision") == result["decision"]
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#clips tbody tr')).map(r =>"
        " [r.querySelector('th').textContent, r.cells[1].textContent])"
    )
    expected = [[f"study.zip/{members[c['file_index']]}", c["view"]] for c in result["clips"]]
    assert cells == expected


def test_wrong_token_is_refused_plainly(browser: Any, service: Service) -> None:
    """A token the service does not know: an error, and the page stays signed out."""
    sign_in(browser, service, "es_" + "x" * 43)
    error = by_id(browser, "error")
    assert error.is_displayed() and error.get_attribute("role") == "alert"
    assert "did not accept your token (401" in error.text
    assert not by_id(browser, "upload").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0


def test_non_dicom_file_shows_the_reason(browser: Any, service: Service, tmp_path: Path) -> None:
    """A folder holding only a text file: the page shows the service's 4xx reason verbatim."""
    folder = tmp_path / "not-a-study"
    folder.mkdir()
    (folder / "notes.txt").write_text("echo report to follow\n")
    status, body = service.post_files("/v1/studies", [("notes.txt", b"echo report to follow\n")])
    assert 400 <= status < 500, body
    reason = json.loads(body)["error"]
    sign_in(browser, service, service.token)
    screen(browser, "folder-input", folder)
    wait_for(browser, lambda d: by_id(d, "error").is_displayed(), "no error was shown")
    text = by_id(browser, "error").text
    assert f"({status}): {reason}" in text
    assert not by_id(browser, "result").is_displayed()


def test_files_dropped_on_the_page_are_screened(
    browser: Any, service: Service, published: Published
) -> None:
    """A drop on the drop zone (a real DragEvent carrying Files) is screened like a folder.

    Browsers give scripts no way to build a dropped *folder* (FileSystemEntry trees come only
    from the operating system), so the files of a study are dropped as files.
    """
    folder = published.train_study_folders()[2]
    paths = sorted(folder.rglob("*.dcm"))[::-1]  # dropped out of name order
    payload = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in paths]
    sign_in(browser, service, service.token)
    browser.execute_script(
        "const dt = new DataTransfer();"
        "for (const [name, b64] of arguments[0]) {"
        "  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));"
        "  dt.items.add(new File([bytes], name, {type: 'application/dicom'})); }"
        "const zone = document.getElementById('dropzone');"
        "zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true,"
        "  cancelable: true}));"
        "zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true,"
        "  cancelable: true}));", payload)  # fmt: skip
    wait_for(browser, lambda d: by_id(d, "screen-button").is_displayed(), "the drop was ignored")
    by_id(browser, "screen-button").click()
    result = shown_result(browser, service)
    assert by_id(browser, "decision").get_attribute("data-decision") == result["decision"]
    names = browser.execute_script(
        "return Array.from(document.querySelectorAll('#clips tbody tr'))"
        ".map(r => r.querySelector('th').textContent)")  # fmt: skip
    uploaded = sorted(p.name for p in paths)  # the page uploads in name order
    assert len(result["clips"]) + len(result["skipped"]) == len(paths)
    assert names == [uploaded[c["file_index"]] for c in result["clips"]]
