"""Tests run on 8 fake CPU devices, never touch the network, and stay quiet."""

import os

# Before jax is imported anywhere: sharded tests need several devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
