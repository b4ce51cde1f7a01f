#!/usr/bin/env bash
# The GPU checks of issue 24 in one short run (a few minutes on an H200):
#   1. the GPU-marked tests (accuracy on CUDA, weights stay on the device);
#   2. speed.py on CUDA: ResNet-50, BERT-base and a LLaMA-7B block, against svdvals on the GPU;
#   3. the live overhead of the Lightning callback on a GPU-trained ResNet-18, sync vs background.
# Usage: bash benchmarks/gpu_check.sh [PYTHON]   (outputs under ${OUT:-gpu_results}/)
set -u
PY=${1:-python}
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-$PWD}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
timeout 300 "$PY" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 300 "$PY" benchmarks/speed.py --device cuda --models resnet50,bert-base,llama-7b --threads 1 \
    --repeats 3 --blocks 1 2>&1 | tee "$OUT/speed_cuda.txt"
timeout 300 "$PY" benchmarks/overhead.py --accelerator gpu --models resnet18 --modes none,sync,thread,process \
    --epochs 5 --batches 50 --batch-size 256 --repeats 1 2>&1 | tee "$OUT/overhead_gpu.txt"
