// Calibration end to end. stories260K (always available): calibrate on text the model itself
// samples (seeded), save, load, check the file matches the model and the result, that errors
// are reported per layer and are below the error of the trivial one-centroid quantizer, and
// that the same seed gives a byte-identical file. gutenberg-23m (skipped when absent):
// calibrate on ../shared/text/calib with reduced samples and check the held-out K/V errors, and
// that a qpca codebook (pq/query_pca.h) keeps the model closer to its exact cache than a
// Hadamard one at 2 bits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <fstream>
#include <sstream>

#include "common/test_util.h"
#include "common/test_paths.h"
#include "million/error.h"
#include "model/generate.h"
#include "model/tokenizer.h"
#include "pq/calibrate.h"
#include "pq/capture.h"
#include "pq/codebook_file.h"
#include "pq/encode.h"
#include "pq/train.h"

namespace million {
namespace {

using test::slurp;


// Documents sampled from the model at temperature 1 (different seeds).
std::vector<std::vector<int>> sampled_documents(Model& model, int n_docs, int length) {
  std::vector<std::vector<int>> docs;
  for (int i = 0; i < n_docs; ++i) {
    auto cache = make_kv_cache("f32", model.cache_shape(length));
    GenerateOptions opt;
    opt.n_predict = length - 1;
    opt.sampler.temperature = 1.0f;
    opt.sampler.seed = static_cast<std::uint64_t>(i);
    std::vector<int> doc{1};
    generate(model, *cache, doc, opt, [&](int id) {
      doc.push_back(id);
      return true;
    });
    docs.push_back(doc);
  }
  return docs;
}

TEST(Calibrate, Stories260KEndToEnd) {
  const std::string path = test::source_dir() + "/models/stories260K/stories260K.bin";
  Model model(load_weights(path));
  const auto docs = sampled_documents(model, 12, 256);
  CalibrateOptions opt;
  opt.k_config = {4, 4};  // head_dim 8: 4 subspaces of 2 dims, 16 centroids
  opt.v_config = {2, 5};
  opt.samples = 1024;
  opt.ctx = 256;
  opt.seed = 3;
  CalibrateReport rep;
  const ModelFingerprint fp = model_fingerprint(path, model.config());
  const CodebookSet set = calibrate(model, fp, docs, opt, &rep);
  EXPECT_EQ(set.entries.size(), static_cast<std::size_t>(2 * 5 * 4));  // layer-head: 5 layers x 4 kv heads x K,V
  EXPECT_GE(rep.train_vectors, 900);
  EXPECT_GT(rep.heldout_vectors, 20);
  ASSERT_EQ(rep.layers.size(), 5u);
  for (const LayerError& e : rep.layers) {
    // A one-centroid quantizer (the mean) has relative error ~1 on centred data; PQ must do far better.
    EXPECT_GT(e.k, 0.0);
    EXPECT_LT(e.k, 0.6);
    EXPECT_GT(e.v, 0.0);
    EXPECT_LT(e.v, 0.6);
  }
  const std::string dir = test::temp_dir();
  save_codebooks(set, dir + "/a.cb");
  const CodebookSet loaded = load_codebooks(dir + "/a.cb");
  EXPECT_NO_THROW(check_codebooks_match(loaded, fp, "a.cb"));
  EXPECT_EQ(loaded.get(3, 2, KVKind::kValue).centroids, set.get(3, 2, KVKind::kValue).centroids);
  EXPECT_EQ(loaded.k_config, opt.k_config);

  // Same seed, same bytes.
  const CodebookSet again = calibrate(model, fp, docs, opt, nullptr);
  save_codebooks(again, dir + "/b.cb");
  EXPECT_EQ(slurp(dir + "/a.cb"), slurp(dir + "/b.cb"));

  // Coarser granularities have fewer entries and still quantize.
  opt.granularity = Granularity::kShared;
  const CodebookSet shared = calibrate(model, fp, docs, opt, &rep);
  EXPECT_EQ(shared.entries.size(), 2u);
  EXPECT_LT(rep.layers[0].k, 0.8);
}

// --rotation qpca on a real model's text: the keys' entries carry the learned transform, its
// inverse and channel scales, the values' a Hadamard matrix; the file round-trips; a cache
// built from it runs.
TEST(Calibrate, QueryPcaStories260K) {
  const std::string path = test::source_dir() + "/models/stories260K/stories260K.bin";
  Model model(load_weights(path));
  const auto docs = sampled_documents(model, 12, 256);
  CalibrateOptions opt;
  opt.k_config = {4, 4};
  opt.v_config = {4, 4};
  opt.samples = 1024;
  opt.ctx = 256;
  opt.rotation = RotationKind::kQueryPca;
  opt.k_norm = VectorNorm::kChannelGroup;
  opt.v_norm = VectorNorm::kToken;
  opt.norm_group = 64;
  CalibrateReport rep;
  std::vector<std::string> stages;
  opt.progress = [&](const CalibrateProgress& p) {
    if (stages.empty() || stages.back() != p.stage) stages.emplace_back(p.stage);
  };
  const ModelFingerprint fp = model_fingerprint(path, model.config());
  const CodebookSet set = calibrate(model, fp, docs, opt, &rep);
  EXPECT_EQ(stages, (std::vector<std::string>{"moments", "capture", "train"}));
  EXPECT_EQ(set.rotation, RotationKind::kQueryPca);
  for (const LayerError& e : rep.layers) {
    EXPECT_GT(e.k, 0.0);
    EXPECT_LT(e.k, 0.6);
  }
  const PQCodebook& k = set.get(2, 1, KVKind::kKey);
  const PQCodebook& v = set.get(2, 1, KVKind::kValue);
  EXPECT_EQ(k.rotation, RotationKind::kQueryPca);
  EXPECT_EQ(v.rotation, RotationKind::kHadamard);
  ASSERT_EQ(k.channel_scale.size(), 8u);
  EXPECT_TRUE(v.channel_scale.empty() && v.inverse_matrix.empty());
  // The scales are typical channel-group ranges in T-space: positive and not all equal (T is
  // not orthogonal and its rows have different variances).
  EXPECT_GT(*std::max_element(k.channel_scale.begin(), k.channel_scale.end()),
            1.5f * *std::min_element(k.channel_scale.begin(), k.channel_scale.end()));
  const std::string dir = test::temp_dir();
  save_codebooks(set, dir + "/q.cb");
  const CodebookSet loaded = load_codebooks(dir + "/q.cb");
  EXPECT_EQ(loaded.get(2, 1, KVKind::kKey).inverse_matrix, k.inverse_matrix);
  auto cache = make_kv_cache("pq:window=0", model.cache_shape(256), {dir + "/q.cb", &fp});
  std::vector<float> logits(static_cast<std::size_t>(model.config().vocab_size));
  model.prefill(docs[0], *cache, logits.data(), 64);
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));

