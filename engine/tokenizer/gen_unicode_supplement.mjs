#!/usr/bin/env node
// Writes unicode_supplement.inc beside this file: every code point whose Unicode general
// category differs between PCRE2's tables and Hugging Face's, as {first, last, old, new}
// ranges (kCategoryChanges, with the two versions; regex_translate.cc declares CategoryChange
// and includes the file). regex_translate.cc turns them into class members that it adds to (or, rarely,
// removes from) the \p{..} sets of a pre-tokenizer regex, so that PCRE2 matches what HF's
// Oniguruma matches.
//
//   node engine/tokenizer/gen_unicode_supplement.mjs      # about 15 s on one core
//
// Needs Node 20, Debian's /usr/bin/python3 and, on first use, npm: it installs the pinned HF
// `tokenizers` Node binding into the cache through tests/engine/tokenizer/node_env.mjs.
//
// Versions (checked on every run; the script stops when one is not what it expects):
//   old  = Unicode 14.0.0: Debian 12's PCRE2 10.42 (pcre2_config(PCRE2_CONFIG_UNICODE_VERSION);
//          unicode_test.cc checks it) and Debian's Python 3.11 unicodedata.unidata_version.
//          Read here from Python; PCRE2 10.42 and Python agree on the category of every code
//          point (checked once by matching \p{Xx} on PCRE2 for all 0x110000 code points).
//   new  = Unicode 16.0: HF tokenizers 0.23.2 (Rust, Oniguruma via the `onig` crate).
//   Node 20.20's ICU 78 knows Unicode 17.0.
//
// Method. There are no UCD 16 files here, so the Unicode 16 category of each code point is
// ICU's (JavaScript /\p{gc=Xx}/u) except where ICU and Hugging Face disagree. HF's own
// classification is read directly: a tokenizer whose pre-tokenizer is Split(Regex "\p{Xx}",
// Removed) runs over all code points for each of the 30 categories (node_env.mjs,
// hfGeneralCategories). The disagreements must all be code points that HF and Unicode 14 put
// in the same category (Unicode 17.0's 4,803 additions, unassigned for both, and U+0295,
// which 17.0 moved from Ll to Lo); for them the old category stands. The result equals HF's
// table at every code point. Unicode publishes how many characters each version added
// (15.0: 4,489, 15.1: 627, 16.0: 5,185, 17.0: 4,803); the number of code points unassigned in
// Unicode 14 and assigned for HF names HF's version, and must be one of those sums. The
// encoding probes of tests/engine/tokenizer/make_unicode_goldens.mjs (HF's ids on every code
// point assigned since 14.0) check the result end to end.
//
// Deterministic: the output depends only on the three tables; no clock, no locale.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  GENERAL_CATEGORIES as GC,
  CODE_POINTS,
  HF_TOKENIZERS_VERSION,
  hfGeneralCategories,
  icuGeneralCategories,
  pythonGeneralCategories,
} from "../../tests/engine/tokenizer/node_env.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const outPath = path.join(here, "unicode_supplement.inc");
const started = performance.now();
const hex = (c) => c.toString(16).toUpperCase().padStart(4, "0");
const Cn = GC.indexOf("Cn");

const OLD_VERSION = "14.0.0";
const py = pythonGeneralCategories();
if (py.version !== OLD_VERSION) {
  throw new Error(`/usr/bin/python3 has Unicode ${py.version}; this supplement is relative to ${OLD_VERSION} (PCRE2 10.42)`);
}
const old = py.table;
const icu = icuGeneralCategories();
const hf = hfGeneralCategories();

// Characters added by each version after 14.0 (unicode.org's release notes), cumulative.
const ADDED_SINCE_14 = [["15.0", 4489], ["15.1", 4489 + 627], ["16.0", 4489 + 627 + 5185], ["17.0", 4489 + 627 + 5185 + 4803]];

// ICU where it agrees with HF; elsewhere the old category, which must then be HF's.
const icuOnly = []; // [code point, old category, ICU category] where ICU and HF disagree
const uni = new Uint8Array(CODE_POINTS);
for (let c = 0; c < CODE_POINTS; c++) {
  if (icu[c] === hf[c]) {
    uni[c] = icu[c];
    continue;
  }
  if (old[c] !== hf[c]) {
    throw new Error(
      `U+${hex(c)}: ICU says ${GC[icu[c]]}, HF ${GC[hf[c]]}, Unicode ${OLD_VERSION} ${GC[old[c]]}: ` +
        "the method needs HF to keep the old category where ICU and HF disagree",
    );
  }
  uni[c] = old[c];
  icuOnly.push([c, old[c], icu[c]]);
}
let assignedSince14 = 0;
for (let c = 0; c < CODE_POINTS; c++) if (old[c] === Cn && uni[c] !== Cn) assignedSince14++;
const hfVersion = ADDED_SINCE_14.find(([, n]) => n === assignedSince14)?.[0];
if (!hfVersion) throw new Error(`${assignedSince14} code points assigned since ${OLD_VERSION}: matches no Unicode version`);
const icuAdded = icuOnly.filter(([, o]) => o === Cn).length;

// Ranges of consecutive code points with the same (old, new) pair.
const entries = [];
for (let c = 0; c < CODE_POINTS; c++) {
  if (old[c] === uni[c]) continue;
  const e = entries[entries.length - 1];
  if (e && e.last === c - 1 && e.from === old[c] && e.to === uni[c]) e.last = c;
  else entries.push({ first: c, last: c, from: old[c], to: uni[c] });
}

