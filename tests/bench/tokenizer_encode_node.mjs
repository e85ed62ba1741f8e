#!/usr/bin/env node
// Node.js side of the tokenizer encode benchmark: single-threaded encode throughput of
// @lenml/tokenizers 3.7.2 (a port of transformers.js) with the DeepSeek-V3 tokenizer.
//
//   node tests/bench/tokenizer_encode_node.mjs FILE [--repeat N] [--impl lenml|hf] [--ids-out PATH]
//
// FILE is read as UTF-8 (it must be valid UTF-8) and split into requests ("chunks") as follows;
// the C++ benchmark does the same:
//   split the bytes into lines, each keeping its trailing "\n" (the last one may lack it);
//   greedily append whole lines to the current chunk while the chunk stays <= 4096 bytes,
//   otherwise start a new chunk with that line (a line longer than 4096 bytes is a chunk alone).
// Each chunk is encoded by one call, whole, without special tokens added
// (add_special_tokens=false: no BOS), added-token strings in it recognised as usual.
//
// Timing: one untimed warm-up pass (which also gives the token count and checksum), then N timed
// passes (default 3); each pass times only the loop of encode calls over the pre-split chunks.
// MB/s = file bytes / 1e6 / median pass seconds.
//
// Output (stdout), first line machine-readable:
//   node_encode_mb_per_s <x> tokens <n>
//   detail impl <impl> version <v> bytes <b> chunks <c> repeats <N> pass_s <t1,t2,..> ids_fnv1a64 <hex>
// ids_fnv1a64: h = 0xcbf29ce484222325; for each id in file order: h = (h XOR id) * 0x100000001b3 mod 2^64.
//
// --impl hf uses Hugging Face's Rust tokenizers through its Node binding (npm tokenizers 0.23.2)
// instead, for reference; its first line reads `hf_napi_encode_mb_per_s <x> tokens <n>`. That
// binding's encode is asynchronous, so each call also pays a Promise round trip.
// --ids-out writes every id, in file order, as little-endian uint32.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const env = await import(pathToFileURL(path.join(here, "..", "engine", "tokenizer", "node_env.mjs")).href);

function usage(msg) {
  if (msg) console.error(msg);
  console.error("usage: tokenizer_encode_node.mjs FILE [--repeat N] [--impl lenml|hf] [--ids-out PATH]");
  process.exit(2);
}
const args = process.argv.slice(2);
let file = null;
let repeat = 3;
let impl = "lenml";
let idsOut = null;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "--repeat") repeat = Number(args[++i]);
  else if (a === "--impl") impl = args[++i];
  else if (a === "--ids-out") idsOut = args[++i];
  else if (a.startsWith("--")) usage(`unknown option ${a}`);
  else if (file === null) file = a;
  else usage("more than one FILE");
}
if (!file) usage();
if (!Number.isInteger(repeat) || repeat < 1) usage("--repeat must be a positive integer");
if (impl !== "lenml" && impl !== "hf") usage("--impl must be lenml or hf");

// ---------------------------------------------------------------------------------------------
const CHUNK_BYTES = 4096;
const bytes = fs.readFileSync(file);
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
decoder.decode(bytes); // throws on invalid UTF-8

const chunks = [];
{
  let start = 0; // current chunk start
  let pos = 0; // end of the lines taken so far
  while (pos < bytes.length) {
    let nl = bytes.indexOf(0x0a, pos);
    const lineEnd = nl < 0 ? bytes.length : nl + 1;
    if (lineEnd - start > CHUNK_BYTES && pos > start) {
      chunks.push(decoder.decode(bytes.subarray(start, pos)));
      start = pos;
    }
    pos = lineEnd;
  }
  if (pos > start) chunks.push(decoder.decode(bytes.subarray(start, pos)));
}

// ---------------------------------------------------------------------------------------------
let encodeAll; // () => Promise<number[][] | null>; returns ids when collect is true
let version;
if (impl === "lenml") {
  const { tokenizer } = await env.loadLenmlTokenizer();
  version = env.LENML_VERSION;
  encodeAll = async (collect) => {
    const out = collect ? [] : null;
    for (const c of chunks) {
      const ids = env.lenmlEncode(tokenizer, c);
      if (collect) out.push(ids);
    }
    return out;
  };
} else {
  const { tokenizer } = env.loadHfTokenizer();
  version = env.HF_TOKENIZERS_VERSION;
  encodeAll = async (collect) => {
    const out = collect ? [] : null;
    for (const c of chunks) {
      const enc = await tokenizer.encode(c, null, { addSpecialTokens: false });
      if (collect) out.push(Array.from(enc.getIds()));
    }
    return out;
  };
}

// Warm-up pass: also the token count and checksum.
const all = await encodeAll(true);
let tokens = 0;
let h = 0xcbf29ce484222325n;
const MASK = (1n << 64n) - 1n;
for (const ids of all) {
  tokens += ids.length;
  for (const id of ids) h = ((h ^ BigInt(id)) * 0x100000001b3n) & MASK;
}
if (idsOut) {
  const buf = Buffer.alloc(tokens * 4);
  let o = 0;
  for (const ids of all) for (const id of ids) o = buf.writeUInt32LE(id, o);
  fs.writeFileSync(idsOut, buf);
}

const passes = [];
for (let r = 0; r < repeat; r++) {
  const t0 = process.hrtime.bigint();
  await encodeAll(false);
  const t1 = process.hrtime.bigint();
  passes.push(Number(t1 - t0) / 1e9);
}
const sorted = [...passes].sort((a, b) => a - b);
const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
const mbps = bytes.length / 1e6 / median;

const key = impl === "lenml" ? "node_encode_mb_per_s" : "hf_napi_encode_mb_per_s";
console.log(`${key} ${mbps.toFixed(3)} tokens ${tokens}`);
console.log(
  `detail impl ${impl} version ${version} bytes ${bytes.length} chunks ${chunks.length} repeats ${repeat} ` +
    `pass_s ${passes.map((p) => p.toFixed(3)).join(",")} ids_fnv1a64 ${h.toString(16).padStart(16, "0")}`,
);