  opt.k_norm = VectorNorm::kToken;  // qpca's channel scale needs channel-group keys
  EXPECT_THROW(calibrate(model, fp, docs, opt, nullptr), InvalidArgumentError);
}

// Every encoder level against the reference on real captured keys and values (post-RoPE keys
// have the outlier channels synthetic data lacks): codes equal, or where they differ the chosen
// centroid is as near as the reference's within float rounding (1e-5 relative).
void check_levels_on(const PQCodebook& cb, const Reservoir& r, const std::string& what) {
  const std::int64_t n = r.size();
  std::vector<std::uint8_t> ref(static_cast<std::size_t>(n * cb.M));
  pq_encode_ref(cb, r.data(), n, ref.data());
  const PQEncoder enc(cb);
  for (SimdLevel level : supported_simd_levels()) {
    std::vector<std::uint8_t> got(ref.size());
    enc.encode(r.data(), n, got.data(), level);
    std::int64_t ties = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      for (int m = 0; m < cb.M; ++m) {
        const std::size_t k = static_cast<std::size_t>(i * cb.M + m);
        if (got[k] == ref[k]) continue;
        auto dist = [&](int c) {
          double d = 0;
          for (int j = 0; j < cb.dsub(); ++j) {
            const double t = static_cast<double>(r.data()[i * cb.head_dim + m * cb.dsub() + j]) -
                             cb.centroids[static_cast<std::size_t>((m * cb.ksub() + c) * cb.dsub() + j)];
            d += t * t;
          }
          return d;
        };
        ASSERT_NEAR(dist(got[k]), dist(ref[k]), 1e-5 * dist(ref[k]) + 1e-12) << what << " level " << simd_level_name(level);
        ++ties;
      }
    }
    std::printf("%s, %s: %lld vectors, %lld codes differ from the reference at float ties\n", what.c_str(),
                simd_level_name(level), static_cast<long long>(n), static_cast<long long>(ties));
  }
}

