"""Token bookkeeping shared by the models and the losses: a clip cut into tubelet tokens,
and tokens picked by index.

Tokens are flattened in (t, h, w) order with w fastest; a tubelet is flattened
(kt, kh, kw, c) with the channel fastest, the order of both the patch embedding's
kernel and the reconstruction target (docs/method.md#pixel-targets).
"""

from __future__ import annotations

import jax.numpy as jnp


def patchify(video: jnp.ndarray, patch: int, tubelet: int) -> jnp.ndarray:
  """(B, T, H, W, C) → (B, N, tubelet·patch·patch·C), tokens (t, h, w), channel fastest."""
  b, t, h, w, c = video.shape
  x = video.reshape(b, t // tubelet, tubelet, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, -1, tubelet * patch * patch * c)


def gather_tokens(x: jnp.ndarray, idx: jnp.ndarray | None) -> jnp.ndarray:
  """x (B, N, ...) at token indices idx (B, n); all tokens when idx is None."""
  if idx is None:
    return x
  idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)
