# NVIDIA GPU (H100 baseline). Sourced by the launch scripts: `source launch/env/gpu.sh`.
# Every XLA flag here is checked against the installed jaxlib by tests/test_launch.py.
#
# Latency-hiding scheduler: overlaps FSDP all-gathers/reduce-scatters with compute.
# Combine thresholds: fewer, larger collectives for the many small ViT weights.
# Triton GEMM off: cuBLAS is faster for these dense matmul shapes.
export XLA_FLAGS="${XLA_FLAGS:-} \
  --xla_gpu_enable_latency_hiding_scheduler=true \
  --xla_gpu_enable_triton_gemm=false \
  --xla_gpu_enable_highest_priority_async_stream=true \
  --xla_gpu_all_reduce_combine_threshold_bytes=134217728 \
  --xla_gpu_all_gather_combine_threshold_bytes=134217728 \
  --xla_gpu_reduce_scatter_combine_threshold_bytes=134217728 \
  --xla_gpu_enable_pipelined_all_gather=true \
  --xla_gpu_enable_pipelined_reduce_scatter=true \
  --xla_gpu_enable_pipelined_all_reduce=true \
  --xla_gpu_enable_while_loop_double_buffering=true"
# One process per GPU takes most of its memory up front; the rest is for cuDNN/NCCL.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
# NCCL: no warnings-as-logs flood; InfiniBand when present is picked automatically.
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
