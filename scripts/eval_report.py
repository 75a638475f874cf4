#!/usr/bin/env python3
"""Writes docs/results.md (stdout) from the JSON files scripts/eval-results.sh leaves in WORK:
one table per section (model, text, ctx), rows sorted by mean KLD within each mode, and the
issue's targets checked on the gutenberg-23m held-out section.
Usage: eval_report.py WORK COMMIT CPU THREADS PREFILL"""
import glob
import json
import os
import sys

work, commit, cpu, threads, prefill = sys.argv[1:]

SECTIONS = {
    "gutenberg-4096": "gutenberg-23m, held-out books (`eval-tokens/heldout_eval.bin`), ctx 4096",
    "gutenberg-1024": "gutenberg-23m, held-out books (`eval-tokens/heldout_eval.bin`), ctx 1024",
    "gutenberg-wiki": "gutenberg-23m, WikiText-2 test (out of domain for this model), ctx 1024",
    "smollm2-wiki": "SmolLM2-135M-Instruct (Q4_1 GGUF, weights dequantized to f16), WikiText-2 test, ctx 1024",
    "smollm2-books": "SmolLM2-135M-Instruct, held-out books (`../shared/text/heldout-books`), ctx 1024",
}


NOTES = {
    "smollm2-wiki": "SmolLM2 (head_dim 64): KIVI runs at group 32 only (its value groups of 128 channels do not fit "
                    "head_dim 64), so its rows cost 5 and 3 bits. SmolLM2's first tokens are attention sinks: "
                    "coded, the first key stretches the min/max of pq-norm's first key group (and so every token "
                    "in it); without sinks (`-sinks0`) pq-norm is behind q4_0-hadamard in default mode, with its "
                    "default 4 exact sinks ahead of q4_0-hadamard with the same sinks (`q4_0-hadamard-sinks4`). "
                    "2 bits (M = 16 subspaces of 4 dimensions at head_dim 64; 2.25 coded bits with the "
                    "normalisation at this head_dim) is unusable without sinks and gains most from them.",
}
NOTES["smollm2-books"] = NOTES["smollm2-wiki"]
NOTES["gutenberg-4096"] = ("The windows of this token file start wherever the cut falls (no BOS added), yet "
                           "their first positions still act as sinks: the default 4 exact sinks lower pq-norm's "
                           "default-mode KLD (compare the `-sinks0` rows) and change stress mode little.")
NOTES["gutenberg-wiki"] = ("Out of domain for this model (trained on books only) and for the calibration text: "
                           "here pq-qpca, whose key transform weights directions by the queries it saw on the "
                           "calibration books, only ties pq-norm in default mode at 4 bits and is 14% worse at 2 "
                           "bits, while still 28-30% better in stress mode. On SmolLM2, whose training covers "
                           "WikiText's kind of text, pq-qpca leads on WikiText in every mode. Its ΔPPL here moves "
                           "more than its KLD (PPL ~390: small shifts of probability on rare tokens).")
NOTES["gutenberg-1024"] = ("The same held-out books as the ctx 4096 section, in windows of 1024 tokens. The issue's "
                           "2-bit target is defined at ctx 4096 (above); at ctx 1024 the exact window (128 to 159 "
                           "tokens) is an eighth of each window and every coded token has less coded history to "
                           "read, so the 2-bit line below being met here does not meet it.")


def has_sinks(label):
    """Rows whose cache keeps the first 4 positions exact: the pq-norm rows (the pq cache's default
    with a normalised codebook) unless -sinks0, and baselines run with sinks=4 (-sinks4)."""
    if label.endswith("-sinks4"):
        return True
    return label.startswith(("pq-norm", "pq-qpca")) and not label.endswith("-sinks0")