TEST(Calibrate, EncodersMatchReferenceOnCapturedKV) {
  const std::string path = test::source_dir() + "/models/stories260K/stories260K.bin";
  Model model(load_weights(path));
  const auto docs = sampled_documents(model, 4, 256);
  CaptureOptions copt;
  copt.train_samples = 600;
  KVCapture cap(model.cache_shape(256), copt);
  for (const auto& d : docs) {
    cap.clear();
    model.prefill(d, cap, nullptr);
  }
  for (int layer : {0, 4}) {
    for (CaptureKind kind : {CaptureKind::kKey, CaptureKind::kValue}) {
      const Reservoir& r = cap.train(layer, 1, kind);
      ASSERT_EQ(r.size(), 600);
      for (PQConfig pc : {PQConfig{4, 8}, PQConfig{8, 4}, PQConfig{2, 6}}) {
        const PQCodebook cb = train_pq_codebook(r.data(), r.size(), 8, pc, RotationKind::kNone, 1, {});
        check_levels_on(cb, r, fmt::format("stories260K layer {} {} {}", layer, kind == CaptureKind::kKey ? "K" : "V", pc.str()));
      }
    }
  }
}

TEST(Calibrate, TooLittleTextAndBadOptionsAreClearErrors) {
  const std::string path = test::source_dir() + "/models/stories260K/stories260K.bin";
  Model model(load_weights(path));
  const ModelFingerprint fp = model_fingerprint(path, model.config());
  CalibrateOptions opt;
  opt.k_config = opt.v_config = {4, 4};
  EXPECT_THROW(calibrate(model, fp, {{1, 2, 3}}, opt, nullptr), InvalidArgumentError);  // shorter than a window
  opt.k_config = {3, 4};  // 3 does not divide head_dim 8
  EXPECT_THROW(calibrate(model, fp, sampled_documents(model, 1, 64), opt, nullptr), InvalidArgumentError);
}

// The .txt files of text_dir tokenized with the model's SentencePiece tokenizer (BOS first), in
// file-name order (directory order is not fixed).
std::vector<std::vector<int>> calibration_documents(const std::string& model_dir, const std::string& text_dir) {
  auto tok = load_sentencepiece_tokenizer(model_dir + "/tokenizer.model");
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(text_dir)) {
    if (e.path().extension() == ".txt") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::vector<int>> docs;
  for (const auto& f : files) docs.push_back(tok->encode(slurp(f), true));
  return docs;
}

TEST(Calibrate, Gutenberg23MOnCalibrationBooks) {
  const std::string dir = test::shared_dir() + "/models/gutenberg-23m";
  const std::string text_dir = test::shared_dir() + "/text/calib";
  if (!std::filesystem::exists(dir + "/config.json") || !std::filesystem::exists(text_dir)) {
    GTEST_SKIP() << "gutenberg-23m or text/calib not found under " << test::shared_dir();
  }
  Model model(load_hf_weights(dir));
  const auto docs = calibration_documents(dir, text_dir);
  CalibrateOptions opt;  // the default M=64 nbits=8 (4 bits/element), fewer samples to keep the test short
  opt.samples = 4096;
  opt.ctx = 1024;
  CalibrateReport rep;
  const CodebookSet set = calibrate(model, model_fingerprint(dir, model.config()), docs, opt, &rep);
  EXPECT_EQ(set.entries.size(), 32u);
  // The 4-bit default shape (M=64, dsub 2, 256 centroids) on real head_dim-128 vectors.
  {
    CaptureOptions copt;
    copt.train_samples = 2000;
    KVCapture cap(model.cache_shape(1024), copt);
    std::vector<int> window(docs[0].begin(), docs[0].begin() + 1024);
    model.prefill(window, cap, nullptr);
    for (CaptureKind kind : {CaptureKind::kKey, CaptureKind::kValue}) {
      const Reservoir& r = cap.train(3, 0, kind);
      check_levels_on(set.get(3, 0, kind == CaptureKind::kKey ? KVKind::kKey : KVKind::kValue), r,
                      std::string("gutenberg-23m layer 3 ") + (kind == CaptureKind::kKey ? "K" : "V"));
    }
  }
  for (std::size_t l = 0; l < rep.layers.size(); ++l) {
    std::printf("layer %zu: held-out relative error K %.4f V %.4f\n", l, rep.layers[l].k, rep.layers[l].v);
    EXPECT_LT(rep.layers[l].k, 0.35) << "layer " << l;
    EXPECT_LT(rep.layers[l].v, 0.35) << "layer " << l;
  }
}

