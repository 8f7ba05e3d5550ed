// spense synth: write a random-weight model of a real architecture's shapes (config.json in
// the transformers 5 spelling, BF16 model.safetensors, optionally a tokenizer.json), for
// examples, benchmarks and tests. Same seed, same shapes -> same bytes.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "spense/engine_plan.h"
#include "cli/util.h"
#include "spense/config.h"
#include "spense/error.h"
#include "spense/model.h"
#include "spense/tokenizer.h"

namespace spense::cli {
namespace {

struct SynthArgs {
  std::string arch = "qwen3", preset = "tiny", tokenizer, out;
  int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0,
          vocab = 0, max_position = 0;
  double rope_theta = 0;
  uint64_t seed = 0;
  bool untied = false;
  // which size flags were given (the rest come from the preset)
  CLI::Option *o_hidden, *o_layers, *o_heads, *o_kv, *o_hd, *o_inter, *o_vocab, *o_maxpos, *o_theta;
};

void run_synth(const SynthArgs& a) {
  ModelConfig c = model_preset(a.arch, a.preset);
  auto given = [](CLI::Option* o) { return o->count() > 0; };
  if (given(a.o_hidden)) c.hidden_size = a.hidden;
  if (given(a.o_layers)) c.num_layers = a.layers;
  if (given(a.o_heads)) c.num_heads = a.heads;
  if (given(a.o_kv)) c.num_kv_heads = a.kv_heads;
  else if (given(a.o_heads) && c.num_heads % c.num_kv_heads != 0) c.num_kv_heads = c.num_heads;
  if (given(a.o_hd)) c.head_dim = a.head_dim;
  else if (given(a.o_hidden) || given(a.o_heads)) {
    if (c.num_heads <= 0 || c.hidden_size % c.num_heads != 0)
      throw Error("--hidden " + std::to_string(c.hidden_size) + " is not divisible by --heads " +
                  std::to_string(c.num_heads) + "; give --head-dim");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (given(a.o_inter)) c.intermediate_size = a.intermediate;
  if (given(a.o_maxpos)) c.max_position_embeddings = a.max_position;
  if (given(a.o_theta)) c.rope.theta = a.rope_theta;
  if (a.untied) c.tie_word_embeddings = false;
  if (!a.tokenizer.empty()) {
    const Tokenizer tok = Tokenizer::load(a.tokenizer);
    const int64_t tv = tok.vocab_size();
    if (given(a.o_vocab)) {
      if (a.vocab < tv)
        throw Error(a.tokenizer + ": tokenizer has " + std::to_string(tv) + " ids, more than --vocab " +
                    std::to_string(a.vocab));
    } else if (c.vocab_size < tv) {
      c.vocab_size = (tv + 127) / 128 * 128;  // padded like real checkpoints
    }
  }
  if (given(a.o_vocab)) c.vocab_size = a.vocab;
  synth_write(c, a.seed, a.out, a.tokenizer);
  std::fprintf(stderr, "wrote %s: %s, %lld layers, hidden %lld, vocab %lld, seed %llu\n", a.out.c_str(),
               arch_name(c.arch), static_cast<long long>(c.num_layers), static_cast<long long>(c.hidden_size),
               static_cast<long long>(c.vocab_size), static_cast<unsigned long long>(a.seed));
}

}  // namespace

void register_synth(CLI::App& app) {
  auto a = std::make_shared<SynthArgs>();
  auto* sub = app.add_subcommand(
      "synth",
      "Write a random-weight model directory (config.json in the transformers 5 spelling, "
      "model.safetensors in BF16, tokenizer.json if --tokenizer is given) of a real "
      "architecture's shapes, for examples and benchmarks. Weights ~ N(0, 0.02), norm weights "
      "~ 1 + N(0, 0.02), seeded: the same flags give the same files. Size flags override the preset. "
      "Existing files in --out are replaced.");
  sub->add_option("--arch", a->arch, "Architecture: qwen3 (q/k norm), qwen2 (q/k/v bias) or llama")
      ->check(CLI::IsMember({"qwen3", "qwen2", "llama"}))
      ->default_val("qwen3");
  sub->add_option("--preset", a->preset,
                  "Starting shapes: tiny (hidden 64, 2 layers, 4/2 heads, head_dim 16, intermediate 192, "
                  "vocab 512), or the published shapes of qwen3-0.6b, qwen3-8b, qwen3-14b, qwen3-32b, "
                  "qwen2.5-0.5b (with --arch qwen2); others are refused with the list")
      ->default_val("tiny");
  a->o_hidden = sub->add_option("--hidden", a->hidden, "hidden_size (head_dim becomes hidden/heads unless --head-dim)");
  a->o_layers = sub->add_option("--layers", a->layers, "num_hidden_layers");
  a->o_heads = sub->add_option("--heads", a->heads, "num_attention_heads");
  a->o_kv = sub->add_option("--kv-heads", a->kv_heads, "num_key_value_heads (must divide --heads)");
  a->o_hd = sub->add_option("--head-dim", a->head_dim, "head_dim (even)");
  a->o_inter = sub->add_option("--intermediate", a->intermediate, "intermediate_size of the MLP");
  a->o_vocab = sub->add_option("--vocab", a->vocab,
                               "vocab_size (default: the preset's, raised to the tokenizer's size "
                               "rounded up to a multiple of 128 when --tokenizer needs more)");
  a->o_maxpos = sub->add_option("--max-position", a->max_position, "max_position_embeddings (context length)");
  a->o_theta = sub->add_option("--rope-theta", a->rope_theta, "RoPE base theta");
  sub->add_flag("--untied", a->untied, "Store a separate lm_head.weight instead of tying it to the embedding");
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer.json to copy into the model directory");
  sub->add_option("--seed", a->seed, "Random seed")->default_val(0);
  sub->add_option("--out", a->out, "Output model directory (created if missing)")->required();
  sub->callback([a] { run_synth(*a); });
}

}  // namespace spense::cli