def load(sec):
    d = os.path.join(work, sec)
    base_path = os.path.join(d, "base.json")
    if not os.path.exists(base_path):
        return None, []
    base = json.load(open(base_path))
    rows = []
    for f in sorted(glob.glob(os.path.join(d, "run-*.json"))):
        j = json.load(open(f))
        mode, label = os.path.basename(f)[4:-5].split("-", 1)
        k = j["kl_base"]
        rows.append(dict(mode=mode, label=label, coded=j.get("coded_bits_per_element", j["bits_per_element"]),
                         held=j["bits_per_element"], dppl=k["delta_ppl_pct"], kld=k["mean_kld"], p99=k["p99_kld"],
                         top1=k["top1_agreement_pct"], tps=j["tokens_per_second"]))
    order = {"default": 0, "stress": 1}
    rows.sort(key=lambda r: (order[r["mode"]], r["kld"]))
    return base, rows


def targets(rows):
    """The evaluation issue's targets on one section's rows; returns markdown lines. Each cache as
    run by default (pq-norm with its exact sinks, baselines without, or with where a -sinks4 row
    exists), and, where -sinks0 rows exist, like for like without exact sinks on either side."""
    out = []
    is_pq = lambda r: r["label"].startswith("pq")
    variants = [("", lambda r: not r["label"].endswith("-sinks0"))]
    if any(r["label"].endswith("-sinks0") for r in rows):
        variants.append((" (no exact sinks on either side)", lambda r: not has_sinks(r["label"])))
    for mode in ("default", "stress"):
        for what, keep in variants:
            m = [r for r in rows if r["mode"] == mode and keep(r)]
            pq4 = [r for r in m if is_pq(r) and r["coded"] <= 4.25 + 1e-9]
            base45 = [r for r in m if not is_pq(r) and r["label"] != "f16" and r["coded"] <= 4.5 + 1e-9]
            if pq4 and base45:
                best = min(pq4, key=lambda r: r["kld"])
                rival = min(base45, key=lambda r: r["kld"])
                ok = best["kld"] < rival["kld"]
                out.append(f"- {mode}{what}: best pq at <= 4.25 bits is {best['label']} (KLD {best['kld']:.5f}); best "
                           f"baseline at <= 4.5 bits is {rival['label']} (KLD {rival['kld']:.5f}): "
                           f"**{'met' if ok else 'missed'}** ({best['kld'] / rival['kld']:.2f}x).")
    m = [r for r in rows if r["mode"] == "default" and is_pq(r) and r["coded"] <= 2.25 + 1e-9]
    if m:
        best = min(m, key=lambda r: r["kld"])
        out.append(f"- default, pq at <= 2.25 bits below KLD 0.010: {best['label']} {best['kld']:.5f}: "
                   f"**{'met' if best['kld'] < 0.010 else 'missed'}**.")
    return out


print("# Results: KV-cache quality\n")
print(f"Generated by `scripts/eval-results.sh` at commit {commit} on {cpu} ({threads} threads).")
print("Every row is measured against the exact (f32) cache of the same model on the same tokens, in one")
print(f"run. Each window is prefilled for its first {prefill} tokens, then fed in chunks of 64, so nearly every")
print("scored token reads the cache's coded history (EVALUATION.md). **Default** mode: each cache's exact")
print("recent window (128 tokens, plus up to one encode batch). **Stress** mode: window 0, every token read back")
print("from its quantized form (a store that codes whole token groups — KIVI keys, pq-norm keys — reads its")
print("last partial group quantized with that partial group's statistics). Columns: *coded bits* = bits per")
print("element of the stored format with every scale, zero point and norm (KIVI g128: +0.25, g32: +1; q4_0:")
print("4.5; pq-norm: keys +0.25, values +0.125); *held bits* adds the exact f32 tokens the cache also holds")
print("(window, a batch, a partial group) amortised over ctx. PQ codebooks: `million calibrate` on")
print("`../shared/text/calib` only. pq-paper: one shared codebook for the model, post-RoPE vectors;")
print("pq-head-hadamard: per-(layer, kv head) codebooks on Hadamard-rotated vectors; pq-norm: as")
print("pq-head-hadamard, keys min/max-normalised per channel over groups of 128 tokens, values divided")
print("by their per-token norm; pq-qpca: as pq-norm, but keys through the query-aware learned transform")
print("(`--rotation qpca`: scores' error metric, PCA, balanced subspaces, channel scales; calibrate's default)")
print("instead of the Hadamard rotation (docs/pq-research.md). Sorted by mean KLD (the primary metric) per mode.")
print("tok/s is this evaluation's throughput (chunked prefill, all variants through the same driver) on a")
print("shared 2-core machine, not a speed benchmark (see `million bench`). **Sinks**: the pq-norm and pq-qpca rows keep the")
print("first 4 positions exact (the pq cache's default with a normalised codebook; in stress mode too), as")
print("rows ending in `-sinks4` do for a baseline (its `sinks=4` option); these tokens are exact f32 like the")
print("window: *held bits* counts them, *coded bits* does not. Rows ending in `-sinks0` are the same pq-norm / pq-qpca")
print("codebooks with `sinks=0` (nothing exact in stress mode). Each table says its number of windows.\n")

