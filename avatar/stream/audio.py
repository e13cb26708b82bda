"""Incremental audio features for streaming (docs/architecture.md §4 run frame by frame from a ring of raw audio, §9).

Offline, each stream is padded with 94 frames of silence, normalised as one utterance, encoded once by its wav2vec2
encoder (bidirectional) and brought to 25 fps with ``align_corners=True`` over the whole clip. A live stream has no
whole clip, so ``StreamFeatures`` computes the 25 fps feature of each new frame from a bounded window of the
stream's timeline (the same 94-frame silent prefix, then the audio):

    [ left context | the frame's 40 ms | lookahead ] + 80 zeros  →  encoder  →  the frame's feature

and never re-encodes the history. Two settings of the same computation:

- bounded (live): the window starts ``left_context`` frames before the frame (silence before the prefix, so
  every window has the same length) and ends at the end of the lookahead given with it. Normalisation uses
  running statistics of everything heard so far (the silent prefix included, as offline; plus the lookahead),
  kept as float64 sums, so a quiet window is not blown up to unit variance. The 25 fps feature is the plain
  (unstretched) downsampling, the mean of the frame's two 50 Hz features (``F.interpolate(...,
  align_corners=False)``): the stretch of ``align_corners=True`` depends on the clip's length, which a live
  stream does not have. A window of exact zeros is not encoded: its feature is cached (it depends only on the
  window's length and the frame's place in it), so a silent stream costs nothing.
- full context (fidelity): the lookahead given with each frame is the rest of the clip and the window has no left
  bound, so the window is the whole padded clip, normalised exactly as ``avatar.motion.audio.normalize_utterance`` and
  downsampled with ``avatar.motion.audio.to_25fps``: the features equal the offline ones. The window is identical for
  every frame, so it is encoded once (the encoding is cached with the window's content).

Frame indices here are timeline frames: 0 … 93 are the silent prefix, frame 94 is the stream's first 40 ms.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from avatar.errors import InputError
from avatar.motion.audio import NORM_EPS, SAMPLES_PER_FRAME, TAIL_PAD, AudioEncoder, normalize_utterance, to_25fps
from avatar.stream.cuda import GraphedCall
from avatar.stream.traced import TracedCall


class _Timeline:
    """The committed samples of a stream (a ring of the newest ``capacity`` samples, or all of them), with running
    float64 sums of every sample ever committed."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self._buffer = np.zeros(capacity or 1 << 16, dtype=np.float32)
        self.end = 0  # samples committed so far (timeline index of the next one)
        self.sum = 0.0
        self.sumsq = 0.0

    def append(self, samples: np.ndarray) -> None:
        n = samples.size
        if self.capacity is None:
            if self.end + n > self._buffer.size:
                grown = np.zeros(max(2 * self._buffer.size, self.end + n), dtype=np.float32)
                grown[: self.end] = self._buffer[: self.end]
                self._buffer = grown
            self._buffer[self.end : self.end + n] = samples
        else:
            index = (self.end + np.arange(n)) % self.capacity
            self._buffer[index] = samples
        self.end += n
        x = samples.astype(np.float64)
        self.sum += float(x.sum())
        self.sumsq += float(np.dot(x, x))

    @property
    def start(self) -> int:
        """Oldest timeline index still held."""
        return 0 if self.capacity is None else max(0, self.end - self.capacity)

    def read(self, begin: int, end: int) -> np.ndarray:
        if begin < self.start or end > self.end or begin > end:
            raise InputError(f"timeline samples [{begin}, {end}) are not held (held: [{self.start}, {self.end}))")
        if self.capacity is None:
            return self._buffer[begin:end]
        return self._buffer[np.arange(begin, end) % self.capacity]


