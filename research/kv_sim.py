#!/usr/bin/env python3
"""Teacher-forced simulation of quantized KV caches on gutenberg-23m (research, not the engine).

What it does: runs the model (float32, PyTorch, CPU) over held-out windows of ctx tokens with a
cache variant simulated inside attention: query t reads the exact K/V of the first `sinks`
positions and of the last `window` positions (t - window < s <= t), and the coded K/V of every
other earlier position. Coded K/V come from the layer's own exact K/V (computed from hidden
states that already carry the errors of earlier layers), so errors propagate as in the engine.
Key channel-groups are whole groups of `group` tokens starting after the sinks (a token is only
read coded once its group is complete, as in the engine). Prints mean KLD against the exact cache
on the same tokens, top-1 agreement and delta PPL.

What it does not do: the engine's exact arithmetic (f16 parameters are rounded like the engine,
codes and k-means are this file's own), chunked prefill (the engine's default-mode window holds
128-160 exact tokens; here exactly `window`). Use it to rank ideas quickly; measure the winner
with `million perplexity`.

Needs: PyTorch, faiss-cpu, tokenizers, safetensors, numpy (pip). Codebooks here use FAISS's
ProductQuantizer with KV_SIM_ITERS (10) k-means iterations on KV_SIM_SAMPLES (8192) vectors, fewer
than `million calibrate`, to keep a variant's fit near a minute on 2 cores.

Usage: python3 research/kv_sim.py --variants pqnorm2,qpca2 [--windows 8] [--calib-windows 4]
Variants (VARIANTS below; docs/pq-research.md has the measurements): pqnorm2/4 (the engine's
pq-norm), qpca2/4 (the qpca key transform), and the qpca ablations.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

torch.set_grad_enabled(False)

MODEL = os.environ.get("MILLION_GUTENBERG", os.path.join(os.path.dirname(__file__), "../../shared/models/gutenberg-23m"))
CALIB = os.environ.get("MILLION_CALIB", os.path.join(os.path.dirname(__file__), "../../shared/text/calib"))


# ---------------------------------------------------------------- model
class Llama:
    def __init__(self, path):
        from safetensors.torch import load_file
        cfg = json.load(open(os.path.join(path, "config.json")))
        w = {}
        for f in sorted(os.listdir(path)):
            if f.endswith(".safetensors"):
                w.update({k: v.float() for k, v in load_file(os.path.join(path, f)).items()})
        self.w = w
        self.L = cfg["num_hidden_layers"]
        self.H = cfg["num_attention_heads"]
        self.KVH = cfg["num_key_value_heads"]
        self.D = cfg["head_dim"]
        self.eps = cfg["rms_norm_eps"]
        theta = cfg.get("rope_parameters", {}).get("rope_theta", cfg.get("rope_theta", 10000.0))
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.D, 2, dtype=torch.float64) / self.D))

    def rms(self, x, wname):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w[wname]

    def rope(self, x, T):
        pos = torch.arange(T, dtype=torch.float64)
        f = torch.outer(pos, self.inv_freq)
        cos = torch.cat([f.cos(), f.cos()], -1).float()
        sin = torch.cat([f.sin(), f.sin()], -1).float()
        h = self.D // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * cos + rot * sin

    def forward(self, tokens, attend, capture=None):
        """tokens: LongTensor [T]. attend(layer, q[H,T,D], k[KVH,T,D], v[KVH,T,D]) -> o[H,T,D].
        capture(layer, q, k, v) is called with exact-path tensors when given."""
        T = tokens.numel()
        x = self.w["model.embed_tokens.weight"][tokens]
        for l in range(self.L):
            p = f"model.layers.{l}."
            h = self.rms(x, p + "input_layernorm.weight")
            q = (h @ self.w[p + "self_attn.q_proj.weight"].T).view(T, self.H, self.D).transpose(0, 1)
            k = (h @ self.w[p + "self_attn.k_proj.weight"].T).view(T, self.KVH, self.D).transpose(0, 1)
            v = (h @ self.w[p + "self_attn.v_proj.weight"].T).view(T, self.KVH, self.D).transpose(0, 1)
            q, k = self.rope(q, T), self.rope(k, T)
            if capture is not None:
                capture(l, q, k, v)
            o = attend(l, q, k, v)
            x = x + o.transpose(0, 1).reshape(T, self.H * self.D) @ self.w[p + "self_attn.o_proj.weight"].T
            h = self.rms(x, p + "post_attention_layernorm.weight")
            g = h @ self.w[p + "mlp.gate_proj.weight"].T
            u = h @ self.w[p + "mlp.up_proj.weight"].T
            x = x + (torch.nn.functional.silu(g) * u) @ self.w[p + "mlp.down_proj.weight"].T
        x = self.rms(x, "model.norm.weight")
        return x @ self.w["model.embed_tokens.weight"].T


def exact_attend(model):
    def f(l, q, k, v):
        G = model.H // model.KVH
        k = k.repeat_interleave(G, 0)
        v = v.repeat_interleave(G, 0)
        T = q.shape[1]
        s = q @ k.transpose(1, 2) / math.sqrt(model.D)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        s = s.masked_fill(~mask, float("-inf"))
        return torch.softmax(s, -1) @ v
    return f


def mixed_attend(model, coder, window, sinks):
    """Attention where key s is read coded by query t when s >= sinks and s <= t - window."""
    def f(l, q, k, v):
        T = q.shape[1]
        kc, vc = coder.code(l, k, v, sinks)  # [KVH,T,D] each, exact where not coded
        G = model.H // model.KVH
        k, v, kc, vc = (a.repeat_interleave(G, 0) for a in (k, v, kc, vc))
        t = torch.arange(T).view(T, 1)
        s = torch.arange(T).view(1, T)
        causal = s <= t
        coded = causal & (s >= sinks) & (s <= t - window)
        sc = q @ kc.transpose(1, 2)
        se = q @ k.transpose(1, 2)
        sco = torch.where(coded, sc, se) / math.sqrt(model.D)
        sco = sco.masked_fill(~causal, float("-inf"))
        p = torch.softmax(sco, -1)
        return (p * (~coded)) @ v + (p * coded) @ vc
    return f


# ---------------------------------------------------------------- helpers
def f16(x):
    return x.half().float()


def hadamard(d, seed):
    H = torch.ones(1, 1)
    while H.shape[0] < d:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (d,), generator=g).float() * 2 - 1
    return (H * signs.view(1, d)) / math.sqrt(d)  # rows: output dims; x_rot = x @ R.T


def pq_train(x, M, nbits, iters=int(os.environ.get("KV_SIM_ITERS", "10"))):
    """FAISS's ProductQuantizer (k-means per subspace, `iters` iterations)."""
    import faiss
    pq = faiss.ProductQuantizer(x.shape[1], M, nbits)
    pq.cp.niter = iters
    pq.cp.seed = 0
    pq.cp.min_points_per_centroid = 1
    pq.train(np.ascontiguousarray(x.numpy(), dtype=np.float32))
    return pq


