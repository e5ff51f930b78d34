#!/usr/bin/env bash
# run.sh — builds and runs CUDA programs of this repository on the CPU through the emulation in
# dev/cuda/emu (cuda_emu.h + cublas_emu.h + emulate.py): a correctness check of the CUDA code on a
# machine without a GPU. Slow (each CUDA thread is a fiber): use small shapes. Not a benchmark.
#
#   dev/cuda/emu/run.sh test  [-- ARGS]     test_gla.cu (the GPU test suite), compiled with
#                                            -DCUDA_EMULATED, run with ARGS
#   dev/cuda/emu/run.sh check [-- ARGS]     dev/cuda/emu/check_model.cu: whole models on the emulator
#                                            against the CPU program (every mixer), kernels one by one
#   dev/cuda/emu/run.sh train [-- FLAGS]    train_gla.cu's main (the CUDA trainer) with FLAGS
#   dev/cuda/emu/run.sh FILE.cu [-- ARGS]   any CUDA program of the repository (dev/cuda/*.cu, ...)
#   add --build-only before -- to stop after compiling (the binary: build/emu/<name>/<name>)
#
# Environment: EMU_ASAN=1 builds with AddressSanitizer (catches out-of-bounds accesses in kernels:
# device memory is host memory here); EMU_OPT (default -O2); CXX (default g++); and the emulator's own
# EMU_THREADS, EMU_ORDER=forward|reverse|random, EMU_TRACE=1, EMU_STRICT=1 (see cuda_emu.h).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
cd "$ROOT"

mode="${1:-}"
[ -n "$mode" ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift
build_only=0
if [ "${1:-}" = "--build-only" ]; then build_only=1; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi

defines="-DCUDA_EMULATED"
case "$mode" in
    test)  src="test_gla.cu"; name="test_gla" ;;
    check) src="dev/cuda/emu/check_model.cu"; name="check_model" ;;
    train) src="train_gla.cu"; name="train_gla" ;;
    *.cu)  src="$mode"; name="$(basename "$mode" .cu)" ;;
    *) echo "run.sh: unknown mode '$mode' (test, check, train or a .cu file)" >&2; exit 2 ;;
esac
[ -f "$src" ] || { echo "run.sh: $src not found" >&2; exit 1; }

out="build/emu/$name"
mkdir -p "$out"
python3 "$HERE/emulate.py" -I "$ROOT" "$src" "$out/src"
opt="${EMU_OPT:--O2}"
san=""
if [ "${EMU_ASAN:-0}" = "1" ]; then
    san="-fsanitize=address -fno-omit-frame-pointer"
    opt="${EMU_OPT:--O1}"
    out_bin="$out/${name}_asan"
else
    out_bin="$out/$name"
fi
CXX="${CXX:-g++}"
# the CUDA headers (cuda_runtime.h, cublas_v2.h) are the emulator's; model.h, train_gla.c from the root.
# train_gla.c is C compiled as C++ inside test_gla.cu (as nvcc's host compiler does): restrict is
# defined there; -fpermissive is not needed.
flags=(-std=c++17 $opt -g -fopenmp -pthread $defines $san
       -I "$HERE/include" -I "$ROOT"
       -Wall -Wno-unknown-pragmas -Wno-unused-function -Wno-unused-variable -Wno-format-truncation
       -Wno-sign-compare -Wno-unused-but-set-variable -Wno-class-memaccess)
stamp="$out/.flags"
newflags="$CXX ${flags[*]}"
# rebuild when a rewritten source, a header of the emulator, model.h, train_gla.c or the flags change
need=1
if [ -x "$out_bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$newflags" ]; then
    need=0
    for f in "$out"/src/*.cu "$out"/src/*/*.cu* "$HERE"/*.h "$HERE"/include/*.h model.h train_gla.c; do
        [ -e "$f" ] || continue
        if [ "$f" -nt "$out_bin" ]; then need=1; break; fi
    done
fi
if [ "$need" = 1 ]; then
    echo "run.sh: compiling $src for the CPU emulation -> $out_bin" >&2
    t0=$(date +%s)
    "$CXX" "${flags[@]}" -x c++ "$out/src/$(basename "$src")" -o "$out_bin" -lm
    echo "$newflags" > "$stamp"
    echo "run.sh: compiled in $(( $(date +%s) - t0 )) s" >&2
fi
[ "$build_only" = 1 ] && { echo "$out_bin"; exit 0; }
exec "$out_bin" "$@"
