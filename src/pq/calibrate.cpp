// Calibration pipeline (see calibrate.h): windows -> capture -> per-group training -> errors.
#include "pq/calibrate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "core/mapped_file.h"
#include "million/error.h"
#include "million/log.h"
#include "pq/capture.h"
#include "pq/encode.h"
#include "pq/normalize.h"
#include "pq/query_pca.h"
#include "pq/rotation.h"
#include "pq/windows.h"

namespace million {

namespace fs = std::filesystem;

ModelFingerprint model_fingerprint(const std::string& model_path, const ModelConfig& config) {
  ModelFingerprint f;
  f.architecture = config.architecture;
  f.n_layers = config.n_layers;
  f.n_kv_heads = config.n_kv_heads;
  f.head_dim = config.head_dim;
  f.hidden_size = config.hidden_size;
  f.vocab_size = config.vocab_size;
  if (fs::is_directory(model_path)) {
    const std::string text = read_text_file((fs::path(model_path) / "config.json").string(), "model config");
    f.config_hash = fnv1a64(text.data(), text.size());
  } else {
    MappedFile file(model_path, "model");
    f.config_hash = fnv1a64(file.data(), std::min<std::size_t>(file.size(), 28));
  }
  return f;
}

double relative_error(const PQCodebook& cb, const float* x, std::int64_t n) {
  if (n == 0) return 0.0;
  const int d = cb.head_dim;
  std::vector<float> xr(static_cast<std::size_t>(n) * d), dec(xr.size());
  cb.rotate(x, n, xr.data());
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(n) * cb.M);
  PQEncoder(cb).encode(xr.data(), n, codes.data(), active_simd_level());
  pq_decode(cb, codes.data(), n, dec.data());
  double err = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < xr.size(); ++i) {  // measured in the codebook's space
    err += (static_cast<double>(xr[i]) - dec[i]) * (static_cast<double>(xr[i]) - dec[i]);
    norm += static_cast<double>(xr[i]) * xr[i];
  }
  return norm > 0 ? std::sqrt(err / norm) : 0.0;
}

namespace {

// Training vectors of one (group, kind): the reservoirs of its (layer, kv head) pairs, concatenated.
std::vector<float> gather(const KVCapture& cap, const CodebookSet& set, int group, CaptureKind kind, bool heldout) {
  std::vector<float> out;
  const ModelFingerprint& m = set.model;
  for (int l = 0; l < m.n_layers; ++l) {
    for (int h = 0; h < m.n_kv_heads; ++h) {
      if (set.group_of(l, h) != group) continue;
      const Reservoir& r = heldout ? cap.heldout(l, h, kind) : cap.train(l, h, kind);
      out.insert(out.end(), r.data(), r.data() + r.size() * r.dim());
    }
  }
  return out;
}

// x [n, d] *= scale per channel.
void scale_channels(std::vector<float>& x, const std::vector<float>& scale) {
  const std::size_t d = scale.size();
  for (std::size_t i = 0; i < x.size(); ++i) x[i] *= scale[i % d];
}

// Per-channel median of the channel-group ranges r [groups, d] (ones where there are none).
std::vector<float> median_ranges(const std::vector<float>& r, int d) {
  std::vector<float> out(static_cast<std::size_t>(d), 1.0f);
  const std::size_t groups = r.size() / static_cast<std::size_t>(d);
  if (groups == 0) return out;
  std::vector<float> col(groups);
  for (int c = 0; c < d; ++c) {
    for (std::size_t g = 0; g < groups; ++g) col[g] = r[g * static_cast<std::size_t>(d) + static_cast<std::size_t>(c)];
    std::nth_element(col.begin(), col.begin() + static_cast<std::ptrdiff_t>(groups / 2), col.end());
    const float m = col[groups / 2];
    out[static_cast<std::size_t>(c)] = m > 0.0f && std::isfinite(m) ? m : 1.0f;
  }
  return out;
}

}  // namespace

