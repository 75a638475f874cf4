#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention (fp16) for decode: the peer of bench_cuda_attention.

One query token per sequence, 32 query heads / 8 kv heads (GQA through enable_gqa), head_dim
128, batch 1 and 8, contexts 4K..1M; K/V random fp16. Median of 20 CUDA-event timed runs after
warm-up. Bytes counted: K and V read once. Prints markdown rows in bench_cuda_attention's format.
Usage: sdpa_decode.py COPY_GBS [--batches 1,8] [--contexts 4096,...]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("copy_gbs", type=float)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--contexts", default="4096,32768,131072,524288,1048576")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    H, Hkv, D = 32, 8, 128
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    for B in map(int, args.batches.split(",")):
        for T in map(int, args.contexts.split(",")):
            nbytes = 2 * B * Hkv * T * D * 2
            try:
                q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.float16)
                k = torch.randn(B, Hkv, T, D, device="cuda", dtype=torch.float16)
                v = torch.randn(B, Hkv, T, D, device="cuda", dtype=torch.float16)
                run = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                for _ in range(3):
                    run()
                torch.cuda.synchronize()
                times = []
                for _ in range(args.reps):
                    a = torch.cuda.Event(enable_timing=True)
                    b = torch.cuda.Event(enable_timing=True)
                    a.record()
                    run()
                    b.record()
                    b.synchronize()
                    times.append(a.elapsed_time(b) * 1e3)
                us = statistics.median(times)
                gbs = nbytes / (us * 1e3)
                print(f"| SDPA fp16 (torch) | {B} | {T} | {us:.1f} | {nbytes / 2**20:.1f} | {gbs:.0f} | "
                      f"{100 * gbs / args.copy_gbs:.0f}% |", flush=True)
            except torch.cuda.OutOfMemoryError:
                print(f"| SDPA fp16 (torch) | {B} | {T} | out of memory | {nbytes / 2**20:.1f} | | |", flush=True)
            finally:
                q = k = v = None
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
