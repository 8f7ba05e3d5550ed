// Bad input to the `spense` binary: every case must exit with code 2 and print one line on
// stderr that names the file at fault (and the tensor or field, where there is one).
// Broken checkpoints are made from the transformers fixtures in tests/fixtures/hf/ by
// rewriting them with SafetensorsWriter or by corrupting bytes.
#include <gtest/gtest.h>

#include "test_helpers.h"
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "spense/safetensors.h"

namespace fs = std::filesystem;
using namespace spense;

namespace {

const std::string kHf = std::string(SPENSE_FIXTURES) + "/hf";

using Result = test_util::CliResult;
using test_util::quote;
using test_util::slurp;
using test_util::spit;

const test_util::ScratchDir g_tmp("cli_errors");
const fs::path& tmp_root() { return g_tmp.path; }
Result run(const std::string& args) { return test_util::run_cli(args, tmp_root()); }

// A copy of a fixture model directory (config.json + weights), to be broken by the test.
fs::path copy_model(const std::string& name, const std::string& as) {
  const fs::path dst = tmp_root() / as;
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(kHf + "/" + name)) {
    const std::string fn = e.path().filename().string();
    if (fn == "config.json" || fn.rfind("model", 0) == 0) fs::copy_file(e.path(), dst / fn);
  }
  return dst;
}

// Rewrite <dir>/model.safetensors from a checkpoint, letting edit() drop (return false) or
// change tensors.
template <class Edit>
void rewrite(const fs::path& dir, Edit edit) {
  std::vector<uint8_t> keep;
  SafetensorsWriter w;
  {
    const Checkpoint ck = Checkpoint::open(dir.string());
    for (const auto& name : ck.names()) {
      const TensorRef t = ck.get(name);
      std::vector<int64_t> shape = t.info->shape;
      if (!edit(name, shape)) continue;
      w.add(name, t.info->dtype, shape, t.data, t.info->nbytes());
    }
  }
  w.write((dir / "model.safetensors").string());
}

void expect_one_line_error(const Result& r, const std::vector<std::string>& must_name) {
  EXPECT_EQ(r.code, 2) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line:\n" << r.err;
  for (const auto& s : must_name) EXPECT_NE(r.err.find(s), std::string::npos) << "'" << s << "' not in: " << r.err;
}

fs::path ids_file(const std::string& name, const std::string& text) {
  const fs::path p = tmp_root() / name;
  spit(p, text);
  return p;
}

TEST(CliErrors, MissingModelDirectory) {
  const std::string dir = (tmp_root() / "no_such_model").string();
  expect_one_line_error(run("inspect " + quote(dir)), {dir});
  const fs::path ids = ids_file("ids_ok.txt", "1 2 3");
  expect_one_line_error(run("logits --model " + quote(dir) + " --ids " + quote(ids.string()) + " --out x.safetensors"),
                        {dir});
}

TEST(CliErrors, MissingTensor) {
  const fs::path dir = copy_model("qwen3_tiny", "missing_tensor");
  rewrite(dir, [](const std::string& name, std::vector<int64_t>&) {
    return name != "model.layers.1.mlp.up_proj.weight";
  });
  expect_one_line_error(run("inspect " + quote(dir.string())), {dir.string(), "model.layers.1.mlp.up_proj.weight"});
  const fs::path ids = ids_file("ids_ok2.txt", "1 2 3");
  expect_one_line_error(
      run("logits --model " + quote(dir.string()) + " --ids " + quote(ids.string()) + " --out " +
          quote((tmp_root() / "never.safetensors").string())),
      {dir.string(), "model.layers.1.mlp.up_proj.weight"});
  EXPECT_FALSE(fs::exists(tmp_root() / "never.safetensors"));
}

TEST(CliErrors, WrongShape) {
  const fs::path dir = copy_model("qwen2_tiny", "wrong_shape");
  rewrite(dir, [](const std::string& name, std::vector<int64_t>& shape) {
    if (name == "model.layers.0.mlp.down_proj.weight") std::swap(shape[0], shape[1]);
    return true;
  });
  expect_one_line_error(run("inspect " + quote(dir.string())),
                        {(dir / "model.safetensors").string(), "model.layers.0.mlp.down_proj.weight", "[128,96]"});
}

