// `million generate`: prompt in, text streamed to stdout; speeds, memory and logs to stderr.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <iostream>
#include <optional>
#include <iterator>
#include <sstream>

#include "common.h"
#include "core/mapped_file.h"
#include "core/memory.h"
#include "million/error.h"
#include "million/log.h"
#include "model/chat_template.h"
#include "model/generate.h"
#include "pq/calibrate.h"

namespace million::cli {

namespace {

struct GenerateArgs {
  std::string model = "models/stories260K/stories260K.bin";
  std::string tokenizer;
  std::string prompt;
  std::string prompt_file;
  int n_predict = 256;
  float temp = 0.0f;
  int top_k = 40;
  float top_p = 0.95f;
  std::uint64_t seed = 0;
  std::int64_t ctx = 0;
  int threads = 0;
  std::string kv = "f32";
  std::string kv_k, kv_v;
  std::string codebook;
  std::string weights = "native";
  std::string simd;
  int chunk = 512;
  bool truncate = false;
  bool quiet = false;
  bool chat = false;
  std::string system;
};

std::string read_prompt(const GenerateArgs& a) {
  if (!a.prompt_file.empty()) {
    if (a.prompt_file == "-") {
      std::ostringstream ss;
      ss << std::cin.rdbuf();
      return ss.str();
    }
    return read_text_file(a.prompt_file, "prompt file");
  }
  return a.prompt;
}

void run_generate(const GenerateArgs& a, int verbosity) {
  install_log_sink(a.quiet ? 0 : verbosity);
  apply_runtime_options(a.threads, a.simd);
  LoadedModel lm = load_model(a.model, a.tokenizer, true, a.weights);
  Model& model = *lm.model;
  const ModelConfig& cfg = model.config();
  const Tokenizer& tok = *lm.tokenizer;

  // --chat: wrap the prompt in the model's chat template; its end-of-turn token also stops.
  std::string text = read_prompt(a);
  std::vector<int> chat_stop;
  if (a.chat) {
    const std::string source = find_chat_template_source(a.model);
    if (source.empty()) {
      throw InvalidArgumentError(fmt::format("--chat: '{}' has no chat template (GGUF tokenizer.chat_template or "
                                             "tokenizer_config.json chat_template)", a.model));
    }
    const std::optional<ChatTemplate> t = parse_chat_template(source);
    if (!t) {
      throw UnsupportedError("--chat: the model's chat template is not one million knows (ChatML, Llama 3); "
                             "format the prompt yourself and drop --chat");
    }
    text = render_chat(*t, text, a.system);
    if (const std::vector<int> end = tok.encode(t->end_of_turn, false); end.size() == 1) chat_stop = end;
  } else if (!a.system.empty()) {
    throw InvalidArgumentError("--system needs --chat");
  }
  std::vector<int> prompt = tok.encode(text, /*add_bos=*/true);
  if (a.ctx < 0) throw InvalidArgumentError("--ctx must be positive");
  if (a.ctx > cfg.max_ctx) {
    throw ContextLimitError(fmt::format("--ctx {} is larger than the model's maximum context of {} tokens", a.ctx,
                                        cfg.max_ctx));
  }
  // Default context: what this run needs, capped at the model's maximum.
  const std::int64_t wanted = static_cast<std::int64_t>(prompt.size()) + std::max(a.n_predict - 1, 0);
  std::int64_t ctx = a.ctx > 0 ? a.ctx : std::min<std::int64_t>(wanted, cfg.max_ctx);
  if (wanted > ctx) {
    if (!a.truncate) {
      throw ContextLimitError(fmt::format(
          "the prompt ({} tokens) plus -n {} needs {} positions but the context is {} tokens ({}); shorten the "
          "prompt, lower -n, or pass --truncate to drop the oldest prompt tokens",
          prompt.size(), a.n_predict, wanted, ctx, a.ctx > 0 ? "--ctx" : "the model's maximum"));
    }
    const std::int64_t keep = ctx - std::max(a.n_predict - 1, 0) - 1;  // room for BOS
    if (keep < 1) throw ContextLimitError(fmt::format("-n {} alone does not fit in a context of {} tokens", a.n_predict, ctx));
    std::vector<int> cut{prompt.front()};
    cut.insert(cut.end(), prompt.end() - keep, prompt.end());
    log_warn("prompt truncated from {} to {} tokens to fit the context of {}", prompt.size(), cut.size(), ctx);
    prompt = std::move(cut);
  }

  const ModelFingerprint fingerprint = model_fingerprint(a.model, cfg);
  std::unique_ptr<KVCache> cache = make_kv_cache(a.kv_k.empty() ? a.kv : a.kv_k, a.kv_v.empty() ? a.kv : a.kv_v,
                                                 model.cache_shape(ctx), {a.codebook, &fingerprint});
  log_info("kv cache: {} ({:.1f} bits/element), {} for {} tokens; simd {}; {} threads", cache->name(),
           cache->bits_per_element(), format_bytes(cache->bytes_allocated()), ctx,
           simd_level_name(cache->simd_level()), a.threads > 0 ? a.threads : 0);

  GenerateOptions opt;
  opt.n_predict = a.n_predict;
  opt.sampler.temperature = a.temp;
  opt.sampler.top_k = a.top_k;
  opt.sampler.top_p = a.top_p;
  opt.sampler.seed = a.seed;
  opt.prefill_chunk = a.chunk;
  opt.stop_ids = cfg.eos_ids;
  opt.stop_ids.insert(opt.stop_ids.end(), chat_stop.begin(), chat_stop.end());

  // Echo the prompt, then stream the continuation.
  // (A tokenizer that adds no BOS, e.g. a GGUF with add_bos_token false, has its first token echoed too.)
  const std::size_t skip = prompt.front() == tok.bos_id() ? 1 : 0;
  TextStreamer streamer(tok, std::vector<int>(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(skip)));
  std::string echoed;
  for (std::size_t i = skip; i < prompt.size(); ++i) echoed += streamer.push(prompt[i]);
  if (!a.chat) std::fputs(echoed.c_str(), stdout);  // a chat prompt is not echoed: only the reply is printed
  std::fflush(stdout);
  GenerateStats st = generate(model, *cache, prompt, opt, [&](int id) {
    std::string piece = streamer.push(id);
    std::fputs(piece.c_str(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputs(streamer.flush().c_str(), stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  log_info("prompt: {} tokens in {:.3f} s ({:.1f} tok/s); generated: {} tokens in {:.3f} s ({:.1f} tok/s){}",
           st.prompt_tokens, st.prefill_seconds, st.prompt_tokens / std::max(st.prefill_seconds, 1e-9),
           st.generated_tokens, st.decode_seconds, st.generated_tokens / std::max(st.decode_seconds, 1e-9),
           st.stopped_by_token ? "; stopped at an end-of-sequence token" : "");
  log_info("kv memory: {} used of {} allocated", format_bytes(static_cast<std::int64_t>(
                                                      cache->bytes_per_token() * static_cast<double>(cache->n_tokens()))),
           format_bytes(cache->bytes_allocated()));
}

}  // namespace

void register_generate(CLI::App& app, int& verbosity) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt (streams to stdout; stats to stderr).");
  cmd->add_option("-m,--model", args->model,
                  "Model: a Hugging Face directory (config.json + safetensors), a .gguf file or a llama2.c .bin checkpoint")
      ->capture_default_str();
  cmd->add_option("--tokenizer", args->tokenizer,
                  "Tokenizer file (default: tokenizer.model or tokenizer.json in the model directory, or "
                  "tok512.bin beside a .bin)");
  auto* p = cmd->add_option("-p,--prompt", args->prompt, "Prompt text (empty: start from BOS alone)");
  cmd->add_option("-f,--prompt-file", args->prompt_file, "Read the prompt from a file ('-' for stdin)")->excludes(p);
  cmd->add_option("-n,--n-predict", args->n_predict, "Tokens to generate")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--temp", args->temp, "Sampling temperature; 0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", args->top_k, "Keep the k most likely tokens (0 = all)")->capture_default_str();
  cmd->add_option("--top-p", args->top_p, "Nucleus sampling threshold (1 = off)")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Random seed for sampling")->capture_default_str();
  cmd->add_option("-c,--ctx", args->ctx,
                  "Context size in tokens (default: prompt + n, up to the model's maximum); the KV cache is sized to it");
  cmd->add_flag("--truncate", args->truncate, "Drop the oldest prompt tokens if prompt + n exceeds the context");
  cmd->add_option("-t,--threads", args->threads, "Threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--kv", args->kv, "KV cache for keys and values: " + kv_cache_names())->capture_default_str();
  cmd->add_option("--kv-k", args->kv_k, "KV cache format for keys (overrides --kv)");
  cmd->add_option("--kv-v", args->kv_v, "KV cache format for values (overrides --kv)");
  cmd->add_option("--codebook", args->codebook, "Codebook file for --kv pq / pq-paper (from `million calibrate`)");
  cmd->add_option("--weights", args->weights,
                  "Weight matrices in memory: native (the file's dtype, read from the mapped file) or f32 (converted at load)")
      ->capture_default_str();
  cmd->add_option("--simd", args->simd, "Force a SIMD level: scalar, avx2, avx512 (default: best supported; env MILLION_SIMD)");
  cmd->add_option("--chunk", args->chunk, "Prompt tokens per forward pass during prefill")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_flag("--chat", args->chat,
                "Instruct models: wrap the prompt in the model's chat template (ChatML, Llama 3) and print only the reply");
  cmd->add_option("--system", args->system, "System message for --chat (default: the template's own, if any)");
  cmd->add_flag("-q,--quiet", args->quiet, "Only warnings and errors on stderr");
  cmd->add_flag("-v,--verbose", [&verbosity](std::int64_t n) { verbosity = 1 + static_cast<int>(n); }, "More logging (repeat for debug)");
  cmd->callback([args, &verbosity]() { run_generate(*args, verbosity); });
}

}  // namespace million::cli
