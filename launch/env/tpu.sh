# Cloud TPU. Sourced by the launch scripts. One process per host (not per chip).
# The TPU compiler's own flags go in LIBTPU_INIT_ARGS and cannot be checked without
# libtpu, so none are set here: XLA's TPU defaults already schedule for overlap.
export JAX_PLATFORMS="${JAX_PLATFORMS:-tpu}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