def pq_code(x, pq):
    xn = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    return torch.from_numpy(pq.decode(pq.compute_codes(xn)))


# ---------------------------------------------------------------- key/value transforms
def group_minmax(x, sinks, group):
    """x [T, d] -> (u, lo, rng) over whole groups of `group` tokens after the sinks; positions
    before `sinks` and the trailing partial group get lo 0, rng 1 (they are never read coded
    in a way that matters: sinks exact, partial groups inside the window)."""
    T, d = x.shape
    lo = torch.zeros(T, d)
    rng = torch.ones(T, d)
    for g0 in range(sinks, T, group):
        g1 = min(g0 + group, T)
        mn = f16(x[g0:g1].min(0).values)
        mx = x[g0:g1].max(0).values
        r = f16((mx - mn).clamp(min=1e-8))
        lo[g0:g1] = mn
        rng[g0:g1] = r
    return (x - lo) / rng, lo, rng


class Coder:
    """A K transform + K quantizer and a V transform + V quantizer, per (layer, kv head)."""

    def __init__(self, model, kind, bits, opts):
        self.model, self.kind, self.bits, self.o = model, kind, bits, opts
        self.M = {2: 32, 4: 64}[bits] if "M" not in opts else opts["M"]
        self.kM = opts.get("kM", self.M)
        self.vM = opts.get("vM", self.M)
        self.knbits = opts.get("knbits", 8)
        self.vnbits = opts.get("vnbits", 8)
        self.group = opts.get("group", 128)
        self.p = {}

    # ---- transforms (x [T, d] rows)
    def k_fwd(self, l, h, k):
        return k @ self.p[l, h]["Tk"].T

    def k_inv(self, l, h, k):
        return k @ self.p[l, h]["Tk_inv"].T

    def v_fwd(self, l, h, v):
        return v @ self.p[l, h]["Tv"].T

    def v_inv(self, l, h, v):
        return v @ self.p[l, h]["Tv_inv"].T

    def fit(self, cal):
        """cal[(l, h)] = dict(k=[N,d], v=[N,d], q=[N,G,d], kpos=[N]); windows concatenated."""
        d = self.model.D
        for (l, h), c in cal.items():
            P = {}
            R = hadamard(d, 1000 * l + h)
            Tk, Tv = R, R
            if self.o.get("ktrans") == "qpca":
                Tk = self.qpca(c, l, h)
            elif self.o.get("ktrans") == "none":
                Tk = torch.eye(d)
            P["Tk"], P["Tv"] = Tk, Tv
            P["Tk_inv"], P["Tv_inv"] = torch.linalg.inv(Tk), torch.linalg.inv(Tv)
            self.p[l, h] = P
            k = self.k_fwd(l, h, c["k"])
            v = self.v_fwd(l, h, c["v"])
            ku, kr = self.k_norm(k, c["bounds"])
            # per-channel scale of the normalised keys: 1, or (kscaled) the typical group range,
            # so that Euclidean distance on u * scale approximates the error in key space
            P["kscale"] = kr.median(0).values if self.o.get("kscaled") else torch.ones(k.shape[1])
            ku = ku * P["kscale"]
            vu, _ = self.v_norm(v)
            g = torch.Generator().manual_seed(l * 7 + h)
            idx = torch.randperm(ku.shape[0], generator=g)[:self.o.get("samples", int(os.environ.get("KV_SIM_SAMPLES", "8192")))]
            P["kcb"] = pq_train(ku[idx], self.kM, self.knbits)
            idx = torch.randperm(vu.shape[0], generator=g)[:self.o.get("samples", int(os.environ.get("KV_SIM_SAMPLES", "8192")))]
            P["vcb"] = pq_train(vu[idx], self.vM, self.vnbits)

    def k_norm(self, k, bounds, sinks=0):
        """Returns (u, weights) for training (bounds: list of window [start, end) in k)."""
        mode = self.o.get("knorm", "minmax")
        if mode == "none":
            return k, None
        us, ws = [], []
        for b0, b1 in bounds:
            u, lo, rng = group_minmax(k[b0:b1], sinks, self.group)
            us.append(u)
            ws.append(rng)
        return torch.cat(us), torch.cat(ws)

    def v_norm(self, v):
        if self.o.get("vnorm", "token") == "token":
            n = f16(v.norm(dim=1, keepdim=True).clamp(min=1e-8))
            return v / n, n
        return v, None

    def code(self, l, k, v, sinks):
        out_k, out_v = torch.empty_like(k), torch.empty_like(v)
        for h in range(k.shape[0]):
            P = self.p[l, h]
            kt = self.k_fwd(l, h, k[h])
            if self.o.get("knorm", "minmax") == "minmax":
                u, lo, rng = group_minmax(kt, sinks, self.group)
                s = P["kscale"]
                kh = pq_code(u * s, P["kcb"]) / s * rng + lo
            else:
                kh = pq_code(kt, P["kcb"])
            out_k[h] = self.k_inv(l, h, kh)
            vt = self.v_fwd(l, h, v[h])
            vu, n = self.v_norm(vt)
            vh = pq_code(vu, P["vcb"])
            if n is not None:
                vh = vh * n
            out_v[h] = self.v_inv(l, h, vh)
        return out_k, out_v

    def qpca(self, c, l, h):
        """T = U^T S^{1/2}, S = E[q q^T] over the kv head's query heads (regularised); U the
        eigenvectors of the keys' covariance in the S^{1/2} space, dims then interleaved so each
        subspace gets a balanced share of the variance (OPQ's eigenvalue allocation)."""
        d = self.model.D
        q = c["q"].reshape(-1, d)
        S = (q.T @ q) / q.shape[0]
        S = S + self.o.get("qreg", 1e-3) * S.trace() / d * torch.eye(d)
        if self.o.get("noq"):
            S = torch.eye(d)
        e, V = torch.linalg.eigh(S.double())
        Sh = (V * e.sqrt()) @ V.T
        kk = c["k"].double() @ Sh.T
        C = torch.cov(kk.T) if self.o.get("center", True) else (kk.T @ kk) / kk.shape[0]
        lam, U = torch.linalg.eigh(C)
        order = torch.argsort(lam, descending=True)
        lam, U = lam[order], U[:, order]
        perm = self.allocate(lam.clamp(min=1e-12), d)
        T = U[:, perm].T @ Sh
        if self.o.get("hadamard_after"):
            T = hadamard(d, 1000 * l + h).double() @ Sh
        return T.float()

    def allocate(self, lam, d):
        ds = d // self.kM
        mode = self.o.get("alloc", "balance")
        if mode == "sequential":
            return list(range(d))
        # greedy balance of log-products, as OPQ's non-parametric initialisation
        buckets = [[] for _ in range(self.kM)]
        logp = [0.0] * self.kM
        for i in range(d):
            cand = [m for m in range(self.kM) if len(buckets[m]) < ds]
            m = min(cand, key=lambda j: logp[j])
            buckets[m].append(i)
            logp[m] += math.log(lam[i].item())
        return [i for b in buckets for i in b]



