#!/usr/bin/env node
// Hugging Face's ids for probe lines over the code points whose Unicode general category PCRE2's
// tables (Unicode 14.0) and HF's (Unicode 16.0) disagree on, for unicode_test.cc.
//
//   node tests/engine/tokenizer/make_unicode_goldens.mjs            # -> unicode_sweep_goldens.jsonl,
//                                                                   #    unicode_categories_hf.txt (~20 s)
//   node tests/engine/tokenizer/make_unicode_goldens.mjs --sweep build/dserve [--sweep other/dserve ...]
//
// A probe line holds up to 8 code points g (as a string cs) in several contexts:
//   "a" cs " 1" cs " x" (" " c for c in g) ("!" c for c in g) "\n"
// so that each code point follows a letter, a digit (\p{N}{1,3}), a space and punctuation, and
// its neighbours (runs of [\p{L}\p{M}]+ and [\p{P}\p{S}]+); the ids are HF's encode(line)
// without special tokens (tokenizers@0.23.2, the DeepSeek-V3 tokenizer.json).
//
// unicode_sweep_goldens.jsonl, one {"kind", "text", "ids"} per line, kinds in this order:
//   "changed"  every code point whose category differs between Python's unicodedata 14.0.0
//              (= PCRE2 10.42) and HF: the 10,301 assigned in Unicode 15.0-16.0 and U+1171E
//              (Mn -> Mc), 8 per line in code-point order
//   "icu_only" every 4th code point where Node's ICU (Unicode 17.0) and HF disagree: the 4,803
//              Unicode 17.0 additions (unassigned for HF and PCRE2) and U+0295 (Ll -> Lo in 17.0)
//   "control"  every 256th other code point of planes 0-3 and 14 (surrogates excepted)
// unicode_categories_hf.txt: HF's general category of every code point, as ranges in the style
// of the UCD's DerivedGeneralCategory.txt ("0041..005A    ; Lu"), for unicode_test.cc's check of
// every category escape at every code point.
// HF's categories are read through its binding, as gen_unicode_supplement.mjs does
// (node_env.mjs hfGeneralCategories), independently of unicode_supplement.inc.
//
// --sweep DSERVE: instead, encodes every code point of planes 0-3 and 14 (surrogates excepted;
// 40,704 lines of 8 consecutive code points) with HF and with `DSERVE tokenize --jsonl
// --no-special`, and prints how many lines differ and the code points of those lines. Writes
// nothing.
//
// Deterministic; installs tokenizers@0.23.2 into the cache on first use (node_env.mjs).

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  CODE_POINTS,
  GENERAL_CATEGORIES as GC,
  HF_TOKENIZERS_VERSION,
  hfGeneralCategories,
  icuGeneralCategories,
  jsonLine,
  loadHfTokenizer,
  pythonGeneralCategories,
} from "./node_env.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const outPath = path.join(here, "unicode_sweep_goldens.jsonl");
const categoriesPath = path.join(here, "unicode_categories_hf.txt");
const started = performance.now();
const hex = (c) => "U+" + c.toString(16).toUpperCase().padStart(4, "0");

export function probeLine(group) {
  const ch = (c) => String.fromCodePoint(c);
  const cs = group.map(ch).join("");
  return "a" + cs + " 1" + cs + " x" + group.map((c) => " " + ch(c)).join("") + group.map((c) => "!" + ch(c)).join("") + "\n";
}

const groupsOf8 = (cps) => {
  const out = [];
  for (let k = 0; k < cps.length; k += 8) out.push(cps.slice(k, k + 8));
  return out;
};

const { tokenizer: hf, files } = loadHfTokenizer();
async function hfIds(lines) {
  const out = [];
  for (let k = 0; k < lines.length; k += 1024) {
    const encs = await hf.encodeBatch(lines.slice(k, k + 1024), { addSpecialTokens: false });
    for (const e of encs) out.push(Array.from(e.getIds()));
  }
  return out;
}

// Planes 0-3 and 14, surrogates excepted.
const sweptCodePoints = [];
for (const [lo, hi] of [[0, 0x40000], [0xe0000, 0xf0000]]) {
  for (let c = lo; c < hi; c++) if (c < 0xd800 || c >= 0xe000) sweptCodePoints.push(c);
}

