"""download-files: fast, clear errors offline or unreachable; files already present are used; HTTP resumes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import constants

from avatar.settings import ModelSettings
from avatar.weights.download import MOTION_FILE, RENDERER_FILE, WAV2VEC_DIR, DownloadError, download_files, download_url

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


def settings_for(root: Path, url: str = "http://127.0.0.1:9/face_landmarker.task") -> ModelSettings:
    return ModelSettings(checkpoints_dir=root, face_landmarker_url=url)


def test_offline_fails_fast_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"last\.ckpt: offline mode \(HF_HUB_OFFLINE=1\)") as err:
        download_files(settings_for(tmp_path), progress=False)
    assert time.monotonic() - start < 5
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_unreachable_hub_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(DownloadError, match="Hugging Face Hub is unreachable"):
        download_files(settings_for(tmp_path), progress=False)
    assert time.monotonic() - start < 10


def test_files_already_present_are_used_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    wanted = [
        tmp_path / MOTION_FILE,
        tmp_path / RENDERER_FILE,
        tmp_path / WAV2VEC_DIR / "config.json",
        tmp_path / WAV2VEC_DIR / "preprocessor_config.json",
        tmp_path / "face_landmarker.task",
    ]
    for path in wanted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    files = download_files(settings_for(tmp_path), progress=False)
    assert sorted(Path(p).resolve() for p in files.values()) == sorted(p.resolve() for p in wanted)
    assert set(files) == {
        "motion_checkpoint",
        "renderer_checkpoint",
        "wav2vec2_config",
        "wav2vec2_preprocessor_config",
        "face_landmarker",
    }
    settings = settings_for(tmp_path)
    assert files["motion_checkpoint"].resolve() == settings.motion_checkpoint_path.resolve()
    assert files["renderer_checkpoint"].resolve() == settings.renderer_checkpoint_path.resolve()


class _RangeServer(BaseHTTPRequestHandler):
    honour_range = True
    ranges: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        start = int(header.split("=")[1].rstrip("-")) if header and self.honour_range else 0
        if start >= len(PAYLOAD):
            self.send_response(416)
            self.end_headers()
            return
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[_RangeServer]]]:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    handler = type("Handler", (_RangeServer,), {"ranges": [], "honour_range": True})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/face_landmarker.task", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_download_resumes_a_partial_file(tmp_path: Path, server) -> None:
    url, handler = server
    dest = tmp_path / "face_landmarker.task"
    (tmp_path / "face_landmarker.task.part").write_bytes(PAYLOAD[:1000])
    assert download_url(url, dest, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert handler.ranges == ["bytes=1000-"]
    assert not (tmp_path / "face_landmarker.task.part").exists()
    assert download_url(url, dest, progress=False) == dest and len(handler.ranges) == 1  # present: no request


def test_http_download_restarts_when_the_server_ignores_ranges(tmp_path: Path, server) -> None:
    url, handler = server
    handler.honour_range = False
    dest = tmp_path / "f.task"
    (tmp_path / "f.task.part").write_bytes(b"garbage")
    download_url(url, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_download_of_an_already_complete_part(tmp_path: Path, server) -> None:
    url, _ = server
    dest = tmp_path / "f.task"
    (tmp_path / "f.task.part").write_bytes(PAYLOAD)
    download_url(url, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_errors_are_one_line(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = server
    with pytest.raises(DownloadError, match="Connection refused|cannot download") as err:
        download_url("http://127.0.0.1:9/x.task", tmp_path / "x.task", timeout=5, progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.task").exists()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="offline mode"):
        download_url(url, tmp_path / "y.task", progress=False)
