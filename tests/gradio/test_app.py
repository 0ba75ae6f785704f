"""The Gradio demo end to end: ``python gradio/app.py`` on a free localhost port (its default, the demo model),
driven by headless Chromium through Playwright, and called through gradio_client.

The browser is Debian's ``chromium`` (``.ci/run`` installs it where apt works); Playwright only
drives it, so nothing is downloaded. Without it the browser test is skipped, saying why.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
NETWORK_GUARD = Path(__file__).with_name("offline")  # its sitecustomize refuses outside connections
START_TIMEOUT_S = 150  # importing torch and gradio on a busy 2-core CI machine
STEP_TIMEOUT_MS = 90_000

pytestmark = pytest.mark.slow


def _installed(name: str) -> bool:
    # the repository's gradio/ folder is found as a namespace package (no origin) when the library is missing
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    outside: Path  # connections the app tried to open to other hosts, one a line

    def check_offline(self) -> None:
        tried = self.outside.read_text() if self.outside.exists() else ""
        assert not tried, f"the app tried to reach outside services:\n{tried}"

    def check_alive(self) -> None:
        assert self.process.poll() is None, f"the app exited:\n{self.log.read_text()[-3000:]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_served(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            with urllib.request.urlopen(server.url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the app did not answer within {timeout_s} s:\n{server.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not (_installed("gradio") and _installed("gradio_client")):
        pytest.skip("gradio and gradio_client are not installed (pip install -e '.[gradio]')")
    work = tmp_path_factory.mktemp("gradio_app")
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(NETWORK_GUARD), os.environ.get("PYTHONPATH")])),
        "OPENSORA_TEST_NETWORK_LOG": str(work / "outside.txt"),
        "GRADIO_TEMP_DIR": str(work / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    # no --config: the app's default is the demo model shipped in the repository
    command = [sys.executable, "gradio/app.py", "--port", str(port),
               "--output-dir", str(work / "results"), "--cfg-options", "scheduler.num_sampling_steps=2"]  # fmt: skip
    with (work / "app.log").open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    app = Server(f"http://127.0.0.1:{port}/", process, work / "app.log", work / "outside.txt")
    try:
        _wait_until_served(app, START_TIMEOUT_S)
        yield app
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_repository_folder_does_not_shadow_the_library() -> None:
    # pytest puts the repository root on sys.path; its gradio/ folder must stay a namespace package
    if not _installed("gradio"):
        pytest.skip("gradio is not installed (pip install -e '.[gradio]')")
    import gradio

    assert hasattr(gradio, "Blocks") and not Path(gradio.__file__).is_relative_to(ROOT / "gradio")


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser's path; listed before ``server`` so a missing browser skips before the app starts."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium); the browser test needs one")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")
    return chromium


def _record_progress(page) -> None:
    """Keep in ``window.progressSeen`` the progress text shown over the video (it may last only a moment)."""
    page.evaluate(
        """() => {
            window.progressSeen = '';
            new MutationObserver(() => {
                const text = document.querySelector('#video').innerText;
                if (text.includes('steps')) window.progressSeen += text;
            }).observe(document.querySelector('#video'), {subtree: true, childList: true, characterData: true});
        }"""
    )


def _wait_for_new_video(page, previous: str | None) -> str:
    """The source of the page's <video> once it differs from ``previous`` and has a frame decoded."""
    page.wait_for_function(
        """previous => {
            const video = document.querySelector('#video video');
            return video && video.currentSrc && video.currentSrc !== previous && video.readyState >= 2;
        }""",
        arg=previous,
        timeout=STEP_TIMEOUT_MS,
    )
    return page.evaluate("document.querySelector('#video video').currentSrc")


def _starts_with(prefix: str) -> re.Pattern:
    return re.compile("^" + re.escape(prefix))


def _check_served_mp4(page, url: str) -> None:
    response = page.request.get(url)
    body = response.body()
    assert response.ok and len(body) > 1000, (response.status, len(body))
    assert body[4:8] == b"ftyp", "not an MP4"


def test_browser_text_and_image_to_video(chromium: str, server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    upload = tmp_path / "upload.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 192, dtype=np.uint8)[:, None, None], (1, 192, 3))).save(upload)
    outside = []
    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            local = (server.url, "data:", "blob:")
            page.on("request", lambda request: None if request.url.startswith(local) else outside.append(request.url))
            page.goto(server.url)
            info = page.locator("#info textarea")
            video_button = page.get_by_role("button", name="Generate video")

            video_button.click()  # no prompt: an error in the page, and the server keeps serving
            expect(page.get_by_text("enter a prompt").first).to_be_visible()

            page.locator("#prompt textarea").fill("a red panda eating bamboo in the snow")
            _record_progress(page)
            video_button.click()
            text_video = _wait_for_new_video(page, None)
            assert "sampling" in page.evaluate("window.progressSeen"), "no sampling progress was shown"
            _check_served_mp4(page, text_video)
            expect(info).to_have_value("text-to-video, 17 frame(s) of 32x32, seed 42: a red panda eating bamboo "
                                       "in the snow aesthetic score: 6.5.")  # fmt: skip
            page.screenshot(path=tmp_path / "text_to_video.png", full_page=True)

            page.locator("#reference input[type=file]").set_input_files(upload)
            expect(page.locator("#reference img")).to_be_visible()
            video_button.click()
            uploaded_video = _wait_for_new_video(page, text_video)
            _check_served_mp4(page, uploaded_video)
            expect(info).to_have_value(_starts_with("image-to-video"))

            uploaded_src = page.locator("#reference img").get_attribute("src")
            page.get_by_role("button", name="Generate image").click()
            expect(info).to_have_value(_starts_with("text-to-image"))
            expect(page.locator("#reference img")).not_to_have_attribute("src", uploaded_src)
            video_button.click()
            made_video = _wait_for_new_video(page, uploaded_video)
            _check_served_mp4(page, made_video)
            expect(info).to_have_value(_starts_with("image-to-video"))
            page.screenshot(path=tmp_path / "image_to_video.png", full_page=True)
        finally:
            browser.close()
    print(f"screenshots: {tmp_path / 'text_to_video.png'}, {tmp_path / 'image_to_video.png'}")
    assert outside == [], f"the page loaded outside resources: {outside}"
    server.check_alive()
    server.check_offline()


def test_gradio_client_gets_a_playable_mp4(server: Server, tmp_path: Path) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False, download_files=tmp_path, analytics_enabled=False)
    with pytest.raises(AppError, match="enter a prompt"):  # the server reports it and goes on serving
        client.predict(prompt="  ", reference_image=None, api_name="/generate_video")
    path, made = client.predict(prompt="a red panda", resolution="144p", aspect_ratio="16:9", seed=7,
                                use_camera_motion=True, camera_motion="pan left", reference_image=None,
                                api_name="/generate_video")  # fmt: skip
    assert made == ("text-to-video, 17 frame(s) of 256x144, seed 7: "
                    "a red panda aesthetic score: 6.5. camera motion: pan left.")  # fmt: skip
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")  # what browsers play
    assert Path(path).suffix == ".mp4" and len(frames) == 17 and frames[0].shape == (256, 144, 3)
    assert np.ptp(np.stack(frames)) > 0  # real pixels, not a blank stream
    server.check_alive()
    server.check_offline()