const sweeps = process.argv.flatMap((a, k) => (a === "--sweep" ? [process.argv[k + 1]] : []));
if (sweeps.length > 0) {
  const groups = groupsOf8(sweptCodePoints);
  const lines = groups.map(probeLine);
  const want = await hfIds(lines);
  const input = lines.map((l) => jsonLine(l) + "\n").join("");
  for (const bin of sweeps) {
    const out = execFileSync(bin, ["tokenize", "--model", files.dir, "--jsonl", "--no-special"], {
      input,
      maxBuffer: 1 << 30,
    })
      .toString("utf8")
      .split("\n")
      .filter((l) => l.length > 0);
    if (out.length !== lines.length) throw new Error(`${bin}: ${out.length} lines out for ${lines.length} in`);
    const differing = [];
    for (let k = 0; k < lines.length; k++) {
      if (out[k] !== JSON.stringify(want[k])) differing.push(groups[k]);
    }
    console.log(`${bin}: ${differing.length} of ${lines.length} probe lines differ from HF`);
    const show = differing.slice(0, 40).map((g) => `${hex(g[0])}-${hex(g[g.length - 1]).slice(2)}`);
    if (differing.length) console.log(`  lines starting ${show.join(" ")}${differing.length > 40 ? " ..." : ""}`);
  }
  process.stderr.write(`make_unicode_goldens --sweep: ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  process.exit(0);
}

const py = pythonGeneralCategories();
if (py.version !== "14.0.0") throw new Error(`/usr/bin/python3 has Unicode ${py.version}, expected 14.0.0 (PCRE2 10.42)`);
const icu = icuGeneralCategories();
const hfCat = hfGeneralCategories();
const changed = [];
const icuOnly = [];
for (let c = 0; c < CODE_POINTS; c++) {
  if (py.table[c] !== hfCat[c]) changed.push(c);
  else if (icu[c] !== hfCat[c]) icuOnly.push(c);
}
const icuSample = icuOnly.filter((_, k) => k % 4 === 0);
const special = new Set([...changed, ...icuOnly]);
const control = sweptCodePoints.filter((c) => !special.has(c)).filter((_, k) => k % 256 === 0);

const records = [];
let ids = 0;
for (const [kind, cps] of [["changed", changed], ["icu_only", icuSample], ["control", control]]) {
  const groups = groupsOf8(cps);
  const lines = groups.map(probeLine);
  const want = await hfIds(lines);
  for (let k = 0; k < lines.length; k++) {
    records.push(jsonLine({ kind, text: lines[k], ids: want[k] }));
    ids += want[k].length;
  }
  console.log(`${kind}: ${cps.length} code points in ${groups.length} lines`);
}
fs.writeFileSync(outPath, records.join("\n") + "\n");
console.log(`wrote ${path.relative(process.cwd(), outPath)}: ${records.length} lines, ${ids} ids`);
const catLines = [
  `# General category of every code point for Hugging Face tokenizers ${HF_TOKENIZERS_VERSION} (Oniguruma, Unicode 16.0),`,
  "# read through its Node binding (Split(\\p{Xx}) over all code points; surrogates are Cs).",
  "# Made by make_unicode_goldens.mjs. Ranges cover U+0000..U+10FFFF in order.",
];
for (let c = 0; c < CODE_POINTS; ) {
  let d = c;
  while (d + 1 < CODE_POINTS && hfCat[d + 1] === hfCat[c]) d++;
  const r = c === d ? hex(c).slice(2) : `${hex(c).slice(2)}..${hex(d).slice(2)}`;
  catLines.push(`${r.padEnd(15)}; ${GC[hfCat[c]]}`);
  c = d + 1;
}
fs.writeFileSync(categoriesPath, catLines.join("\n") + "\n");
console.log(`wrote ${path.relative(process.cwd(), categoriesPath)}: ${catLines.length - 3} ranges`);
const movedAssigned = changed.filter((c) => GC[py.table[c]] !== "Cn").map((c) => `${hex(c)} ${GC[py.table[c]]} -> ${GC[hfCat[c]]}`);
console.log(`  assigned in 14.0 and recategorised by HF: ${movedAssigned.join(", ") || "none"}`);
process.stderr.write(`make_unicode_goldens: ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
