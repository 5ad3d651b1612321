"""MAE pixel decoder and AMD's feature alignment (docs/method.md#alignment).

Both decoders append mask tokens after the visible tokens (MAE style) rather
than scattering them back: the fixed position table carries the position, and
the outputs are read back from the end of the sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from amd_jax import errors
from amd_jax.models import vit

ALIGNMENT_METHODS = ("direct", "generation", "parallel", "serial")


class FrozenToken(nnx.Variable):
  """A generator mask token the optimiser never updates (the official behaviour).

  Unlike the official code it is stored in checkpoints, so a resumed run keeps
  the same vectors instead of drawing new ones.
  """


def _token(width: int, learnable: bool, rngs: nnx.Rngs) -> nnx.Variable:
  value = vit.truncated_normal_1sigma(0.02)(rngs.params(), (width,))
  kind = nnx.Param if learnable else FrozenToken
  return kind(value, out_sharding=("embed",), eager_sharding=False)


def _with_mask_tokens(visible: jnp.ndarray, mask_token: jnp.ndarray, num_tokens: int,
                      idx_visible: jnp.ndarray, idx_masked: jnp.ndarray) -> jnp.ndarray:
  """[visible + PE(idx_visible)] ++ [mask_token + PE(idx_masked)], (B, n_v + n_m, D)."""
  b, _, d = visible.shape
  pos_v = vit.position_embedding(num_tokens, d, idx_visible, b).astype(visible.dtype)
  pos_m = vit.position_embedding(num_tokens, d, idx_masked, b).astype(visible.dtype)
  return jnp.concatenate([visible + pos_v, mask_token.astype(visible.dtype) + pos_m], axis=1)


class PixelDecoder(nnx.Module):
  """encoder_to_decoder (no bias) → [visible ++ mask tokens] → blocks → norm → pixel head.

  Returns the predictions for the masked tokens only, (B, n_masked, out_dim),
  in the order of idx_masked. `norm_eps` (None: `ln_eps`) is the final norm's
  epsilon: HF builds it with torch's 1e-5, its blocks with the config's.
  `num_tokens` of a call is the clip's token count when it is not the one the
  decoder was built for: its fixed position table is that clip's, as the encoder's.
  """

  def __init__(self, encoder_width: int, width: int, depth: int, heads: int, out_dim: int,
               num_tokens: int, *, drop_path: float = 0.0, ln_eps: float = 1e-6,
               norm_eps: float | None = None, remat: bool = False, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.num_tokens = num_tokens
    self.encoder_to_decoder = vit.dense(
        encoder_width, width, ("embed", "decoder"), use_bias=False, dtype=dtype, rngs=rngs,
        init=vit.torch_default_uniform(encoder_width))
    self.mask_token = nnx.Param(vit.sharded(vit.truncated_normal_1sigma(0.02), "embed")(
        rngs.params(), (width,)))
    self.blocks = vit.Blocks(depth, width, heads, 4 * width, drop_path=drop_path,
                             ln_eps=ln_eps, remat=remat, dtype=dtype, rngs=rngs)
    self.norm = vit.layer_norm(width, ln_eps if norm_eps is None else norm_eps, dtype, rngs)
    self.head = vit.dense(width, out_dim, ("embed", "pixels"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray, idx_visible: jnp.ndarray, idx_masked: jnp.ndarray,
               rng: jax.Array | None = None, *, num_tokens: int | None = None) -> jnp.ndarray:
    seq = _with_mask_tokens(self.encoder_to_decoder(x), self.mask_token[...],
                            num_tokens or self.num_tokens, idx_visible, idx_masked)
    y, _ = self.blocks(seq, rng)
    return self.head(self.norm(y[:, idx_visible.shape[1]:]))


class Generator(nnx.Module):
  """Predicts teacher features at the tokens only the teacher sees.

  Teacher-width blocks over [projected student tokens ++ mask tokens]; the
  output is the raw residual stream of the mask-token positions (no norm, no
  head), (B, n_diff, teacher width). `num_tokens` of a call: as PixelDecoder's.
  """

  def __init__(self, width: int, depth: int, heads: int, num_tokens: int, *,
               learnable_mask_token: bool = False, drop_path: float = 0.0,
               ln_eps: float = 1e-6, remat: bool = False, dtype=jnp.float32, rngs: nnx.Rngs):
    self.num_tokens = num_tokens
    self.mask_token = _token(width, learnable_mask_token, rngs)
    self.blocks = vit.Blocks(depth, width, heads, 4 * width, drop_path=drop_path,
                             ln_eps=ln_eps, remat=remat, dtype=dtype, rngs=rngs)

  def __call__(self, f: jnp.ndarray, idx_visible: jnp.ndarray, idx_diff: jnp.ndarray,
               rng: jax.Array | None = None, *, num_tokens: int | None = None) -> jnp.ndarray:
    seq = _with_mask_tokens(f, self.mask_token[...], num_tokens or self.num_tokens,
                            idx_visible, idx_diff)
    y, _ = self.blocks(seq, rng)
    return y[:, idx_visible.shape[1]:]


class DirectMlp(nnx.Module):
  """The direct-alignment projection of Supp. B: Linear → GELU → Linear, teacher width."""

  def __init__(self, width: int, teacher_width: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = vit.dense(width, teacher_width, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.fc2 = vit.dense(teacher_width, teacher_width, ("mlp", "embed"), dtype=dtype,
                         rngs=rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Alignment(nnx.Module):
  """Maps student features onto the teacher's, one head per aligned layer pair.

  method  direct targets (student tokens)    generation targets (diff tokens)
  direct      DirectMlp(z)                   —
  generation  —                              Generator(P(z))
  parallel    P_dir(z)                       Generator(P_gen(z))
  serial      P(z)                           Generator(P(z)), P shared (default)

  Projections P are bias-free Linear maps to the teacher width. Each generator
  has teacher width / 64 heads, as the official code (not the teacher's own
  head count, which differs for a ViT-H teacher or a miniature one). Called with the
  student's features at the aligned layers (each (B, n_student, D_s)), it returns
  (direct, generated): tuples of (B, n_student, D_t) and (B, n_diff, D_t), empty
  when the method has no such branch. `num_tokens`: as PixelDecoder's.
  """

  def __init__(self, method: str, num_pairs: int, width: int, teacher_width: int, *,
               generator_depth: int, num_tokens: int, learnable_mask_tokens: bool = False,
               drop_path: float = 0.0, ln_eps: float = 1e-6, remat: bool = False,
               dtype=jnp.float32, rngs: nnx.Rngs):
    if method not in ALIGNMENT_METHODS:
      raise errors.BadInput(f"unknown alignment method {method!r}: choose from "
                       f"{'|'.join(ALIGNMENT_METHODS)}")
    self.method = method

    def projections():
      return nnx.List([vit.dense(width, teacher_width, ("embed", "mlp"), use_bias=False,
                                 dtype=dtype, rngs=rngs) for _ in range(num_pairs)])

    self.projection_heads = projections() if method in ("serial", "parallel") else None
    self.direct_heads = (nnx.List([DirectMlp(width, teacher_width, dtype=dtype, rngs=rngs)
                                   for _ in range(num_pairs)])
                         if method == "direct" else None)
    self.generator_projections = projections() if method in ("parallel", "generation") else None
    self.generators = (nnx.List([
        Generator(teacher_width, generator_depth, max(teacher_width // 64, 1), num_tokens,
                  learnable_mask_token=learnable_mask_tokens, drop_path=drop_path,
                  ln_eps=ln_eps, remat=remat, dtype=dtype, rngs=rngs)
        for _ in range(num_pairs)])
                       if method != "direct" else None)

  def __call__(self, features: Sequence[jnp.ndarray], idx_visible: jnp.ndarray,
               idx_diff: jnp.ndarray, rng: jax.Array | None = None, *,
               num_tokens: int | None = None):
    direct, generated = (), ()
    if self.method == "direct":
      direct = tuple(h(z) for h, z in zip(self.direct_heads, features))
    elif self.projection_heads is not None:
      direct = tuple(p(z) for p, z in zip(self.projection_heads, features))
    if self.generators is not None:
      inputs = (direct if self.method == "serial" else
                tuple(p(z) for p, z in zip(self.generator_projections, features)))
      rngs = ([None] * len(inputs) if rng is None
              else list(jax.random.split(rng, len(inputs))))
      generated = tuple(g(f, idx_visible, idx_diff, r, num_tokens=num_tokens)
                        for g, f, r in zip(self.generators, inputs, rngs))
    return direct, generated