# ---------------------------------------------------------------- data
def load_tokens(path):
    return torch.from_numpy(np.fromfile(path, dtype=np.uint16).astype(np.int64))


def calib_capture(model, nwin, ctx):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    docs = []
    for f in sorted(os.listdir(CALIB)):
        if f.endswith(".txt"):
            ids = tok.encode(open(os.path.join(CALIB, f), encoding="utf-8").read(), add_special_tokens=False).ids
            docs.append([1] + ids)
    wins = []
    rng = np.random.default_rng(0)
    for i in rng.permutation(len(docs)):
        d = docs[i]
        start = int(rng.integers(0, max(1, len(d) - ctx)))
        wins.append(torch.tensor(d[start:start + ctx] if start > 0 else d[:ctx]))
        if len(wins) == nwin:
            break
    cal = {}
    G = model.H // model.KVH
    bounds = []
    off = 0
    for w in wins:
        store = {}

        def cap(l, q, k, v):
            for h in range(model.KVH):
                store[l, h] = (k[h].clone(), v[h].clone(), q[h * G:(h + 1) * G].transpose(0, 1).clone())
        model.forward(w, exact_attend(model), cap)
        for key, (k, v, q) in store.items():
            c = cal.setdefault(key, {"k": [], "v": [], "q": []})
            c["k"].append(k); c["v"].append(v); c["q"].append(q)
        bounds.append((off, off + w.numel()))
        off += w.numel()
    for c in cal.values():
        for n in ("k", "v", "q"):
            c[n] = torch.cat(c[n])
        c["bounds"] = bounds
    return cal


