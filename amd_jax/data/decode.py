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
  needs, as decord's seek does, instead of at the start of the file. It then
  decodes only what the wanted frames depend on: a frame that is neither wanted
  nor a reference of a later frame is skipped by the decoder, and decoding stops
  after the packet of the last wanted frame. A reference frame is always decoded,
  so the frames returned are those of a decode of the whole file, bit for bit.
  """

  def __init__(self, data: bytes):
    try:
      # skip_frame "all" reaches only the decoder of the stream probe: opening then
      # reads the headers without decoding frames (it decoded some, about 3 ms a
      # video at 640×360); `frames` decodes with a decoder of its own.
      self._container = av.open(io.BytesIO(data), mode="r", options={"skip_frame": "all"})
      if not self._container.streams.video:
        raise Undecodable("no video stream")
      self._stream = self._container.streams.video[0]
      # Parallelism comes from the grain workers; decoder threads would oversubscribe them
      # (and frame threads cost more CPU per frame: docs/benchmarks.md#input-pipeline-dev-cpu).
      self._stream.thread_type = "NONE"
      self._packets = [p for p in self._container.demux(self._stream) if p.size]
    except _ERRORS as e:
      raise Undecodable(f"cannot demux: {e}") from None
    declared = self._stream.frames
    if not self._packets:
      raise Undecodable("no video frames")
    if declared and len(self._packets) < declared:
      raise Undecodable(f"truncated: {len(self._packets)} of {declared} frames")
    # Some containers (AVI) carry no pts, or make them up from the decode order.
    # Packet order is then the presentation order only without B-frames; with
    # them, frames are numbered as the decoder puts them out, from the start.
    pts = [p.pts for p in self._packets]
    reordered = None not in pts and any(b < a for a, b in zip(pts, pts[1:]))
    self._in_output_order = not reordered and self._stream.codec_context.has_b_frames
    if None in pts:
      for i, p in enumerate(self._packets):
        p.pts = i
    self._index = {pts: i for i, pts in enumerate(sorted(p.pts for p in self._packets))}
    self.decoded = 0

  @property
  def num_frames(self) -> int:
    return len(self._packets)

  @property
  def fps(self) -> float:
    rate = self._stream.average_rate or self._stream.guessed_rate
    return float(rate) if rate else 0.0

  def frames(self, indices: Sequence[int]) -> np.ndarray:
    """uint8 (len(indices), H, W, 3); indices may repeat and come in any order.

    Sets `decoded`: the frames the decoder made for this call (the others were
    skipped as unneeded).
    """
    wanted = set(int(i) for i in indices)
    if min(wanted) < 0 or max(wanted) >= self.num_frames:
      raise IndexError(f"frame indices {min(wanted)}..{max(wanted)} outside "
                       f"0..{self.num_frames - 1}")
    try:
      got = (self._in_order(wanted) if self._in_output_order else self._by_pts(wanted))
    except _ERRORS as e:
      raise Undecodable(f"decoding failed: {e}") from None
    if len(got) < len(wanted):
      raise Undecodable(f"decoded {len(got)} of {len(wanted)} requested frames")
    return np.stack([got[int(i)] for i in indices])

  def _by_pts(self, wanted: set[int]) -> dict[int, np.ndarray]:
    """The wanted frames by presentation index, decoding from the keyframe before the first."""
    first = min(wanted)
    start = end = 0
    for k, p in enumerate(self._packets):
      i = self._index[p.pts]
      if p.is_keyframe and i <= first:
        start = k
      if i in wanted:
        end = k
    got = {}
    codec = self._stream.codec_context
    # One converter for all frames: building swscale's context per frame costs
    # more than the conversion itself at 320p and above.
    to_rgb = VideoReformatter()
    self.decoded = 0

    def keep(frames):
      for frame in frames:
        self.decoded += 1
        i = self._index.get(frame.pts if frame.pts is not None else -1)
        if i in wanted and i not in got:
          got[i] = to_rgb.reformat(frame, format="rgb24").to_ndarray()

    try:
      # Every reference comes before the frames that use it in decode order: after
      # the last wanted frame's packet, draining the decoder puts out the rest.
      for packet in self._packets[start:end + 1]:
        # NONREF: the decoder drops this frame if no other frame refers to it.
        codec.skip_frame = "DEFAULT" if self._index[packet.pts] in wanted else "NONREF"
        keep(codec.decode(packet))
      codec.skip_frame = "DEFAULT"
      keep(codec.decode(None))
    finally:
      codec.flush_buffers()         # ready for the next call, from another keyframe
    return got

  def _in_order(self, wanted: set[int]) -> dict[int, np.ndarray]:
    """The wanted frames numbered in the decoder's output order, decoding from the start."""
    got = {}
    to_rgb = VideoReformatter()
    last = max(wanted)
    codec = self._stream.codec_context
    self.decoded = 0
    try:
      for packet in self._packets + [None]:    # None drains the decoder
        for frame in codec.decode(packet):
          if self.decoded in wanted:
            got[self.decoded] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
          self.decoded += 1
        if self.decoded > last:
          break
    finally:
      codec.flush_buffers()
    return got

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
