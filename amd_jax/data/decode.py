"""Decoding in grain workers: encoded video bytes (PyAV) or per-frame JPEG bytes (PIL).

Frames come out as uint8 (T, H, W, 3) RGB and stay uint8 until they are on the
device. A file that cannot be decoded (truncated, corrupt, no video stream, fewer
frames than its header promises) raises `Undecodable`; the pipeline skips it.
"""

from __future__ import annotations

import fractions
import io
from collections.abc import Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image


class Undecodable(Exception):
  """A video whose frames cannot be read; the message says why."""


# What PyAV raises on broken input: its FFmpeg errors, and ValueError / EOFError
# for streams it cannot describe or that end early.
_ERRORS = (av.FFmpegError, ValueError, EOFError)


class Video:
  """An encoded video held in memory, demuxed once; frames decoded on demand.

  Frame i is the i-th frame in presentation order. Demuxing every packet up
  front is cheap (no decoding) and gives the exact frame count and the keyframes,
  so `frames` starts decoding at the last keyframe before the first frame it
  needs, as decord's seek does, instead of at the start of the file.
  """

  def __init__(self, data: bytes):
    try:
      self._container = av.open(io.BytesIO(data), mode="r")
      if not self._container.streams.video:
        raise Undecodable("no video stream")
      self._stream = self._container.streams.video[0]
      # Parallelism comes from the grain workers; decoder threads would oversubscribe them.
      self._stream.thread_type = "NONE"
      self._packets = [p for p in self._container.demux(self._stream) if p.size]
    except _ERRORS as e:
      raise Undecodable(f"cannot demux: {e}") from None
    declared = self._stream.frames
    if not self._packets:
      raise Undecodable("no video frames")
    if declared and len(self._packets) < declared:
      raise Undecodable(f"truncated: {len(self._packets)} of {declared} frames")
    # Some containers (AVI) carry no pts: their decode order is the display order.
    if any(p.pts is None for p in self._packets):
      for i, p in enumerate(self._packets):
        p.pts = i
    self._index = {pts: i for i, pts in enumerate(sorted(p.pts for p in self._packets))}

  @property
  def num_frames(self) -> int:
    return len(self._packets)

  @property
  def fps(self) -> float:
    rate = self._stream.average_rate or self._stream.guessed_rate
    return float(rate) if rate else 0.0

  def frames(self, indices: Sequence[int]) -> np.ndarray:
    """uint8 (len(indices), H, W, 3); indices may repeat and come in any order."""
    wanted = set(int(i) for i in indices)
    if min(wanted) < 0 or max(wanted) >= self.num_frames:
      raise IndexError(f"frame indices {min(wanted)}..{max(wanted)} outside "
                       f"0..{self.num_frames - 1}")
    first = min(wanted)
    start = 0
    for k, p in enumerate(self._packets):
      if p.is_keyframe and self._index[p.pts] <= first:
        start = k
    got = {}
    codec = self._stream.codec_context
    # One converter for all frames: building swscale's context per frame costs
    # more than the conversion itself at 320p and above.
    to_rgb = VideoReformatter()
    try:
      for packet in self._packets[start:] + [None]:   # None flushes the decoder
        for frame in codec.decode(packet):
          i = self._index.get(frame.pts if frame.pts is not None else -1)
          if i in wanted and i not in got:
            got[i] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
        if len(got) == len(wanted):
          break
    except _ERRORS as e:
      raise Undecodable(f"decoding failed: {e}") from None
    if len(got) < len(wanted):
      raise Undecodable(f"decoded {len(got)} of {len(wanted)} requested frames")
    return np.stack([got[int(i)] for i in indices])

  def close(self) -> None:
    self._container.close()

  def __enter__(self) -> Video:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def jpeg_frames(images: Sequence[bytes], indices: Sequence[int]) -> np.ndarray:
  """uint8 (len(indices), H, W, 3) from per-frame JPEG (or PNG) bytes, decoded once each."""
  decoded = {}
  try:
    for i in set(int(i) for i in indices):
      with Image.open(io.BytesIO(images[i])) as im:
        decoded[i] = np.asarray(im.convert("RGB"))
  except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for broken images
    raise Undecodable(f"frame {i}: {e}") from None
  shapes = {f.shape for f in decoded.values()}
  if len(shapes) > 1:
    raise Undecodable(f"frames of different sizes {sorted(shapes)}")
  return np.stack([decoded[int(i)] for i in indices])


def encode(frames: np.ndarray, fps: int = 25, crf: int = 18, keyint: int = 16,
           codec: str = "libx264") -> bytes:
  """H.264 mp4 bytes of uint8 (T, H, W, 3) frames (H, W even); deterministic.

  keyint: the longest gap between keyframes; short gaps make decoding a clip in
  the middle of a long video cheap (decoding starts at the keyframe before it).
  """
  t, h, w, _ = frames.shape
  buf = io.BytesIO()
  with av.open(buf, mode="w", format="mp4") as out:
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    # The builders must write the same bytes on every run and machine: one
    # thread (x264's output depends on the thread count), and none of the
    # lookahead decisions (adaptive B-frames, scene cuts, macroblock tree,
    # weighted prediction), which made about one tiny clip in a hundred come
    # out differently from run to run. Keyframes come every `keyint` frames.
    stream.options = {"crf": str(crf), "g": str(keyint), "threads": "1",
                      "preset": "veryfast",
                      "x264-params": "log-level=none:rc-lookahead=0:b-adapt=0:scenecut=0:"
                                     "mbtree=0:weightp=0"}
    for i, f in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
      # Explicit timestamps: frames without them reach x264 with undefined pts,
      # and its rate control then makes different choices from run to run.
      frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
      out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
  return buf.getvalue()