class StreamFeatures:
    """The 25 fps audio features of one stream (self or other), one frame at a time."""

    def __init__(
        self,
        encoder: AudioEncoder,
        *,
        prefix_frames: int,
        left_context_frames: int,
        full_context: bool = False,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        trace: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        if left_context_frames < 0:
            raise InputError(f"left context must be >= 0 frames, got {left_context_frames}")
        self.encoder = encoder
        # every bounded window has the same length: one trace (``avatar.stream.traced``) on the CPU, or one CUDA
        # graph (``avatar.stream.cuda``), serves the whole stream
        self._encoder: Callable[[torch.Tensor], torch.Tensor] = TracedCall(
            encoder, "audio encoder", [encoder], enabled=trace and not full_context
        )
        if cuda_graphs and torch.device(device).type == "cuda" and not full_context:
            self._encoder = GraphedCall(encoder, "audio encoder")
        self.prefix_frames = prefix_frames
        self.left_context_frames = left_context_frames
        self.full_context = full_context
        self.device = torch.device(device)
        self.dtype = dtype
        # bounded: hold the left context, and the whole prefix for the start-up (``first``), plus a margin
        held = (max(left_context_frames, prefix_frames) + 2) * SAMPLES_PER_FRAME
        self._timeline = _Timeline(None if full_context else held)
        self._timeline.append(np.zeros(prefix_frames * SAMPLES_PER_FRAME, dtype=np.float32))
        self._silent: dict[tuple[int, int], torch.Tensor] = {}
        self._full_window: np.ndarray | None = None
        self._full_feats: torch.Tensor | None = None
        self.encodes = 0  # encoder runs so far (for stats and tests)

    def fresh(self) -> StreamFeatures:
        """A new stream with the same settings and the same (traced) encoder: warming up without touching this one."""
        other = StreamFeatures(
            self.encoder,
            prefix_frames=self.prefix_frames,
            left_context_frames=self.left_context_frames,
            full_context=self.full_context,
            device=self.device,
            dtype=self.dtype,
        )
        other._encoder = self._encoder
        return other

    @property
    def frames(self) -> int:
        """Timeline frames committed (the prefix included)."""
        return self._timeline.end // SAMPLES_PER_FRAME

    def first(self, audio: np.ndarray, lookahead: np.ndarray) -> torch.Tensor:
        """Commit the stream's first 40 ms; features [prefix_frames, A] of timeline frames 1 … prefix_frames, i.e.
        what the first transformer window needs (the prefix frames as they would have been computed live, each with
        its own lookahead, then the new frame)."""
        if self.frames != self.prefix_frames:
            raise InputError("StreamFeatures.first() must be called once, before any next()")
        self.commit(audio)
        return torch.stack([self._feature(frame, lookahead) for frame in range(1, self.prefix_frames + 1)])

    def next(self, audio: np.ndarray, lookahead: np.ndarray) -> torch.Tensor:
        """Commit the next 40 ms; its feature [A]."""
        if self.frames <= self.prefix_frames:
            raise InputError("StreamFeatures.next() needs first() to have been called")
        self.commit(audio)
        return self._feature(self.frames - 1, lookahead)

    def recent(self, count: int, lookahead: np.ndarray) -> torch.Tensor:
        """Features [count, A] of the newest ``count`` committed frames, all from the newest frame's window: one
        encoder run for all of them (the older frames get that much more lookahead and less left context)."""
        newest = self.frames - 1
        if not 1 <= count <= min(self.left_context_frames + 1, newest - self.prefix_frames + 1):
            raise InputError(f"cannot take the features of {count} recent frames from one window")
        if self.full_context:
            return torch.stack(
                [self._full_context_feature(f, lookahead) for f in range(newest - count + 1, newest + 1)]
            )
        return self._window_features(newest, count, lookahead)

    def commit(self, audio: np.ndarray) -> None:
        """Append the next 40 ms to the stream's timeline (``next`` does it too, with the frame's feature)."""
        if audio.shape != (SAMPLES_PER_FRAME,):
            raise InputError(f"a frame of audio must be [{SAMPLES_PER_FRAME}] samples, got shape {audio.shape}")
        self._timeline.append(audio.astype(np.float32, copy=False))

    def _window(self, begin: int, end: int, lookahead: np.ndarray) -> np.ndarray:
        """Timeline samples [begin, end): committed ones, then the tentative lookahead after them."""
        committed_end = self._timeline.end
        if end - committed_end > lookahead.size:
            raise InputError("window reaches past the lookahead given with the frame")
        head = self._timeline.read(begin, min(end, committed_end))
        if end <= committed_end:
            return head
        return np.concatenate([head, lookahead[: end - committed_end].astype(np.float32, copy=False)])

    def _feature(self, frame: int, lookahead: np.ndarray) -> torch.Tensor:
        if self.full_context:
            return self._full_context_feature(frame, lookahead)
        return self._window_features(frame, 1, lookahead)[0]

    def _window_features(self, frame: int, count: int, lookahead: np.ndarray) -> torch.Tensor:
        """Features [count, A] of frames ``frame - count + 1`` … ``frame`` from ``frame``'s window."""
        end = (frame + 1) * SAMPLES_PER_FRAME + lookahead.size  # the lookahead has the same length for every frame
        begin = (frame - self.left_context_frames) * SAMPLES_PER_FRAME  # before the prefix: silence, as before it
        window = self._window(max(begin, 0), end, lookahead)
        if begin < 0:
            window = np.concatenate([np.zeros(-begin, dtype=np.float32), window])
        if not window.any():
            if window.size not in self._silent:
                self._silent[window.size] = self._encode(window)
            feat50 = self._silent[window.size]
        else:
            mean, std = self._running_stats(end, lookahead)
            feat50 = self._encode(((window - mean) / std).astype(np.float32))
        return self._frames_of(feat50, self.left_context_frames, count)

    def _running_stats(self, end: int, lookahead: np.ndarray) -> tuple[np.float32, np.float32]:
        """Mean and ``sqrt(var + 1e-7)`` of timeline samples [0, end) (everything heard up to the window's end)."""
        timeline = self._timeline
        total, sumsq = timeline.sum, timeline.sumsq
        if end >= timeline.end:
            extra = lookahead[: end - timeline.end].astype(np.float64)
            total, sumsq = total + float(extra.sum()), sumsq + float(np.dot(extra, extra))
        else:
            removed = timeline.read(end, timeline.end).astype(np.float64)
            total, sumsq = total - float(removed.sum()), sumsq - float(np.dot(removed, removed))
        mean = total / end
        var = max(sumsq / end - mean * mean, 0.0)
        return np.float32(mean), np.float32(np.sqrt(var + NORM_EPS))

    @staticmethod
    def _frames_of(feat50: torch.Tensor, local: int, count: int) -> torch.Tensor:
        """Features [count, A] of window frames ``local - count + 1`` … ``local``: the mean of each one's two 50 Hz
        features (unstretched 25 fps)."""
        if feat50.shape[0] < 2 * local + 2:
            raise InputError(f"audio window of {feat50.shape[0]} 50 Hz features is too short for frame {local}")
        pairs = feat50[2 * (local - count + 1) : 2 * local + 2]
        return 0.5 * (pairs[0::2] + pairs[1::2])

    def _encode(self, normalized: np.ndarray) -> torch.Tensor:
        """Encoder input (normalised window + 80 zeros) → 50 Hz features [L, A]."""
        values = torch.from_numpy(np.concatenate([normalized, np.zeros(TAIL_PAD, dtype=np.float32)]))[None]
        if self.device.type == "cuda":  # from pinned memory the upload is queued, not waited for
            values = values.pin_memory()
        tensor = values.to(device=self.device, dtype=self.dtype, non_blocking=True)
        self.encodes += 1
        return self._encoder(tensor)[0]

    def _full_context_feature(self, frame: int, lookahead: np.ndarray) -> torch.Tensor:
        window = self._window(0, self._timeline.end + lookahead.size, lookahead)
        if self._full_window is None or not np.array_equal(window, self._full_window):
            feat50 = self._encode(normalize_utterance(window))
            self._full_window = window.copy()
            self._full_feats = to_25fps(feat50[None])[0]
        assert self._full_feats is not None
        if frame >= self._full_feats.shape[0]:
            raise InputError(f"frame {frame} is past the clip given as lookahead ({self._full_feats.shape[0]} frames)")
        return self._full_feats[frame]
