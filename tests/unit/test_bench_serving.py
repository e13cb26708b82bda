"""The serving benchmark's entry points: the GPU one refuses a machine without CUDA in one line."""

from __future__ import annotations

import pytest
import torch

from bench import gpu


def test_the_gpu_benchmark_without_cuda_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0] and "no CUDA device" in err[0]
    assert not (tmp_path / "gpu.json").exists()