def kld_stats(le, lq, targets):
    lpe = torch.log_softmax(le.double(), -1)
    lpq = torch.log_softmax(lq.double(), -1)
    kl = (lpe.exp() * (lpe - lpq)).sum(-1)
    nll_e = -lpe.gather(1, targets.view(-1, 1)).squeeze(1)
    nll_q = -lpq.gather(1, targets.view(-1, 1)).squeeze(1)
    top1 = (le.argmax(-1) == lq.argmax(-1)).double()
    return kl, nll_e, nll_q, top1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", required=True)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--first-window", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--calib-windows", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    model = Llama(MODEL)
    t0 = time.time()
    cache = f"/tmp/kv_sim_calib_{args.calib_windows}_{args.ctx}.pt"
    if os.path.exists(cache):
        cal = torch.load(cache)
    else:
        cal = calib_capture(model, args.calib_windows, args.ctx)
        torch.save(cal, cache)
    print(f"calibration capture {time.time() - t0:.1f}s", file=sys.stderr)
    coders = {}
    for name in args.variants.split(","):
        t0 = time.time()
        coders[name] = make_coder(model, name)
        coders[name].fit(cal)
        print(f"fit {name} {time.time() - t0:.1f}s", file=sys.stderr)
    toks = load_tokens(os.path.join(MODEL, "eval-tokens/heldout_eval.bin"))
    acc = {n: [] for n in coders}
    nll_e_all = []
    for wi in range(args.first_window, args.first_window + args.windows):
        w = toks[wi * args.ctx:(wi + 1) * args.ctx]
        le = model.forward(w, exact_attend(model))[:-1]
        tg = w[1:]
        for n, c in coders.items():
            lq = model.forward(w, mixed_attend(model, c, args.window, args.sinks))[:-1]
            kl, nle, nlq, t1 = kld_stats(le, lq, tg)
            acc[n].append((kl, nlq, t1))
        nll_e_all.append(kld_stats(le, le, tg)[1])
        print(f"window {wi}: " + " ".join(f"{n}={torch.cat([a[0] for a in acc[n]]).mean():.5f}" for n in acc),
              file=sys.stderr, flush=True)
    nle = torch.cat(nll_e_all)
    ppl_e = nle.mean().exp().item()
    print(f"exact PPL {ppl_e:.4f} ({nle.numel()} tokens)")
    print("| variant | mean KLD | dPPL % | top-1 % | per-window KLD |")
    print("|---|---:|---:|---:|---|")
    for n, a in acc.items():
        kl = torch.cat([x[0] for x in a]); nlq = torch.cat([x[1] for x in a]); t1 = torch.cat([x[2] for x in a])
        pw = " ".join(f"{x[0].mean():.4f}" for x in a)
        print(f"| {n} | {kl.mean():.5f} | {100 * (nlq.mean().exp().item() / ppl_e - 1):+.3f} | {100 * t1.mean():.2f} | {pw} |")