for sec, title in SECTIONS.items():
    base, rows = load(sec)
    if base is None:
        print(f"## {title}\n\nNot run in this generation (section `{sec}`).\n")
        continue
    print(f"## {title}\n")
    print(f"{base['windows']} windows, {base['tokens_scored']} tokens scored; exact cache (f32): "
          f"PPL {base['ppl']:.4f} (95% CI {base['ppl_ci95'][0]:.3f}-{base['ppl_ci95'][1]:.3f}).\n"
          if "ppl_ci95" in base else
          f"{base['windows']} windows, {base['tokens_scored']} tokens scored; exact cache (f32): PPL {base['ppl']:.4f}.\n")
    print("| mode | cache | coded bits | held bits | ΔPPL % | mean KLD | p99 KLD | top-1 % | tok/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['label']} | {r['coded']:.3f} | {r['held']:.2f} | {r['dppl']:+.3f} | {r['kld']:.5f} | "
              f"{r['p99']:.4f} | {r['top1']:.2f} | {r['tps']:.0f} |")
    if sec in NOTES:
        print("\n" + NOTES[sec])
    t = targets(rows)
    if t:
        print("\nTargets of the evaluation issue (coded bits):\n")
        print("\n".join(t))
    print()

print("## Speed on a GPU (NVIDIA H100 80GB HBM3; measured by scripts/gpu-check.sh, not by this script)\n")
print("Decode attention (bench/results/decode-attention-gpu-h100.md; Llama-3-8B heads, batch 1, 1M tokens):")
print("pq 4-bit on tensor cores 596 us, 60% of the card's copy bandwidth and 2.4x PyTorch SDPA fp16 (1420 us).")
print("End to end (bench/results/model-decode-gpu-h100.md; Llama-3-8B shape, random bf16 weights, synthetic")
print("context, batch 1): pq 4-bit 100.1 vs fp16 65.2 tokens/s at 128K; 38.5 tokens/s at 1M tokens, where the")
print("fp16 cache (143 GiB) is refused. The GPU's PQ cache: plain PQ or the normalised variant, with an exact")
print("window and sinks; these speed rows use plain PQ. docs/cuda.md has the details and what is missing.")
print()
print("## On an NVIDIA H200 (scripts/gpu-check.sh, not this script)\n")
print("Quality through the GPU's own caches (bench/results/quality-gpu-h200.md; `million-gpu perplexity`, the same")
print("8 windows, ctx 4096, chunks of 64, each against the GPU's fp16 cache): pq-norm-4bit default mean KLD 0.00039")
print("(+0.069% PPL), pq-qpca-2bit 0.00497, pq-paper-4bit 0.00346, stress pq-paper-4bit 0.03627 (the CPU's 0.03628). The default-mode")
print("gap to the CPU rows is the exact tokens each holds (docs/cuda.md). Prefill (bench/results/")
print("model-prefill-decode-gpu-h200.md; Llama-3-8B shape, random weights, chunks of 1024): a 32K prompt in 3.42 s")
print("(fp16), 3.56 s (pq 4-bit + window), 4.16 s (pq-norm); decode at 128K: fp16 78.4, pq 4-bit 119.4, pq-norm 105.4")
print("tokens/s.")