// What the translation adds to / removes from each major class and each category.
const classOf = (g) => GC[g][0];
const added = {};
const removed = {};
for (const e of entries) {
  const n = e.last - e.first + 1;
  for (const [key, a, b] of [[classOf(e.to), classOf(e.to), classOf(e.from)], [GC[e.to], GC[e.to], GC[e.from]]]) {
    if (a !== b) added[key] = (added[key] || 0) + n;
  }
  for (const [key, a, b] of [[classOf(e.from), classOf(e.from), classOf(e.to)], [GC[e.from], GC[e.from], GC[e.to]]]) {
    if (a !== b) removed[key] = (removed[key] || 0) + n;
  }
}
const changed = entries.filter((e) => e.from !== Cn);
const num = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
const fmtCounts = (m, keys) => keys.map((k) => `${k} ${num(m[k] || 0)}`).join(", ");
const majors = ["L", "M", "N", "P", "S", "Z", "C"];
const subs = GC.filter((g) => added[g] || removed[g]);
const cpRange = (a, b) => `U+${hex(a)}${b > a ? "-" + hex(b) : ""}`;

// A comment paragraph, wrapped at 100 columns; "~" is a space that does not break.
function comment(text) {
  const out = [];
  let line = "//";
  for (const word of text.split(" ")) {
    if (line.length + 1 + word.length > 100) {
      out.push(line);
      line = "//";
    }
    line += " " + word;
  }
  out.push(line);
  return out.map((l) => l.replaceAll("~", " "));
}

const icuChanged = icuOnly.filter(([, o]) => o !== Cn);
const lines = [
  "// Generated by engine/tokenizer/gen_unicode_supplement.mjs. Do not edit.",
  "//",
  ...comment(
    `Code points whose general category differs between Unicode ${OLD_VERSION} (PCRE2 10.42's tables; ` +
      `Python 3.11's unicodedata) and Unicode ${hfVersion} (Hugging Face tokenizers ${HF_TOKENIZERS_VERSION}, ` +
      `Oniguruma), as {first, last, Unicode ${OLD_VERSION} category, Unicode ${hfVersion} category}.`,
  ),
  "//",
  ...comment(
    `Method: the Unicode ${hfVersion} category is ICU's (Node ${process.versions.node}, ICU ` +
      `${process.versions.icu}, Unicode ${process.versions.unicode}) wherever ICU agrees with HF's ` +
      "Oniguruma, whose categories are read by running a Split(\\p{Xx}) pre-tokenizer over every code " +
      `point through HF's Node binding. ICU and HF disagree on ${num(icuOnly.length)} code points: ` +
      `${num(icuAdded)} that only ICU assigns (Unicode ${process.versions.unicode}'s additions) and ` +
      `${icuChanged.length} that Unicode ${process.versions.unicode} recategorised` +
      (icuChanged.length ? ` (${icuChanged.map(([c, o, i]) => `U+${hex(c)}~${GC[o]}~->~${GC[i]}`).join(", ")})` : "") +
      `. There HF keeps the Unicode ${OLD_VERSION} category, and so does this table.`,
  ),
  "//",
  ...comment(
    `${num(assignedSince14)} code points assigned since Unicode ${OLD_VERSION}. Assigned code points ` +
      `that changed category: ${changed.reduce((n, e) => n + e.last - e.first + 1, 0)}` +
      (changed.length ? ` (${changed.map((e) => `${cpRange(e.first, e.last)}~${GC[e.from]}~->~${GC[e.to]}`).join(", ")})` : "") +
      ".",
  ),
  `// Added to a major class:     ${fmtCounts(added, majors)}.`,
  `// Removed from a major class: ${fmtCounts(removed, majors)}.`,
  ...comment(`Per category, added/removed: ${subs.map((g) => `${g}~${added[g] || 0}/${removed[g] || 0}`).join(", ")}.`),
  "",
  `inline constexpr std::string_view kSupplementBaseVersion = "${OLD_VERSION}";`,
  `inline constexpr std::string_view kSupplementTargetVersion = "${hfVersion}";`,
  `// ${entries.length} ranges, ascending.`,
  "inline constexpr CategoryChange kCategoryChanges[] = {",
  ...entries.map((e) => `    {0x${hex(e.first)}, 0x${hex(e.last)}, "${GC[e.from]}", "${GC[e.to]}"},`),
  "};",
];
fs.writeFileSync(outPath, lines.join("\n") + "\n");

console.log(`wrote ${path.relative(process.cwd(), outPath)}: ${entries.length} ranges, ${assignedSince14} code points assigned in Unicode ${OLD_VERSION} -> ${hfVersion}`);
console.log(`  added to:     ${fmtCounts(added, majors)}`);
console.log(`  removed from: ${fmtCounts(removed, majors)}`);
console.log(`  per category (added/removed): ${subs.map((g) => `${g} ${added[g] || 0}/${removed[g] || 0}`).join(", ")}`);
console.log(`  ICU (Unicode ${process.versions.unicode}) vs HF: ${icuOnly.length} code points differ, ${icuAdded} of them assigned only by ICU`);
process.stderr.write(`gen_unicode_supplement: ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
