#!/usr/bin/env node
// Cross-checks the @lenml goldens against Hugging Face's Rust `tokenizers` (its official Node
// binding, npm `tokenizers@0.23.2`, prebuilt binaries inside the package) on the same
// tokenizer.json. This is what transformers' LlamaTokenizerFast runs underneath, so any
// difference printed here is a place where the @lenml goldens are NOT what HF produces.
//
//   node tests/engine/tokenizer/crosscheck_hf.mjs [--strict] [--sweep]
//
// --sweep also encodes, with both libraries, every code point of planes 0-3 and 14 (surrogates
// excepted) in four contexts ("x" c " y", " " c "1", "中" c "!", c alone) and prints the code-point
// ranges whose ids differ (about a minute per plane on one core).
//
// Prints every disagreement and a summary; --strict exits 1 when there is any. Also rewrites
// hf_divergences.jsonl beside this file: one line per goldens.jsonl entry whose ids differ,
//   {"text": str, "lenml_ids": [int], "hf_ids": [int], "hf_tokens": [str], "reason": str}
// where reason names the characters of the text that the two libraries classify differently
// (found by encoding each of the text's characters alone in a few contexts with both).
// so that a C++ test that follows HF can expect hf_ids for exactly those texts.
// Installs tokenizers@0.23.2 (~64 MB, all platforms' binaries) into the cache on first use.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { HF_TOKENIZERS_VERSION, jsonLine, lenmlEncode, loadHfTokenizer, loadLenmlTokenizer, readJsonl } from "./node_env.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const strict = process.argv.includes("--strict");
const sweep = process.argv.includes("--sweep");
const { tokenizer } = loadHfTokenizer();

const show = (s) => (s.length > 120 ? JSON.stringify(s.slice(0, 120)) + "..." : JSON.stringify(s));
const cps = (s) => [...s].map((c) => "U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")).join(" ");

const { tokenizer: lenml } = await loadLenmlTokenizer();
const hex = (c) => "U+" + c.toString(16).toUpperCase().padStart(4, "0");
const sameIds = (a, b) => a.length === b.length && a.every((v, k) => v === b[k]);

// Which characters of `text` make the libraries disagree, and why.
async function reasonFor(text) {
  const contexts = [["x", " y"], [" ", "1"], ["中", "!"], ["", ""], ["  ", "!"], ["", "\n"], [" ", "\n"], ["a", " b"]];
  const why = [];
  for (const c of new Set([...text].map((ch) => ch.codePointAt(0)))) {
    if (c < 0x80 && c !== 0x0b && c !== 0x0c) continue;
    let differs = false;
    for (const [p, q] of contexts) {
      const s = p + String.fromCodePoint(c) + q;
      const h = Array.from((await tokenizer.encode(s, null, { addSpecialTokens: false })).getIds());
      if (!sameIds(lenmlEncode(lenml, s), h)) differs = true;
    }
    if (!differs && c !== 0x85 && c !== 0xfeff) continue;
    if (c === 0x85) why.push(`${hex(c)} is whitespace for HF (Oniguruma \\s = Unicode White_Space), not for JavaScript \\s`);
    else if (c === 0xfeff) why.push(`${hex(c)} is whitespace for JavaScript \\s, not for HF (not White_Space)`);
    else
      why.push(
        `${hex(c)} is assigned in Node's Unicode ${process.versions.unicode} tables ` +
          `but not in HF's (Oniguruma's) older ones`,
      );
  }
  return why.length ? why.join("; ") : "unknown: no single character differs alone";
}

let encodeDiff = 0;
const divergences = [];
let decodeDiff = 0;
const goldens = readJsonl(path.join(here, "goldens.jsonl"));
for (const g of goldens) {
  const enc = await tokenizer.encode(g.text, null, { addSpecialTokens: false });
  const ids = Array.from(enc.getIds());
  if (JSON.stringify(ids) !== JSON.stringify(g.ids)) {
    encodeDiff++;
    const reason = await reasonFor(g.text);
    divergences.push(jsonLine({ text: g.text, lenml_ids: g.ids, hf_ids: ids, hf_tokens: enc.getTokens(), reason }));
    console.log(`ENCODE ${show(g.text)}${g.text.length <= 12 ? ` (${cps(g.text)})` : ""}`);
    console.log(`  lenml ${JSON.stringify(g.ids)}`);
    console.log(`  hf    ${JSON.stringify(ids)} ${JSON.stringify(enc.getTokens())}`);
  }
  if (g.ids.length > 0) {
    const dec = await tokenizer.decode(g.ids, false);
    if (dec !== g.decoded) {
      decodeDiff++;
      console.log(`DECODE ${JSON.stringify(g.ids)}: lenml ${show(g.decoded)} hf ${show(dec)}`);
    }
  }
}

fs.writeFileSync(path.join(here, "hf_divergences.jsonl"), divergences.map((l) => l + "\n").join(""));

let decode2Diff = 0;
const decodes = readJsonl(path.join(here, "decode_goldens.jsonl"));
for (const d of decodes) {
  const dec = await tokenizer.decode(d.ids, d.skip_special_tokens);
  if (dec !== d.decoded) {
    decode2Diff++;
    console.log(`DECODE(${d.kind}, skip=${d.skip_special_tokens}) ${JSON.stringify(d.ids)}: lenml ${show(d.decoded)} hf ${show(dec)}`);
  }
}

let sweepDiff = 0;
if (sweep) {
  const contexts = [["x", " y"], [" ", "1"], ["中", "!"], ["", ""]];
  const differing = [];
  const planes = [[0, 0x40000], [0xe0000, 0xf0000]];
  for (const [lo, hi] of planes) {
    for (let base = lo; base < hi; base += 1024) {
      const strs = [];
      const owner = [];
      for (let c = base; c < base + 1024; c++) {
        if (c >= 0xd800 && c < 0xe000) continue;
        for (const [p, q] of contexts) {
          strs.push(p + String.fromCodePoint(c) + q);
          owner.push(c);
        }
      }
      const hs = await tokenizer.encodeBatch(strs, { addSpecialTokens: false });
      for (let j = 0; j < strs.length; j++) {
        const a = lenmlEncode(lenml, strs[j]);
        const b = hs[j].getIds();
        if (!sameIds(a, b)) {
          if (differing[differing.length - 1] !== owner[j]) differing.push(owner[j]);
        }
      }
    }
  }
  sweepDiff = differing.length;
  const ranges = [];
  for (const c of differing) {
    if (ranges.length && ranges[ranges.length - 1][1] === c - 1) ranges[ranges.length - 1][1] = c;
    else ranges.push([c, c]);
  }
  console.log(`sweep: ${differing.length} code points differ in some context, in ${ranges.length} ranges:`);
  console.log("  " + ranges.map(([a, b]) => (a === b ? hex(a) : `${hex(a)}-${hex(b).slice(2)}`)).join(" "));
}

console.log(`node ${process.versions.node} (ICU ${process.versions.icu}, Unicode ${process.versions.unicode})`);
console.log(`hf tokenizers ${HF_TOKENIZERS_VERSION} vs goldens:`);
console.log(`  goldens.jsonl encode: ${goldens.length - encodeDiff}/${goldens.length} identical ids`);
console.log(`  goldens.jsonl decode: ${goldens.length - decodeDiff}/${goldens.length} identical strings`);
console.log(`  decode_goldens.jsonl: ${decodes.length - decode2Diff}/${decodes.length} identical strings`);
if (strict && encodeDiff + decodeDiff + decode2Diff + sweepDiff > 0) process.exit(1);
