#!/bin/bash
# Everything a session with a GPU runs, in one script: build (no GStreamer), the CUDA
# tests, the engine tests, and the CUDA benchmarks side by side with PyTorch on the same
# weights and inputs. Needs nvcc, a CUDA driver, and for the PyTorch side torch + numpy;
# no internet, no GStreamer. Every result is written to $OUT (default ./out-gpu).
#
#   bench/run-gpu.sh              build + cuda tests + bench (about 10 minutes: with a
#                                 10-minute limit per call, run the three steps separately)
#   bench/run-gpu.sh build        configure and build only
#   bench/run-gpu.sh cuda-tests   test_cuda_host, test_cuda_parity (fp32, tf32, bf16), device
#   bench/run-gpu.sh bench        bench_cuda + bench_torch_cuda (CIFAR-10 b1/8/64, 256 px b1/4)
#   bench/run-gpu.sh samplers     scoresde sample on the GPU: PC 1000 steps and ODE, fp32/tf32
#   bench/run-gpu.sh train        scoresde train --preset fashion-mnist-32 on the GPU (synthetic
#                                 data, batch 128 and 32, 120 steps), steps/s; the same on the CPU
#   bench/run-gpu.sh engine-tests the whole engine suite (long: sampling tests)
#   bench/run-gpu.sh all          all of the above
#
# Environment: OUT (results), BUILD (build dir, default build-gpu), ITERS (timed
# iterations, default 20), JOBS (build jobs, default nproc), BENCH_DATA (weights, inputs
# and outputs of the benchmarks, default /tmp/sde-bench-data).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out-gpu}
BUILD=${BUILD:-build-gpu}
ITERS=${ITERS:-20}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
export PATH=$PATH:/usr/local/cuda/bin
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
status=0

log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

machine_info() {
  {
    date -u
    uname -a
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    nvcc --version 2>&1 | tail -2
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1
    git -C "$ROOT" log --oneline -1 2>/dev/null
  } > "$OUT/machine.txt" 2>&1
}

# cuDNN: in the CUDA toolkit, in /usr, or else the copy PyTorch ships (pip nvidia-cudnn-*,
# which has libcudnn.so.9 but no unversioned libcudnn.so: a small folder of links gives
# meson what it looks for, and LD_LIBRARY_PATH gives the loader the real folder).
CUDNN_OPT=()
find_cudnn() {
  local cu=/usr/local/cuda
  if [ -e $cu/include/cudnn.h ] || [ -e /usr/include/cudnn.h ] || [ -e /usr/include/x86_64-linux-gnu/cudnn.h ]; then
    return 0
  fi
  local pkg
  pkg=$(python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))' 2> /dev/null ||
        python3 -c 'import nvidia.cudnn, os; print(list(nvidia.cudnn.__path__)[0])' 2> /dev/null) || pkg=
  if [ -n "$pkg" ] && [ -e "$pkg/include/cudnn.h" ]; then
    local shim=$ROOT/$BUILD-cudnn
    mkdir -p "$shim/lib"
    ln -sfn "$pkg/include" "$shim/include"
    ln -sf "$(ls "$pkg"/lib/libcudnn.so* | head -1)" "$shim/lib/libcudnn.so"
    export LD_LIBRARY_PATH=$pkg/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    CUDNN_OPT=(-Dcudnn_dir="$shim")
    log "cuDNN from PyTorch's package: $pkg"
    return 0
  fi
  log "cuDNN not found (toolkit, /usr or pip nvidia-cudnn)"
  return 1
}

build() {
  if ! command -v meson > /dev/null || ! command -v ninja > /dev/null; then
    log "build: meson/ninja not found"
    return 1
  fi
  find_cudnn || return 1
  if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" -Dgstreamer=disabled -Dcuda=enabled -Dsanitize_tests=disabled "${CUDNN_OPT[@]}" \
      > "$OUT/setup.log" 2>&1 ||
      { log "build: meson setup failed (see setup.log)"; tail -20 "$OUT/setup.log"; return 1; }
  fi
  local t0=$SECONDS
  ninja -C "$BUILD" -j"$JOBS" > "$OUT/build.log" 2>&1 ||
    { log "build: failed (see build.log)"; tail -30 "$OUT/build.log"; return 1; }
  log "build: ok ($((SECONDS - t0)) s)"
}

