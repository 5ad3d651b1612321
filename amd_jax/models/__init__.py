"""Flax NNX models: video ViT, MAE decoder, alignment heads, task heads."""
