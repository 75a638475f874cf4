// Calibration end to end. stories260K (always available): calibrate on text the model itself
// samples (seeded), save, load, check the file matches the model and the result, that errors
// are reported per layer and are below the error of the trivial one-centroid quantizer, and
// that the same seed gives a byte-identical file. gutenberg-23m (skipped when absent):
// calibrate on ../shared/text/calib with reduced samples and check the held-out K/V errors.
#include <gtest/gtest.h>

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

TEST(Calibrate, Gutenberg23MOnCalibrationBooks) {
  const std::string dir = test::shared_dir() + "/models/gutenberg-23m";
  const std::string text_dir = test::shared_dir() + "/text/calib";
  if (!std::filesystem::exists(dir + "/config.json") || !std::filesystem::exists(text_dir)) {
    GTEST_SKIP() << "gutenberg-23m or text/calib not found under " << test::shared_dir();
  }
  Model model(load_hf_weights(dir));
  auto tok = load_sentencepiece_tokenizer(dir + "/tokenizer.model");
  std::vector<std::vector<int>> docs;
  for (const auto& e : std::filesystem::directory_iterator(text_dir)) {
    if (e.path().extension() == ".txt") docs.push_back(tok->encode(slurp(e.path().string()), true));
  }
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

}  // namespace
}  // namespace million
