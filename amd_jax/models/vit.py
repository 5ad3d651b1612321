"""Video ViT: tubelet embedding, pre-norm blocks, encoder (docs/method.md#models).

Layouts: videos are (B, T, H, W, C) channels-last; tokens are flattened in
(t, h, w) order with w fastest; a tubelet is flattened (kt, kh, kw, c) with the
channel fastest, the same order as the reconstruction target
(docs/method.md#pixel-targets).
Parameters carry logical axis names ("embed", "mlp", ...); the rules that map
them onto a device mesh live in the config (amd_jax/sharding.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from amd_jax import errors, tokens
from amd_jax.models import posemb

# name: (width, depth, heads, decoder width, decoder heads). MLP ratio 4, head
# dim 64 except "Mu" (32). "Mu" and "Mi" are the embedded study's student and
# teacher: Mi has twice Mu's width (as ViT-B over ViT-S) and twice its depth (as
# ViT-L over ViT-B).
_SIZES = {
    "Mu": (64, 4, 2, 32, 1),
    "Mi": (128, 8, 2, 64, 1),
    "Ti": (192, 12, 3, 96, 3),
    "S": (384, 12, 6, 192, 3),
    "B": (768, 12, 12, 384, 6),
    "L": (1024, 24, 16, 512, 8),
    "H": (1280, 32, 16, 640, 8),
}


@dataclasses.dataclass(frozen=True)
class Variant:
  width: int
  depth: int
  heads: int
  mlp_dim: int
  patch: int
  tubelet: int
  decoder_width: int
  decoder_heads: int


def decode_variant(name: str) -> Variant:
  """"S/16x2" → ViT-S, 16×16 patches, tubelets of 2 frames; "S/16" is an image model."""
  m = re.fullmatch(r"(\w+)/(\d+)(?:x(\d+))?", name)
  if not m or m.group(1) not in _SIZES:
    raise errors.BadInput(f"unknown model variant {name!r}: expected SIZE/PATCH[xTUBELET] "
                     f"with SIZE in {'|'.join(_SIZES)}, e.g. 'S/16x2'")
  width, depth, heads, dec_width, dec_heads = _SIZES[m.group(1)]
  return Variant(width=width, depth=depth, heads=heads, mlp_dim=4 * width,
                 patch=int(m.group(2)), tubelet=int(m.group(3) or 1),
                 decoder_width=dec_width, decoder_heads=dec_heads)


def variant_name(width: int, depth: int, heads: int, patch: int, tubelet: int) -> str | None:
  """The name decode_variant reads back for these encoder dimensions, if any."""
  for size, (w, d, h, _, _) in _SIZES.items():
    if (w, d, h) == (width, depth, heads):
      return f"{size}/{patch}x{tubelet}" if tubelet > 1 else f"{size}/{patch}"
  return None


def token_grid(num_frames: int, image_size: int | Sequence[int], patch: int,
               tubelet: int) -> tuple[int, int, int]:
  """(t, h, w) token grid of a clip."""
  h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
  if num_frames % tubelet or h % patch or w % patch:
    raise errors.BadInput(f"clip {num_frames}×{h}×{w} is not divisible into "
                     f"{tubelet}×{patch}×{patch} tubelets")
  return num_frames // tubelet, h // patch, w // patch


@functools.lru_cache(maxsize=None)
def _position_table(num_tokens: int, width: int) -> np.ndarray:
  return posemb.sinusoid_table(num_tokens, width)


def position_embedding(num_tokens: int, width: int, idx: jnp.ndarray | None,
                       batch: int) -> jnp.ndarray:
  """The fixed sinusoid table (B, n, width) at token indices idx."""
  table = jnp.asarray(_position_table(num_tokens, width))
  if idx is None:
    return jnp.broadcast_to(table, (batch,) + table.shape)
  return table[idx]


def sharded(init, *names: str | None):
  """An initializer whose parameter carries logical axis names.

  Eager sharding is off so that models can be built outside a mesh (tests,
  eval_shape); state.create_state turns the names into shardings explicitly.
  """
  return nnx.with_partitioning(init, names, eager_sharding=False)


xavier = nnx.initializers.xavier_uniform()
zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()


def torch_default_uniform(fan_in: int):
  """PyTorch's default Linear/Conv init, U(±1/√fan_in), for kernels and biases.

  VideoMAE leaves the patch embedding and encoder_to_decoder at this init
  (docs/method.md#initialisation).
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def truncated_normal_1sigma(std: float = 0.02):
  """N(0, std²) truncated at ±1σ, as the official `trunc_normal_(std, a=-std, b=std)`."""

  def init(key, shape, dtype=jnp.float32):
    return std * jax.random.truncated_normal(key, -1.0, 1.0, shape, dtype)

  return init


def layer_norm(width: int, eps: float, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Two-pass variance like torch's LayerNorm: the fast E[x²]−E[x]² form drifts
  # on the large residual streams of deep teachers.
  return nnx.LayerNorm(width, epsilon=eps, dtype=dtype, use_fast_variance=False,
                       scale_init=sharded(ones, "embed"),
                       bias_init=sharded(zeros, "embed"), rngs=rngs)


def dense(fan_in: int, fan_out: int, names: tuple[str, str], *, dtype, rngs,
          use_bias: bool = True, init=xavier) -> nnx.Linear:
  return nnx.Linear(fan_in, fan_out, use_bias=use_bias, dtype=dtype,
                    kernel_init=sharded(init, *names),
                    bias_init=sharded(zeros, names[1]), rngs=rngs)


class PatchEmbed(nnx.Module):
  """Conv3d with stride = kernel, as a matmul over flattened tubelets.

  The kernel keeps the Conv layout (kt, kh, kw, C, D) so checkpoints convert with
  a plain transpose; reshaped, it matches `tokens.patchify`'s (kt, kh, kw, c) order.
  Only the tubelets a model sees are embedded.
  """

  def __init__(self, patch: int, tubelet: int, in_chans: int, width: int, *,
               dtype, rngs: nnx.Rngs):
    fan_in = tubelet * patch * patch * in_chans
    init = torch_default_uniform(fan_in)
    self.kernel = nnx.Param(sharded(init, None, None, None, None, "embed")(
        rngs.params(), (tubelet, patch, patch, in_chans, width)))
    self.bias = nnx.Param(sharded(init, "embed")(rngs.params(), (width,)))
    self.dtype = dtype

  def __call__(self, tubelets: jnp.ndarray) -> jnp.ndarray:
    kernel = self.kernel[...].reshape(-1, self.kernel.shape[-1])
    y = jnp.dot(tubelets.astype(self.dtype), kernel.astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)


# Queries per block of the blocked attention (see `attention`).
CPU_QUERY_BLOCK = 256

# config.model.attention / config.teacher.attention (configs/common.py).
ATTENTION_IMPLEMENTATIONS = ("auto", "blocked", "xla", "cudnn")
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def auto_attention(dtype, platform: str | None = None) -> str:
  """The implementation "auto" stands for on `platform` (cpu | gpu | tpu; default: the
  default backend's), for inputs of `dtype`."""
  backend = platform or jax.default_backend()
  if backend == "cpu":
    return "blocked"
  if backend == "gpu" and jnp.dtype(dtype) in _CUDNN_DTYPES:
    return "cudnn"
  return "xla"


def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray,
              implementation: str = "auto") -> jnp.ndarray:
  """Softmax attention, (B, N, heads, head_dim) in and out, scale head_dim^-0.5.

  implementation:
    blocked  einsums over blocks of CPU_QUERY_BLOCK queries, each normalised
             after its value product: on CPU it beats jax.nn.dot_product_attention's
             XLA path, whose 5-D batched dots (a vmap over query groups) form all
             N×N scores at once (timings in docs/benchmarks.md). float32 logits
             and softmax, the output in the value dtype, as the others.
    xla      jax.nn.dot_product_attention(implementation="xla").
    cudnn    cuDNN's fused flash attention (NVIDIA GPUs, bfloat16/float16 only):
             the N×N scores never reach memory. jax.nn.dot_product_attention
             uses XLA unless asked for it.
    auto     `auto_attention`: blocked on CPU, cudnn on GPU for bfloat16/float16,
             else xla; decided by the default backend when traced.
  """
  if implementation == "auto":
    implementation = auto_attention(q.dtype)
  if implementation == "blocked":
    blocks = jnp.array_split(q, -(-q.shape[1] // CPU_QUERY_BLOCK), axis=1)
    return jnp.concatenate([_attention_block(x, k, v) for x in blocks], axis=1)
  if implementation == "cudnn" and q.dtype not in _CUDNN_DTYPES:
    # cuDNN's own error names neither the cause nor the fix.
    raise errors.BadInput(f"attention 'cudnn' needs bfloat16 or float16 inputs, got {q.dtype}: "
                          "set the model dtype to bfloat16 (backend=gpu does) or use 'xla'")
  return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


def _logits(q: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
  """Scores (B, heads, Nq, Nk) in float32: q·k scaled by head_dim^-0.5."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  return logits * q.shape[-1] ** -0.5


def _attention_block(q, k, v):
  logits = _logits(q, k)
  # Softmax is shift-invariant: the max only keeps exp in range, no gradient flows.
  e = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
  y = jnp.einsum("bhqk,bkhd->bqhd", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return (y / e.sum(axis=-1).transpose(0, 2, 1)[..., None]).astype(v.dtype)


class Attention(nnx.Module):
  """Fused qkv without a bias parameter; learnable q and v biases, k bias fixed at 0.

  `implementation` is `attention`'s; `set_attention` sets it model-wide.
  Called with `probs=True`, it computes the float32 softmax over keys
  explicitly, sows it as the `nnx.Intermediate` "probs" (B, heads, N, N) for
  `nnx.capture` to collect (`Encoder.attention_probs`), and takes its output
  from those probabilities: the fused implementations never form them.
  """

  def __init__(self, width: int, heads: int, *, dtype, rngs: nnx.Rngs):
    self.heads = heads
    self.dtype = dtype
    self.implementation = "auto"
    self.qkv = dense(width, 3 * width, ("embed", "qkv"), use_bias=False,
                     dtype=dtype, rngs=rngs)
    self.q_bias = nnx.Param(sharded(zeros, "qkv")(rngs.params(), (width,)))
    self.v_bias = nnx.Param(sharded(zeros, "qkv")(rngs.params(), (width,)))
    self.proj = dense(width, width, ("qkv", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray, *, probs: bool = False) -> jnp.ndarray:
    b, n, d = x.shape
    q_bias = self.q_bias[...]
    bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), self.v_bias[...]])
    qkv = self.qkv(x) + bias.astype(self.dtype)
    q, k, v = (t[:, :, 0] for t in
               jnp.split(qkv.reshape(b, n, 3, self.heads, d // self.heads), 3, axis=2))
    if probs:
      p = jax.nn.softmax(_logits(q, k), axis=-1)
      self.sow(nnx.Intermediate, "probs", p)
      y = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v,
                     preferred_element_type=jnp.float32).astype(v.dtype)
    else:
      y = attention(q, k, v, self.implementation)
    return self.proj(y.reshape(b, n, d))


def set_attention(model: nnx.Module, implementation: str) -> None:
  """Sets the attention implementation of every Attention inside `model`.

  Set after construction so that one config field reaches the encoder, the
  decoder and the generators without threading it through every constructor.
  The name is static (it lives in the graphdef).
  """
  if implementation not in ATTENTION_IMPLEMENTATIONS:
    raise errors.BadInput(f"unknown attention implementation {implementation!r}: choose from "
                          f"{'|'.join(ATTENTION_IMPLEMENTATIONS)}")
  model.set_attributes(Attention, implementation=implementation)


class Mlp(nnx.Module):

  def __init__(self, width: int, hidden: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = dense(width, hidden, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.fc2 = dense(hidden, width, ("mlp", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


def drop_path(x: jnp.ndarray, rate: float, rng: jax.Array | None) -> jnp.ndarray:
  """Per-sample stochastic depth with 1/keep rescaling; identity without an rng."""
  if rng is None or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class Block(nnx.Module):
  """Pre-norm transformer block (no LayerScale: it is off in every AMD model)."""

  def __init__(self, width: int, heads: int, mlp_dim: int, *, drop_path: float = 0.0,
               ln_eps: float = 1e-6, dtype=jnp.float32, rngs: nnx.Rngs):
    self.norm1 = layer_norm(width, ln_eps, dtype, rngs)
    self.attn = Attention(width, heads, dtype=dtype, rngs=rngs)
    self.norm2 = layer_norm(width, ln_eps, dtype, rngs)
    self.mlp = Mlp(width, mlp_dim, dtype=dtype, rngs=rngs)
    self.drop_path = drop_path

  def __call__(self, x: jnp.ndarray, rng: jax.Array | None = None,
               probs: bool = False) -> jnp.ndarray:
    """`probs`: Attention's (its probabilities sown for nnx.capture)."""
    rngs = (None, None) if rng is None else tuple(jax.random.split(rng))
    x = x + drop_path(self.attn(self.norm1(x), probs=probs), self.drop_path, rngs[0])
    return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, rngs[1])


class Blocks(nnx.Module):
  """A stack of blocks returning the residual stream after each of them."""

  def __init__(self, depth: int, width: int, heads: int, mlp_dim: int, *,
               drop_path: float = 0.0, ln_eps: float = 1e-6, remat: bool = False,
               dtype=jnp.float32, rngs: nnx.Rngs):
    rates = np.linspace(0.0, drop_path, depth) if depth > 1 else [drop_path]
    self.layers = nnx.List([
        Block(width, heads, mlp_dim, drop_path=float(r), ln_eps=ln_eps,
              dtype=dtype, rngs=rngs) for r in rates])
    self.remat = remat

  def __call__(self, x: jnp.ndarray, rng: jax.Array | None = None, *, probs: bool = False
               ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]:
    # `probs` is a Python flag choosing the code path: static under remat.
    call = nnx.remat(Block.__call__, static_argnums=3) if self.remat else Block.__call__
    keys = [None] * len(self.layers) if rng is None else jax.random.split(rng, len(self.layers))
    hidden = []
    for layer, key in zip(self.layers, keys):
      x = call(layer, x, key, probs)
      hidden.append(x)
    return x, tuple(hidden)


class Encoder(nnx.Module):
  """Video ViT encoder without a cls token.

  Called on a normalised video (B, T, H, W, C) and optional token indices
  (B, n) (the visible tokens, ascending), it returns `(x, hidden)`: x (B, n, D)
  after the final LayerNorm when `final_norm` (pre-training, AVA) else the last
  residual stream, and `hidden`, the raw residual stream after every block
  (hidden[l-1] is layer l, for alignment; unused ones cost nothing under jit).
  `positions` replaces the position embedding (see `embed`). With
  `attention_probs=True` every block computes its attention probabilities
  explicitly and sows them (see `Attention`); the method `attention_probs`
  collects them. `ln_eps` is the blocks' LayerNorm epsilon, `norm_eps` the
  final norm's (None: the same); converted checkpoints set both (HF's defaults
  differ from 1e-6).
  """

  def __init__(self, variant: Variant, *, num_frames: int, image_size: int | Sequence[int],
               in_chans: int = 3, drop_path: float = 0.0, final_norm: bool = True,
               ln_eps: float = 1e-6, norm_eps: float | None = None, remat: bool = False,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.variant = variant
    self.grid = token_grid(num_frames, image_size, variant.patch, variant.tubelet)
    self.num_tokens = math.prod(self.grid)
    self.patch_embed = PatchEmbed(variant.patch, variant.tubelet, in_chans, variant.width,
                                  dtype=dtype, rngs=rngs)
    self.blocks = Blocks(variant.depth, variant.width, variant.heads, variant.mlp_dim,
                         drop_path=drop_path, ln_eps=ln_eps, remat=remat, dtype=dtype,
                         rngs=rngs)
    self.norm = (layer_norm(variant.width, ln_eps if norm_eps is None else norm_eps, dtype, rngs)
                 if final_norm else None)

  def embed(self, video: jnp.ndarray, idx: jnp.ndarray | None = None,
            positions: jnp.ndarray | None = None) -> jnp.ndarray:
    """Tokens (B, n, D) of the tubelets at idx, with their position embedding.

    The fixed sinusoid table is the one of this clip's token grid, so a model
    takes clips of any size its tubelets divide (as the official code rebuilds
    the table for a new frame count), not only the size it was built for.
    `positions` ((n, D) or (B, n, D), for the tokens at idx) is added instead
    of that table: the AVA detector's, the pre-training table resized to its
    clip (roi.position_table).
    """
    v = self.variant
    num_tokens = self.clip_tokens(video)     # first: a clip the tubelets do not divide is refused
    tubelets = tokens.gather_tokens(tokens.patchify(video, v.patch, v.tubelet), idx)
    x = self.patch_embed(tubelets)
    if positions is None:
      positions = position_embedding(num_tokens, v.width, idx, x.shape[0])
    return x + positions.astype(x.dtype)

  def clip_tokens(self, video: jnp.ndarray) -> int:
    """The token count of this clip (B, T, H, W, C), whatever clip the model was built for."""
    v = self.variant
    return math.prod(token_grid(video.shape[1], video.shape[2:4], v.patch, v.tubelet))

  def __call__(self, video: jnp.ndarray, idx: jnp.ndarray | None = None, *,
               rng: jax.Array | None = None, positions: jnp.ndarray | None = None,
               attention_probs: bool = False):
    x, hidden = self.blocks(self.embed(video, idx, positions), rng, probs=attention_probs)
    if self.norm is not None:
      x = self.norm(x)
    return x, hidden

  def attention_probs(self, video: jnp.ndarray, idx: jnp.ndarray | None = None
                      ) -> tuple[jnp.ndarray, ...]:
    """Every block's attention probabilities (B, heads, n, n), float32, layer 1 first.

    The softmax over keys each block computed and used on this clip: the
    `Attention` "probs" that `__call__(attention_probs=True)` sows.
    """
    _, found = nnx.capture(self, nnx.Intermediate)(video, idx, attention_probs=True)
    layers = found["blocks"]["layers"]
    # sow keeps a tuple with one entry per call of the module: one call here.
    return tuple(layers[l]["attn"]["probs"].get_value()[0] for l in range(len(layers)))