cuda_tests() {
  local t
  for t in cuda_host device device_cuda cuda_parity_selftest; do
    meson test -C "$BUILD" --no-rebuild "$t" > "$OUT/test_$t.log" 2>&1
    log "test $t: exit $? ($(grep -E '^ *1/1 ' "$OUT/test_$t.log" | sed 's/  */ /g'))"
  done
  # the parity run per precision, TAP output kept whole (exit 77 = no GPU = skipped)
  local p rc
  for p in fp32 tf32 bf16; do
    "$BUILD/tests/engine/test_cuda_parity" "$p" > "$OUT/cuda_parity_$p.txt" 2>&1
    rc=$?
    log "cuda_parity $p: exit $rc, $(grep -c '^ok' "$OUT/cuda_parity_$p.txt") ok, $(grep -c '^not ok' "$OUT/cuda_parity_$p.txt") not ok"
    grep '^not ok' -A1 "$OUT/cuda_parity_$p.txt" | head -40 >> "$OUT/summary.txt"
    [ $rc = 77 ] && log "cuda_parity $p: SKIPPED, no GPU visible"
    [ $rc = 0 ] || status=1
  done
  # run-to-run determinism: the fp32 report prints every op's error to 9 digits, so two
  # runs give the same report only if every output has the same bits
  "$BUILD/tests/engine/test_cuda_parity" fp32 > "$OUT/cuda_parity_fp32_again.txt" 2>&1
  if diff -q "$OUT/cuda_parity_fp32.txt" "$OUT/cuda_parity_fp32_again.txt" > /dev/null; then
    log "cuda_parity fp32 repeated: identical report"
  else
    log "cuda_parity fp32 repeated: reports differ"
  fi
}

bench() {
  # weights (~250 MB per config) and arrays stay out of $OUT: only the reports come back
  local d=${BENCH_DATA:-/tmp/sde-bench-data}
  mkdir -p "$d"
  # C: both configs, all precisions; --check adds the CPU difference at batch 1 (CIFAR-10 only:
  # the 256 px CPU forward takes too long for one call)
  "$BUILD/bench/bench_cuda" --dir "$d" --iters "$ITERS" --configs cifar10 --batches-cifar10 1,8,64 \
    --precisions fp32,tf32,bf16 --check > "$OUT/bench_cuda_cifar10.txt" 2>&1
  log "bench_cuda cifar10: exit $?"
  "$BUILD/bench/bench_cuda" --dir "$d" --iters "$ITERS" --configs 256 --batches-256 1,4 \
    --precisions fp32,tf32,bf16 > "$OUT/bench_cuda_256.txt" 2>&1
  log "bench_cuda 256: exit $?"
  SDE_CUDA_CONV_FIND=1 "$BUILD/bench/bench_cuda" --dir "$d/find" --iters "$ITERS" --configs cifar10,256 \
    --batches-cifar10 1,8,64 --batches-256 1,4 --precisions fp32,tf32 > "$OUT/bench_cuda_find.txt" 2>&1 ||
    true
  cat "$OUT/bench_cuda_cifar10.txt" "$OUT/bench_cuda_256.txt" >> "$OUT/summary.txt"
  # PyTorch on the same files
  if python3 -c 'import torch, numpy' 2> /dev/null; then
    python3 bench/bench_torch_cuda.py --dir "$d" --iters "$ITERS" > "$OUT/bench_torch_cuda.txt" 2>&1
    log "bench_torch_cuda: exit $?"
    python3 bench/bench_torch_cuda.py --dir "$d" --iters "$ITERS" --modes fp32,default --benchmark \
      > "$OUT/bench_torch_cuda_benchmark.txt" 2>&1
    log "bench_torch_cuda --benchmark: exit $?"
    cat "$OUT/bench_torch_cuda.txt" >> "$OUT/summary.txt"
  else
    log "bench_torch_cuda: no torch"
  fi
}