// What qpca is for (docs/pq-research.md): at 2 bits per element, the same model and tokens read
// through a qpca codebook's cache stay closer to the exact cache than through the Hadamard
// pq-norm codebook's. Stress mode (every position but the 4 sinks read coded) on the first 1024
// held-out tokens; measured 2-3x lower mean KLD at ctx 4096 (docs/results.md).
TEST(Calibrate, QueryPcaBeatsHadamardOnGutenberg23M) {
  const std::string dir = test::shared_dir() + "/models/gutenberg-23m";
  const std::string text_dir = test::shared_dir() + "/text/calib";
  const std::string heldout = dir + "/eval-tokens/heldout_eval.bin";
  if (!std::filesystem::exists(dir + "/config.json") || !std::filesystem::exists(text_dir) ||
      !std::filesystem::exists(heldout)) {
    GTEST_SKIP() << "gutenberg-23m, its eval tokens or text/calib not found under " << test::shared_dir();
  }
  Model model(load_hf_weights(dir));
  const auto docs = calibration_documents(dir, text_dir);
  const std::string raw = slurp(heldout);
  const int n = 1024;
  ASSERT_GE(raw.size(), 2u * n);
  std::vector<int> tokens(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) tokens[i] = static_cast<unsigned char>(raw[2 * i]) | static_cast<unsigned char>(raw[2 * i + 1]) << 8;
  const ModelFingerprint fp = model_fingerprint(dir, model.config());
  const int V = model.config().vocab_size;
  auto run = [&](const std::string& spec, const std::string& cb) {
    auto cache = make_kv_cache(spec, model.cache_shape(n), {cb, &fp});
    std::vector<float> logits(static_cast<std::size_t>(n) * V);
    for (int p = 0; p < n; p += 64) model.forward(tokens.data() + p, 64, p, *cache, logits.data() + static_cast<std::size_t>(p) * V, true);
    return logits;
  };
  const std::vector<float> exact = run("f32", "");
  auto mean_kld = [&](const std::vector<float>& got) {
    double sum = 0.0;
    for (int t = 0; t < n; ++t) {
      const float* a = exact.data() + static_cast<std::size_t>(t) * V;
      const float* b = got.data() + static_cast<std::size_t>(t) * V;
      const double ma = *std::max_element(a, a + V), mb = *std::max_element(b, b + V);
      double za = 0.0, zb = 0.0;
      for (int i = 0; i < V; ++i) za += std::exp(a[i] - ma), zb += std::exp(b[i] - mb);
      double kl = 0.0;
      for (int i = 0; i < V; ++i) {
        const double la = a[i] - ma - std::log(za), lb = b[i] - mb - std::log(zb);
        kl += std::exp(la) * (la - lb);
      }
      sum += kl;
    }
    return sum / n;
  };
  double kld[2];
  for (int variant = 0; variant < 2; ++variant) {
    CalibrateOptions opt;
    opt.k_config = opt.v_config = {32, 8};  // 2 bits per element
    opt.samples = 10240;  // 40 per centroid (FAISS warns under 39)
    opt.ctx = 1024;
    opt.rotation = variant == 0 ? RotationKind::kHadamard : RotationKind::kQueryPca;
    opt.k_norm = VectorNorm::kChannelGroup;
    opt.v_norm = VectorNorm::kToken;
    const std::string path = test::temp_dir() + (variant == 0 ? "/had.cb" : "/qpca.cb");
    save_codebooks(calibrate(model, fp, docs, opt, nullptr), path);
    kld[variant] = mean_kld(run("pq:window=0", path));
  }
  std::printf("gutenberg-23m, 1024 held-out tokens, stress mode, 2-bit: mean KLD hadamard %.5f, qpca %.5f\n", kld[0],
              kld[1]);
  EXPECT_LT(kld[1], 0.8 * kld[0]);
}

}  // namespace
}  // namespace million
