#!/usr/bin/env node
// Reference tokenization with the independent JavaScript implementation @lenml/tokenizers
// (a fork of transformers.js), for the parity tests of spense::Tokenizer.
//
//   node tools/tokref/encode.mjs --refs .refs --tokenizer T.json [--config C.json] \
//        --in inputs.json --out out.json
//
// inputs.json: {"encode": [text, ...], "decode": [[token, ...], ...], "lookup": [id, ...]}
// (every key optional; "decode" lists name tokens, turned into ids here). out.json:
//   {"ids": [[id, ...], ...],        encode(text, {add_special_tokens: false}) of each text
//    "nfc": [text, ...],             text.normalize("NFC")
//    "decoded": [text, ...],         decode(ids) of each encoding (no clean-up of spaces)
//    "decode_ids": [[id, ...], ...], the ids of each "decode" token list
//    "decode": [text, ...],          decode of each of those id lists
//    "decode_skip": [text, ...],     the same with skip_special_tokens
//    "tokens": [[id, token|null, special], ...]   for each "lookup" id
//    "vocab_size": n}                the size of the model's id -> token table
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i];
    if (!key.startsWith("--") || i + 1 >= argv.length) {
      throw new Error(`bad argument ${JSON.stringify(key)}; usage: --refs DIR --tokenizer FILE [--config FILE] --in FILE --out FILE`);
    }
    args[key.slice(2)] = argv[i + 1];
  }
  for (const k of ["refs", "tokenizer", "in", "out"]) {
    if (!args[k]) throw new Error(`missing --${k}`);
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const entry = resolve(args.refs, "node_modules/@lenml/tokenizers/dist/main.mjs");
  let lib;
  try {
    lib = await import(pathToFileURL(entry).href);
  } catch (e) {
    throw new Error(`cannot load ${entry} (run scripts/fetch_refs.sh): ${e.message}`);
  }
  const tokenizerJSON = JSON.parse(readFileSync(args.tokenizer, "utf8"));
  const tokenizerConfig = args.config
    ? JSON.parse(readFileSync(args.config, "utf8"))
    : { tokenizer_class: "PreTrainedTokenizerFast", clean_up_tokenization_spaces: false };
  const tok = lib.TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });

  const input = JSON.parse(readFileSync(args.in, "utf8"));
  const dec = { skip_special_tokens: false, clean_up_tokenization_spaces: false };
  const decSkip = { skip_special_tokens: true, clean_up_tokenization_spaces: false };
  const out = { ids: [], nfc: [], decoded: [], decode_ids: [], decode: [], decode_skip: [], tokens: [] };
  for (const text of input.encode ?? []) {
    const ids = tok.encode(text, { add_special_tokens: false });
    out.ids.push(ids);
    out.nfc.push(text.normalize("NFC"));
    out.decoded.push(ids.length ? tok.decode(ids, dec) : "");
  }
  // decode() refuses an empty list; the empty text is what an empty list stands for.
  for (const tokens of input.decode ?? []) {
    const ids = tokens.map((t) => {
      const id = tok.model.tokens_to_ids.get(t);
      if (id === undefined) throw new Error(`no token ${JSON.stringify(t)} in the vocabulary`);
      return id;
    });
    out.decode_ids.push(ids);
    out.decode.push(ids.length ? tok.decode(ids, dec) : "");
    out.decode_skip.push(ids.length ? tok.decode(ids, decSkip) : "");
  }
  const vocab = tok.model.vocab;
  for (const id of input.lookup ?? []) {
    const token = vocab[id] ?? null;
    out.tokens.push([id, token, token !== null && tok.all_special_ids.includes(id)]);
  }
  out.vocab_size = vocab.length;
  writeFileSync(args.out, JSON.stringify(out));
}

main().catch((e) => {
  console.error(`tokref/encode.mjs: ${e.message}`);
  process.exit(1);
});