CodebookSet calibrate(Model& model, const ModelFingerprint& fingerprint, const std::vector<std::vector<int>>& documents,
                      const CalibrateOptions& opt, CalibrateReport* report) {
  using clock = std::chrono::steady_clock;
  const ModelConfig& cfg = model.config();
  opt.k_config.validate(cfg.head_dim);
  opt.v_config.validate(cfg.head_dim);
  if (opt.rotation == RotationKind::kHadamard && (cfg.head_dim & (cfg.head_dim - 1)) != 0) {
    throw InvalidArgumentError(fmt::format("--rotation hadamard needs a power-of-two head_dim (this model: {})", cfg.head_dim));
  }
  const int max_ksub = std::max(opt.k_config.ksub(), opt.v_config.ksub());
  const std::int64_t samples = opt.samples > 0 ? opt.samples : 64 * static_cast<std::int64_t>(max_ksub);
  const int ctx = opt.ctx > 0 ? opt.ctx : static_cast<int>(std::min<std::int64_t>(cfg.max_ctx, 4096));
  if (ctx > cfg.max_ctx) throw InvalidArgumentError(fmt::format("--ctx {} exceeds the model's context {}", ctx, cfg.max_ctx));
  const bool normalised = opt.k_norm != VectorNorm::kNone || opt.v_norm != VectorNorm::kNone;
  if (normalised && opt.rotation == RotationKind::kOpq) {
    throw InvalidArgumentError("normalised codebooks (--k-norm / --v-norm) need --rotation none, hadamard or qpca");
  }
  const bool qpca = opt.rotation == RotationKind::kQueryPca;
  if (qpca && opt.k_norm != VectorNorm::kChannelGroup) {
    throw InvalidArgumentError("--rotation qpca needs --k-norm channel-group (its channel scale lives there)");
  }
  if (qpca && (cfg.head_dim & (cfg.head_dim - 1)) != 0) {
    throw InvalidArgumentError(fmt::format("--rotation qpca rotates values by a Hadamard matrix: it needs a "
                                           "power-of-two head_dim (this model: {})", cfg.head_dim));
  }
  if ((opt.k_norm == VectorNorm::kChannelGroup || opt.v_norm == VectorNorm::kChannelGroup) &&
      (opt.norm_group < 64 || opt.norm_group % 64 != 0 || opt.norm_group > ctx)) {
    throw InvalidArgumentError(fmt::format("--norm-group {} must be a positive multiple of 64 and at most the window "
                                           "length {}", opt.norm_group, ctx));
  }
  CodebookSet set;
  set.model = fingerprint;
  set.granularity = opt.granularity;
  set.k_config = opt.k_config;
  set.v_config = opt.v_config;
  set.rotation = opt.rotation;
  set.k_norm = opt.k_norm;
  set.v_norm = opt.v_norm;
  set.norm_group =
      opt.k_norm == VectorNorm::kChannelGroup || opt.v_norm == VectorNorm::kChannelGroup ? opt.norm_group : 0;
  set.seed = opt.seed;
  const int groups = set.n_groups();
  // Normalised codebooks: the rotation is drawn up front (the same seeds train_pq_codebook uses)
  // and the capture rotates + normalises blocks of consecutive tokens as the cache will.
  std::vector<std::vector<float>> rotations(static_cast<std::size_t>(2 * groups));
  // qpca: the keys' transforms T (rotations[2g]) come from a first pass over the same windows
  // that sums key and query moments; their inverses go here, and the channel-group ranges the
  // second pass sees go to `ranges` (their per-channel median becomes the channel scale).
  std::vector<std::vector<float>> inverses(static_cast<std::size_t>(groups)), ranges(static_cast<std::size_t>(groups));
  CaptureOptions copt;
  if (normalised) {
    for (int i = 0; i < 2 * groups; ++i) {
      if (opt.rotation == RotationKind::kHadamard || (qpca && i % 2 == 1)) {
        rotations[static_cast<std::size_t>(i)] = hadamard_rotation(cfg.head_dim, opt.seed * 1000 + static_cast<std::uint64_t>(i));
      }
    }
    for (int kind = 0; kind < 2; ++kind) {
      copt.transform_block[kind] = (kind == 0 ? opt.k_norm : opt.v_norm) == VectorNorm::kChannelGroup ? opt.norm_group : 1;
    }
    copt.transform = [&set, &rotations, &opt, &ranges, qpca, d = cfg.head_dim](int layer, int kv_head, CaptureKind kind, float* x, int n) {
      const int k = kind == CaptureKind::kKey ? 0 : 1;
      const std::vector<float>& R = rotations[static_cast<std::size_t>(2 * set.group_of(layer, kv_head) + k)];
      std::vector<float> u(static_cast<std::size_t>(n) * d);
      if (!R.empty()) {
        rotate_vectors(R, d, x, n, u.data());
      } else {
        std::copy(x, x + static_cast<std::ptrdiff_t>(n) * d, u.begin());
      }
      const VectorNorm norm = k == 0 ? opt.k_norm : opt.v_norm;
      std::vector<float> params(static_cast<std::size_t>(std::max(n, 2 * d)));
      normalize_block(norm, u.data(), n, d, params.data());
      if (qpca && k == 0) {
        auto& r = ranges[static_cast<std::size_t>(set.group_of(layer, kv_head))];
        r.insert(r.end(), params.begin() + d, params.begin() + 2 * d);
      }
      std::copy(u.begin(), u.end(), x);
    };
  }
  copt.train_samples = samples;
  copt.heldout_samples = std::max<std::int64_t>(256, samples / 16);
  copt.seed = opt.seed;
  const std::int64_t want_tokens =
      opt.max_tokens > 0 ? opt.max_tokens : samples * copt.heldout_one_in / (copt.heldout_one_in - 1) + 1;

  const WindowPlan plan = plan_windows(documents, ctx, want_tokens, opt.seed);
  const std::int64_t planned = plan.tokens;
  if (planned < want_tokens) {
    log_warn("the calibration text has {} tokens, fewer than the {} wanted for {} training vectors per codebook",
             plan.available, want_tokens, samples);
  }

  const auto t0 = clock::now();
  if (qpca) {
    CaptureOptions mopt;
    mopt.train_samples = 1;
    mopt.heldout_samples = 0;
    mopt.moments = true;
    mopt.seed = opt.seed;
    KVCapture mcap(model.cache_shape(ctx), mopt);
    std::int64_t seen = 0;
    for (const TextWindow& win : plan.windows) {
      const std::vector<int> tokens = window_tokens(documents, win);
      mcap.clear();
      model.prefill(tokens, mcap, nullptr);
      seen += static_cast<std::int64_t>(tokens.size());
      if (opt.progress) opt.progress({"moments", seen, planned, std::chrono::duration<double>(clock::now() - t0).count()});
    }
    for (int g = 0; g < groups; ++g) {
      KeyQueryMoments m(cfg.head_dim);
      for (int l = 0; l < cfg.n_layers; ++l) {
        for (int h = 0; h < cfg.n_kv_heads; ++h) {
          if (set.group_of(l, h) == g) m.merge(mcap.moments(l, h));
        }
      }
      QueryPcaTransform t = query_pca_transform(m, opt.k_config.M);
      rotations[static_cast<std::size_t>(2 * g)] = std::move(t.forward);
      inverses[static_cast<std::size_t>(g)] = std::move(t.inverse);
    }
  }
  KVCapture cap(model.cache_shape(ctx), copt);
  cap.attach(model);
  std::int64_t done = 0;
  for (const TextWindow& win : plan.windows) {
    const std::vector<int> tokens = window_tokens(documents, win);
    cap.clear();
    cap.set_token_base(done);
    model.prefill(tokens, cap, nullptr);
    done += static_cast<std::int64_t>(tokens.size());
    if (opt.progress) opt.progress({"capture", done, planned, std::chrono::duration<double>(clock::now() - t0).count()});
  }
  model.set_pre_rope_key_observer({});
  const auto t1 = clock::now();

  set.entries.resize(static_cast<std::size_t>(2 * groups));
  for (int g = 0; g < groups; ++g) {
    for (int kind = 0; kind < 2; ++kind) {
      const CaptureKind ck = kind == 0 ? CaptureKind::kKey : CaptureKind::kValue;
      std::vector<float> x = gather(cap, set, g, ck, false);
      const std::int64_t n = static_cast<std::int64_t>(x.size()) / cfg.head_dim;
      std::vector<float> scale;
      if (qpca && kind == 0) {  // k-means sees u' = scale * u, the space the cache encodes in
        scale = median_ranges(ranges[static_cast<std::size_t>(g)], cfg.head_dim);
        scale_channels(x, scale);
      }
      const PQConfig& pc = kind == 0 ? opt.k_config : opt.v_config;
      if (n < 39LL * pc.ksub()) {
        log_warn("codebook group {} {}: {} training vectors for {} centroids (FAISS recommends at least {})", g,
                 kind == 0 ? "K" : "V", n, pc.ksub(), 39 * pc.ksub());
      }
      PQCodebook& cb = set.entries[static_cast<std::size_t>(2 * g + kind)];
      // Normalised samples are already rotated: train on them as they are, then record the rotation.
      cb = train_pq_codebook(x.data(), n, cfg.head_dim, pc, normalised ? RotationKind::kNone : opt.rotation,
                             opt.seed * 1000 + static_cast<std::uint64_t>(2 * g + kind), opt.kmeans);
      if (normalised) {
        cb.rotation = entry_rotation(opt.rotation, kind);
        cb.rotation_matrix = rotations[static_cast<std::size_t>(2 * g + kind)];
        if (qpca && kind == 0) {
          cb.inverse_matrix = inverses[static_cast<std::size_t>(g)];
          cb.channel_scale = std::move(scale);
        }
        cb.norm = kind == 0 ? opt.k_norm : opt.v_norm;
        cb.norm_group = cb.norm == VectorNorm::kChannelGroup ? opt.norm_group : 0;
      }
      if (opt.progress) {
        opt.progress({"train", 2 * g + kind + 1, 2 * groups, std::chrono::duration<double>(clock::now() - t1).count()});
      }
    }
  }
  const auto t2 = clock::now();
  set.validate("calibration result");

  if (report != nullptr) {
    report->tokens = done;
    report->windows = static_cast<std::int64_t>(plan.windows.size());
    report->capture_seconds = std::chrono::duration<double>(t1 - t0).count();
    report->train_seconds = std::chrono::duration<double>(t2 - t1).count();
    report->train_vectors = report->heldout_vectors = INT64_MAX;
    report->layers.assign(static_cast<std::size_t>(cfg.n_layers), {});
    for (int l = 0; l < cfg.n_layers; ++l) {
      for (int kind = 0; kind < 2; ++kind) {
        const CaptureKind ck = kind == 0 ? CaptureKind::kKey : CaptureKind::kValue;
        double err2 = 0.0, norm2 = 0.0;
        for (int h = 0; h < cfg.n_kv_heads; ++h) {
          const Reservoir& held = cap.heldout(l, h, ck);
          report->train_vectors = std::min(report->train_vectors, cap.train(l, h, ck).size());
          report->heldout_vectors = std::min(report->heldout_vectors, held.size());
          PQCodebook cb = set.get(l, h, kind == 0 ? KVKind::kKey : KVKind::kValue);
          std::vector<float> hx(held.data(), held.data() + held.size() * held.dim());
          if (normalised) {  // held-out samples are rotated and normalised already
            cb.rotation = RotationKind::kNone;
            cb.rotation_matrix.clear();
            if (!cb.channel_scale.empty()) scale_channels(hx, cb.channel_scale);
            cb.inverse_matrix.clear();
            cb.channel_scale.clear();
          }
          double norm = 0.0;
          for (float v : hx) norm += static_cast<double>(v) * v;
          const double e = relative_error(cb, hx.data(), held.size());
          err2 += e * e * norm;
          norm2 += norm;
        }
        const double rel = norm2 > 0 ? std::sqrt(err2 / norm2) : 0.0;
        (kind == 0 ? report->layers[static_cast<std::size_t>(l)].k : report->layers[static_cast<std::size_t>(l)].v) = rel;
      }
    }
  }
  return set;
}

}  // namespace million
