#!/bin/sh
# Build the libFuzzer harnesses (clang, -fsanitize=fuzzer,address,undefined) into $1 (default
# build/fuzz): idx and npz readers 64-bit and 32-bit (-m32), the agent's message path 64-bit.
# Needs clang (libFuzzer runtime), libc6-dev-i386 + lib32gcc/lib32stdc++ (32-bit), protobuf-c, zlib
# (all in the Makefile's DEB_PACKAGES).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build/fuzz}
CC=${CC:-clang}
mkdir -p "$OUT/gen/proto"
FLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I$ROOT/kernels/common"
K=$ROOT/kernels/common
$CC $FLAGS -DECUFL_HAVE_ZLIB -o "$OUT/fuzz_idx" "$ROOT/tests/fuzz/fuzz_idx.c" "$K/ecufl_idx.c" -lz
$CC $FLAGS -o "$OUT/fuzz_npz" "$ROOT/tests/fuzz/fuzz_npz.c" "$K/ecufl_npz.c"
# -m32: Debian's <asm/...> link comes with gcc-multilib, which conflicts with the ARM cross compiler;
# the kernel's x86 asm headers serve i386 too, so point a private include folder at them.
mkdir -p "$OUT/include32"
ln -sfn /usr/include/x86_64-linux-gnu/asm "$OUT/include32/asm"
$CC $FLAGS -m32 -isystem "$OUT/include32" -o "$OUT/fuzz_idx32" "$ROOT/tests/fuzz/fuzz_idx.c" "$K/ecufl_idx.c"
$CC $FLAGS -m32 -isystem "$OUT/include32" -o "$OUT/fuzz_npz32" "$ROOT/tests/fuzz/fuzz_npz.c" "$K/ecufl_npz.c"
# the agent: protobuf-c code generated as fleet/agent/CMakeLists.txt does (proto3 `optional` dropped)
sed -E 's/^([[:space:]]*)optional /\1/' "$ROOT/proto/round_report.proto" > "$OUT/gen/proto/round_report.proto"
protoc-c -I"$OUT/gen/proto" -I"$ROOT/proto" --c_out="$OUT/gen" "$ROOT/proto/agent.proto" "$OUT/gen/proto/round_report.proto"
$CC $FLAGS -ffp-contract=off -I"$ROOT/fleet/agent" -I"$OUT/gen" -I"$ROOT/kernels/c" \
  -o "$OUT/fuzz_agent" "$ROOT/tests/fuzz/fuzz_agent.c" "$ROOT/fleet/agent/agent_train.c" \
  "$OUT/gen/agent.pb-c.c" "$OUT/gen/round_report.pb-c.c" "$ROOT/kernels/c/hdrnn_net.c" "$ROOT/kernels/c/hdrnn_opt.c" \
  $(pkg-config --cflags --libs libprotobuf-c) -lm
echo "$OUT"
