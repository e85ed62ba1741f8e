#!/usr/bin/python3
"""Writes goldens.json: what Hugging Face's apply_chat_template renders for every real template in
../shared/testdata/templates on every conversation of conversations.json, plus interpreter
snippets (snippets.py) rendered the same way. chat_template_test.cc checks dserve against it.

Run with Debian's /usr/bin/python3 (jinja2 3.1.2; transformers is not needed):
    /usr/bin/python3 tests/engine/chat/make_goldens.py

The environment is configured as transformers' _compile_jinja_template does: an
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, the loopcontrols extension and a
{% generation %} tag, a tojson filter that keeps non-ASCII text, and the raise_exception and
strftime_now globals. strftime_now reads a fixed date so that the goldens are reproducible.
"""
import datetime
import json
import os
import sys

import jinja2
from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
TEMPLATES_DIR = os.path.join(REPO, "..", "shared", "testdata", "templates")
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, HERE)
from snippets import SNIPPETS  # noqa: E402

# strftime_now's clock in the goldens; the C++ test fixes the same instant (TZ=UTC).
FIXED_NOW = datetime.datetime(2024, 9, 5, 14, 30, 0)

DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
TEMPLATES = {
    "deepseek-ai-DeepSeek-V3": DEEPSEEK,
    "deepseek-ai-DeepSeek-V3.1": DEEPSEEK,
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": DEEPSEEK,
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": DEEPSEEK,
    # Qwen2.5's tokenizer_config has "bos_token": null, which apply_chat_template leaves out.
    "Qwen-Qwen2.5-7B-Instruct": {"eos_token": "<|im_end|>"},
    "meta-llama-Llama-3.1-8B-Instruct": {"bos_token": "<|begin_of_text|>",
                                         "eos_token": "<|eot_id|>"},
}


class GenerationTag(Extension):
    """transformers' {% generation %}...{% endgeneration %}: renders its body (the real one also
    records where assistant text lies, which does not change the output)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def outcome(render):
    try:
        return {"output": render()}
    except Exception as e:  # the goldens record what the template raised
        return {"error_type": type(e).__name__, "error": str(e)}


def render_chat(env, source, special_tokens, conv):
    def render():
        template = env.from_string(source)
        kwargs = {**special_tokens, **conv.get("kwargs", {})}
        return template.render(messages=conv["messages"], tools=conv.get("tools"),
                               documents=None,
                               add_generation_prompt=conv["add_generation_prompt"], **kwargs)
    return outcome(render)


def main():
    env = make_env()
    with open(os.path.join(HERE, "conversations.json"), encoding="utf-8") as f:
        conversations = json.load(f)["conversations"]
    cases = []
    for name, special_tokens in TEMPLATES.items():
        with open(os.path.join(TEMPLATES_DIR, name + ".jinja"), encoding="utf-8", newline="") as f:
            source = f.read()
        for conv in conversations:
            case = {"template": name, "conversation": conv["name"]}
            case.update(render_chat(env, source, special_tokens, conv))
            cases.append(case)
    snippets = []
    names = set()
    for snippet in SNIPPETS:
        assert snippet["name"] not in names, snippet["name"]
        names.add(snippet["name"])
        variables = snippet.get("vars", {})

        def render(snippet=snippet, variables=variables):
            template = env.from_string(snippet["template"])
            args = {"messages": [], "tools": None, "documents": None,
                    "add_generation_prompt": False}
            args.update(variables)
            return template.render(**args)
        entry = dict(snippet)
        entry.update(outcome(render))
        snippets.append(entry)
    goldens = {
        "generated_by": "tests/engine/chat/make_goldens.py",
        "jinja2_version": jinja2.__version__,
        "python_version": sys.version.split()[0],
        "fixed_now": FIXED_NOW.isoformat(),
        "templates": TEMPLATES,
        "cases": cases,
        "snippets": snippets,
    }
    with open(os.path.join(HERE, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(goldens, f, ensure_ascii=False, indent=1, allow_nan=False)
        f.write("\n")
    errors = sum(1 for c in cases if "error" in c)
    print(f"{len(cases)} template cases ({errors} raise), {len(snippets)} snippets")


if __name__ == "__main__":
    main()
