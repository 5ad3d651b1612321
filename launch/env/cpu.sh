# CPU (development, CI, launch/local.sh without a GPU). Sourced by the launch scripts.
# Every XLA flag here is checked against the installed jaxlib by tests/test_launch.py.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_multi_thread_eigen=true"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