TEST(CliErrors, UnsupportedModelType) {
  const fs::path dir = copy_model("llama_tiny", "gpt2_type");
  std::string cfg = slurp(dir / "config.json");
  const size_t at = cfg.find("\"llama\"");
  ASSERT_NE(at, std::string::npos);
  cfg.replace(at, 7, "\"gpt2\"");
  spit(dir / "config.json", cfg);
  expect_one_line_error(run("inspect " + quote(dir.string())), {(dir / "config.json").string(), "gpt2"});
}

TEST(CliErrors, TruncatedSafetensors) {
  const fs::path dir = copy_model("qwen3_tiny", "truncated");
  const fs::path f = dir / "model.safetensors";
  fs::resize_file(f, fs::file_size(f) - 1000);
  expect_one_line_error(run("inspect " + quote(dir.string())), {f.string()});
}

TEST(CliErrors, BadJsonHeader) {
  const fs::path dir = copy_model("qwen3_tiny", "bad_header");
  const fs::path f = dir / "model.safetensors";
  std::string bytes = slurp(f);
  bytes[8] = '[';  // the header must be a JSON object
  bytes[12] = '}';
  spit(f, bytes);
  expect_one_line_error(run("inspect " + quote(dir.string())), {f.string()});
}

TEST(CliErrors, ShardIndexNamesMissingShard) {
  const fs::path dir = copy_model("llama_tiny", "missing_shard");
  fs::remove(dir / "model-00002-of-00003.safetensors");
  expect_one_line_error(run("inspect " + quote(dir.string())), {"model-00002-of-00003.safetensors"});
}

TEST(CliErrors, PplTextFileProblems) {
  const std::string model = kHf + "/llama_tiny";
  const std::string missing = (tmp_root() / "no_such_text.txt").string();
  expect_one_line_error(run("ppl --model " + quote(model) + " --text " + quote(missing)), {missing});
  const fs::path empty = tmp_root() / "empty.txt";
  spit(empty, "");
  expect_one_line_error(run("ppl --model " + quote(model) + " --text " + quote(empty.string())),
                        {empty.string(), "empty"});
}

TEST(CliErrors, PplMissingTokenizer) {
  const fs::path text = tmp_root() / "some.txt";
  spit(text, "Some text that is long enough to matter.\n");
  const std::string model = kHf + "/llama_tiny";  // the fixtures have no tokenizer.json
  expect_one_line_error(run("ppl --model " + quote(model) + " --text " + quote(text.string())),
                        {model + "/tokenizer.json"});
}

TEST(CliErrors, LogitsBadIds) {
  const std::string model = kHf + "/qwen3_tiny";  // vocab 320
  const fs::path out = tmp_root() / "bad_ids_out.safetensors";
  for (const auto& [name, text, needle] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"ids_word.txt", "1 2 three 4", "three"},
           {"ids_float.txt", "1 2.5", "2.5"},
           {"ids_big.txt", "1 2\n320\n", "320"},
           {"ids_neg.txt", "-1", "-1"},
           {"ids_huge.txt", "99999999999999999999", "99999999999999999999"},
           {"ids_empty.txt", "  \n", "no token ids"}}) {
    const fs::path ids = ids_file(name, text);
    SCOPED_TRACE(name);
    expect_one_line_error(
        run("logits --model " + quote(model) + " --ids " + quote(ids.string()) + " --out " + quote(out.string())),
        {ids.string(), needle});
  }
  const std::string missing = (tmp_root() / "no_ids.txt").string();
  expect_one_line_error(
      run("logits --model " + quote(model) + " --ids " + quote(missing) + " --out " + quote(out.string())), {missing});
  EXPECT_FALSE(fs::exists(out));
}

TEST(CliErrors, BadFlagsExitTwo) {
  EXPECT_EQ(run("ppl --model").code, 2);
  EXPECT_EQ(run("inspect").code, 2);
  EXPECT_EQ(run("synth --arch gpt2 --out /tmp/x").code, 2);
  EXPECT_EQ(run("no-such-command").code, 2);
  EXPECT_EQ(run("ppl --model m --text t --seqlen abc").code, 2);
}

}  // namespace
