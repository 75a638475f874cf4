#!/usr/bin/env bash
# On the GPU machine, after scripts/gpu-check.sh built build-cuda: profiles the PQ mma decode
# kernel (4-bit, 1M tokens, batch 1; Nsight Compute) and prints its counters and the SASS
# opcode mix of its main loop's kernel. Not a test. Writes ncu.txt and sass.txt to $OUT (or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
bench=./build-cuda/src/backends/cuda/bench_cuda_attention
ncu --kernel-name regex:pq_mma_kernel --launch-count 1 --section SpeedOfLight --section WarpStateStats \
  --section ComputeWorkloadAnalysis --section Occupancy \
  --metrics l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,smsp__inst_executed_op_shared_ld.sum,smsp__inst_executed.sum,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,smsp__average_warp_latency_issue_stalled_short_scoreboard.ratio,smsp__average_warp_latency_issue_stalled_mio_throttle.ratio,smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio \
  "$bench" --reps 1 --batches 1 --contexts 1048576 >"$OUT/ncu.txt" 2>&1
grep -E "^    [a-z]|Duration|Throughput|Cycles|Ipc|Warp Cycles|Eligible|Occupancy|pipeline" "$OUT/ncu.txt" | head -40
obj=$(find build-cuda -name "pq_decode_mma.cu.o" | head -1)
cuobjdump -sass "$obj" >"$OUT/sass-all.txt" 2>&1
# The 4-bit, head_dim 128, ksub 256, plain kernel's opcodes (whole kernel; the loop dominates).
awk '/Function : .*pq_mma_kernelILi128ELi2ELi256ELb0/{f=1; next} /Function :/{f=0} f' "$OUT/sass-all.txt" >"$OUT/sass.txt"
echo "== SASS opcodes (pq_mma_kernel<128, 2, 256, plain>) =="
grep -oE "^\s+/\*[0-9a-f]+\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_.]+" "$OUT/sass.txt" | awk '{print $NF}' | sed -E 's/\..*//' | sort | uniq -c | sort -rn | head -30
