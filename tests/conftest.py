"""Test-session set-up: 8 fake CPU devices for the sharded-equals-single tests.

XLA_FLAGS must be set before JAX initialises its backend, so it is set here,
at conftest import, before any test module imports jax. Single-device
references run on a mesh of `jax.devices()[:1]`; sharded runs on all 8.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

jax.config.update("jax_default_matmul_precision", "highest")