VARIANTS = {
    "pqnorm2": dict(bits=2),  # the engine's pq-norm: Hadamard, key channel-groups, value norms
    "pqnorm4": dict(bits=4),
    "qpca2": dict(bits=2, ktrans="qpca", kscaled=True),  # the engine's pq-qpca
    "qpca4": dict(bits=4, ktrans="qpca", kscaled=True),
    # ablations of qpca2
    "qpca2-noscale": dict(bits=2, ktrans="qpca"),  # no channel scale after the channel-groups
    "qpca2-noq": dict(bits=2, ktrans="qpca", kscaled=True, noq=True),  # PCA of the keys alone (S = I)
    "qpca2-seq": dict(bits=2, ktrans="qpca", kscaled=True, alloc="sequential"),  # no eigenvalue allocation
    "qwhite2": dict(bits=2, ktrans="qpca", kscaled=True, hadamard_after=True),  # S^1/2 then Hadamard
    "qpca2-nonorm": dict(bits=2, ktrans="qpca", knorm="none"),  # no key channel-groups at all
    "pqnorm2-scaled": dict(bits=2, kscaled=True),  # pq-norm with the channel scale
}


def make_coder(model, name):
    o = dict(VARIANTS[name])
    return Coder(model, "pq", o.pop("bits"), o)


if __name__ == "__main__":
    main()