# Whole samplers through the CLI on the GPU (the shipped fashion-mnist-32 DDPM++): PC with
# 1000 steps and the probability-flow ODE, 16 samples each, wall time.
samplers() {
  local d=${BENCH_DATA:-/tmp/sde-bench-data} p cmd
  mkdir -p "$d"
  for p in fp32 tf32; do
    for cmd in "--sampler pc --steps 1000" "--sampler ode"; do
      local t0=$SECONDS
      # shellcheck disable=SC2086
      "$BUILD/engine/scoresde" sample --model models/fashion-mnist-32.safetensors --device cuda --precision $p \
        $cmd --n 16 --seed 1 --out "$d/sample.npy" > "$OUT/sample.log" 2>&1
      log "scoresde sample $cmd --n 16 ($p): exit $?, $((SECONDS - t0)) s"
    done
  done
}

# Training steps per second, fashion-mnist-32 preset (the shipped model's config, dropout
# included), synthetic 28x28 uint8 images (the rate does not depend on the pixels): the
# rate of the last 40-step window of the progress lines (the first window has cuDNN's
# algorithm choice), GPU fp32/tf32, and a short CPU run for scale.
train_bench() {
  local d=${BENCH_DATA:-/tmp/sde-bench-data} p b
  mkdir -p "$d"
  python3 - "$d/train-synth.npy" << 'PY'
import struct, sys, random
n, h, w = 2048, 28, 28
random.seed(0)
hdr = "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, %d, %d), }" % (n, h, w)
hdr += " " * (63 - (len(hdr) + 10) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(bytes(random.getrandbits(8) for _ in range(n * h * w)))
PY
  for b in 128 32; do
    for p in fp32 tf32; do
      rm -rf "$d/train-run"
      "$BUILD/engine/scoresde" train --data "$d/train-synth.npy" --out "$d/train-run" --preset fashion-mnist-32 \
        --device cuda --precision $p --batch $b --steps 120 --log-every 40 --ckpt-every 0 --ckpt-minutes 0 --sample-n 1 --sample-steps 2 \
        > "$OUT/train_${p}_b$b.log" 2>&1
      log "scoresde train fashion-mnist-32 --batch $b ($p, GPU): exit $?, $(grep -o '[0-9.]* steps/s' "$OUT/train_${p}_b$b.log" | tail -1)"
    done
  done
  rm -rf "$d/train-run"
  "$BUILD/engine/scoresde" train --data "$d/train-synth.npy" --out "$d/train-run" --preset fashion-mnist-32 \
    --device cpu --batch 32 --steps 3 --log-every 1 --ckpt-every 0 --ckpt-minutes 0 --sample-n 1 --sample-steps 2 > "$OUT/train_cpu_b32.log" 2>&1
  log "scoresde train fashion-mnist-32 --batch 32 (CPU, $(nproc) threads): exit $?, $(grep -o '[0-9.]* steps/s' "$OUT/train_cpu_b32.log" | tail -1)"
  rm -rf "$d/train-run"
}

engine_tests() {
  meson test -C "$BUILD" --no-rebuild --suite engine --num-processes "$((JOBS / 2 > 1 ? JOBS / 2 : 1))" \
    --print-errorlogs > "$OUT/engine_tests.txt" 2>&1
  log "engine tests: exit $? ($(grep -E '^(Ok|Fail|Skipped|Timeout):' "$OUT/engine_tests.txt" | tr -s ' ' | tr '\n' ' '))"
  cp "$BUILD/meson-logs/testlog.txt" "$OUT/engine_testlog.txt" 2> /dev/null || true
}

machine_info
[ "${1:-default}" = build ] || [ "${1:-default}" = all ] || [ "${1:-default}" = default ] || find_cudnn || true
case "${1:-default}" in
  build) build || status=1 ;;
  cuda-tests) cuda_tests ;;
  bench) bench ;;
  engine-tests) engine_tests ;;
  samplers) samplers ;;
  train) train_bench ;;
  all) build && { cuda_tests; bench; samplers; train_bench; engine_tests; } || status=1 ;;
  default) build && { cuda_tests; bench; } || status=1 ;;
  *) echo "usage: $0 [build|cuda-tests|bench|samplers|train|engine-tests|all]" >&2; exit 2 ;;
esac
cat "$OUT/summary.txt"
exit $status
