"""Fetching the weights DyStream needs into ``ModelSettings.checkpoints_dir`` (the ``download-files`` step).

- from the DyStream Hugging Face repo: ``checkpoints/last.ckpt`` (motion generator) and
  ``tools/pretrained_model/epoch=0-step=312000.ckpt`` (LIA renderer);
- from the wav2vec2 repo: only ``config.json`` and ``preprocessor_config.json`` (every wav2vec2 weight the model
  uses is in ``last.ckpt``);
- MediaPipe's ``face_landmarker.task`` over HTTP.

Every download resumes where an interrupted one stopped and shows a progress bar. Offline (``HF_HUB_OFFLINE=1``) or
with no network, a missing file is a one-line error naming the file and what to do.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from avatar.errors import InputError
from avatar.settings import ModelSettings

log = logging.getLogger(__name__)

MOTION_FILE = "checkpoints/last.ckpt"
RENDERER_FILE = "tools/pretrained_model/epoch=0-step=312000.ckpt"
WAV2VEC_FILES = {"wav2vec2_config": "config.json", "wav2vec2_preprocessor_config": "preprocessor_config.json"}
WAV2VEC_DIR = "wav2vec2-base-960h"
HTTP_TIMEOUT_S = 30.0
CHUNK = 1 << 20


class DownloadError(InputError):
    """A file could not be fetched; the message says which and what to do."""


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = 5.0) -> bool:
    """One quick request to the Hugging Face endpoint (through any configured proxy), no retries."""
    from huggingface_hub import constants

    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # the server answered
    except (urllib.error.URLError, TimeoutError, OSError):
        return False
    return True


def _hf_file(repo: str, filename: str, revision: str | None, local_dir: Path, online: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo}/{filename}" + (f"@{revision}" if revision else "")
    try:
        path = hf_hub_download(repo, filename, revision=revision, local_dir=local_dir, local_files_only=not online)
        return Path(path)
    except LocalEntryNotFoundError as exc:
        reason = "offline mode (HF_HUB_OFFLINE=1)" if _offline() else "the Hugging Face Hub is unreachable"
        raise DownloadError(
            f"cannot download {where}: {reason} and it is not in {local_dir}; connect to the internet "
            f"(and unset HF_HUB_OFFLINE) or copy the file to {local_dir / filename}"
        ) from exc
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise DownloadError(
            f"cannot download {where}: {type(exc).__name__}; check DYSTREAM_MODEL__HF_REPO / "
            f"DYSTREAM_MODEL__HF_REVISION / DYSTREAM_MODEL__WAV2VEC_REPO (and HF_TOKEN for gated repos)"
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(f"cannot download {where}: {message}; check the network and retry") from exc


def download_url(url: str, dest: Path, timeout: float = HTTP_TIMEOUT_S, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run; ``dest`` appears whole."""
    dest = Path(dest).expanduser()
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    if _offline():
        raise DownloadError(
            f"cannot download {url}: offline mode (HF_HUB_OFFLINE=1) and {dest} is missing; go online or copy it there"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the range: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with (
                part.open("ab" if offset else "wb") as fh,
                tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, disable=not progress
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at the end: the partial file is complete
            total = offset
        else:
            raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; check the URL setting") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url}: {reason}; check the network and retry (the download resumes), "
            f"or copy the file to {dest}"
        ) from exc
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"download of {url} stopped at {size} of {total} bytes; run it again to resume")
    os.replace(part, dest)
    return dest


def download_files(model: ModelSettings, progress: bool = True) -> dict[str, Path]:
    """Fetch every file the avatar needs into ``model.checkpoints_dir``; returns name → local path. Files already
    present are kept."""
    root = Path(model.checkpoints_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    online = not _offline() and hub_reachable()
    if not online:
        log.warning("Hugging Face Hub not reachable: using files already downloaded", extra={"root": str(root)})
    files = {
        "motion_checkpoint": _hf_file(model.hf_repo, MOTION_FILE, model.hf_revision, root, online),
        "renderer_checkpoint": _hf_file(model.hf_repo, RENDERER_FILE, model.hf_revision, root, online),
    }
    for name, filename in WAV2VEC_FILES.items():
        files[name] = _hf_file(model.wav2vec_repo, filename, None, root / WAV2VEC_DIR, online)
    files["face_landmarker"] = download_url(model.face_landmarker_url, model.face_landmarker_path, progress=progress)
    free = shutil.disk_usage(root).free
    log.info("weights ready", extra={"root": str(root), "files": len(files), "disk_free_gb": round(free / 1e9, 1)})
    return files
