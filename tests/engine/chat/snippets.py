"""Small templates that pin down one behaviour of the interpreter each: make_goldens.py renders
them with Hugging Face's jinja2 environment, and chat_template_test.cc checks that dserve renders
the same text (or raises the same error). Variables are JSON values; "messages" is passed as the
messages input and the rest as chat_template_kwargs."""

S = []


def snip(name, template, **variables):
    entry = {"name": name, "template": template}
    if variables:
        entry["vars"] = variables
    S.append(entry)


# ---- whitespace control: trim_blocks, lstrip_blocks, -, + ---------------------------------------
snip("ws_trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter")
snip("ws_lstrip_blocks", "line\n    {% if true %}\n    indented\n    {% endif %}\nend")
snip("ws_lstrip_not_for_variables", "a\n    {{ 'x' }}\n    b")
snip("ws_lstrip_only_at_line_start", "text  {% if true %}X{% endif %}  more")
snip("ws_minus_left", "a   \n\n  {%- if true %}b{% endif %}")
snip("ws_minus_right", "{% if true -%}   \n\n  b{% endif %}")
snip("ws_minus_variable", "a  \n {{- 'b' -}} \n  c")
snip("ws_plus_disables_lstrip", "x\n    {%+ if true %}y{% endif %}")
snip("ws_plus_disables_trim", "{% if true +%}\nkept newline{% endif %}")
snip("ws_comment_lstrip_and_trim", "a\n   {# note #}\nb\n  {#- gone -#}  \n c")
snip("ws_comment_minus", "a {#- x -#} b")
snip("ws_trailing_newline_dropped", "text\n")
snip("ws_only_one_trailing_newline_dropped", "text\n\n")
snip("ws_crlf_normalized", "a\r\nb\rc{% if true %}\r\nd{% endif %}")
snip("ws_trim_after_comment_line", "{# c #}\n{% set x = 1 %}\n{{ x }}\n")
snip("ws_variable_end_no_trim", "{{ 'a' }}\nb")
snip("ws_tabs_lstrip", "x\n\t \t{% if true %}\n\ty\n\t{% endif %}\nz")
snip("ws_lstrip_after_trimmed_newline", "{% for i in [1, 2] %}\n  {% if i %}\n[{{ i }}]\n  {% endif %}\n{% endfor %}")
snip("ws_raw_block", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}!")
snip("ws_raw_minus", "a  {%- raw -%}  b  {%- endraw -%}  c")
snip("ws_nbsp_is_whitespace", "a\u00a0{%- if true %}b{% endif %}")
snip("ws_set_then_text", "{% set a = 1 %}  {% set b = 2 %}\n{{ a + b }}")
snip("ws_dash_number", "{{-1}}")

# ---- printing Python values ---------------------------------------------------------------------
snip("print_scalars", "{{ true }} {{ false }} {{ none }} {{ True }} {{ None }} {{ 42 }} {{ -7 }}")
snip("print_floats", "{{ 1.0 }} {{ 0.1 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 2.5e-7 }} "
     "{{ 123456789.123 }} {{ 1/3 }} {{ 10/2 }} {{ -0.0 }} {{ 1e300 * 1e10 }}")
snip("print_list_repr", "{{ [1, 'a', none, true, 2.5, [\"x\"], {'k': 'v'}] }}")
snip("print_tuple_repr", "{{ (1,) }} {{ (1, 2) }} {{ () }} {{ 1, 2 }}")
snip("print_dict_repr", "{{ {'a': 1, 'b': [true, none], 'c': {'d': 'e'}} }}")
snip("print_string_repr_quotes", "{{ [\"it's\", 'say \"x\"', 'both \\' \"', 'tab\\tnl\\n', 'back\\\\slash'] }}")
snip("print_string_repr_unicode", "{{ ['é', '中文', '😀', '\\x7f', '\\u00a0', '\\u200b', '\\u2028', '\\x85', '\\U000e0041'] }}")
snip("print_input_values", "{{ d }} {{ l }} {{ f }} {{ i }}", d={"x": [1, 2.0, "s"], "y": None},
     l=[True, False], f=3.14, i=12345678901234)
snip("print_namespace", "{% set ns = namespace(a=1, b='x') %}{{ ns }}")
snip("print_loop", "{% for x in 'ab' %}{{ loop }};{% endfor %}")
snip("print_undefined_in_list", "{{ [missing] }}")
snip("print_range", "{{ range(3) }} {{ range(1, 10, 2) }} {{ range(5)[1:3] }} {{ range(10)[::-2] }}")
snip("print_dict_views", "{{ d.items() }} {{ d.keys() }} {{ d.values() }}", d={"a": 1, "b": [2]})
snip("print_markup_repr", "{{ ['<b>'|e, 'x'|safe] }}")

# ---- literals and operators ---------------------------------------------------------------------
snip("string_escapes", "{{ 'a\\nb\\tc\\\\d\\'e\\\"f\\x41\\u00e9\\U0001F600\\101\\q' }}")
snip("string_literal_concat", "{{ 'a' \"b\" 'c' }}")
snip("string_literal_newline", "{{ 'line1\nline2' }}")
snip("int_literals", "{{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 00 }} {{ 1e3 }} {{ 1_0.5_0 }}")
snip("arith", "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} "
     "{{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}")
snip("arith_precedence", "{{ -2 ** 2 }} {{ 2 ** 3 ** 2 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 10 - 2 - 3 }}")
snip("arith_bool", "{{ true + true }} {{ true * 3 }} {{ 1 == 1.0 }} {{ true == 1 }}")
snip("concat_tilde", "{{ 1 ~ 'a' ~ none ~ true ~ missing ~ [1] }}")
snip("concat_precedence", "{{ 1 + 2 ~ 3 }} {{ 'a' ~ 2 * 3 }}")
snip("string_plus", "{{ 'a' + 'b' }} {{ [1] + [2, 3] }} {{ (1,) + (2,) }} {{ 'ab' * 3 }} {{ [0] * 2 }} {{ 3 * 'x' }} {{ 'x' * -1 }}")
snip("err_str_plus_int", "{{ 'a' + 1 }}")
snip("err_int_plus_str", "{{ 1 + 'a' }}")
snip("err_str_plus_list", "{{ 'a' + [1] }}")
snip("err_list_plus_str", "{{ [1] + 'a' }}")
snip("err_str_plus_none", "{{ 'a' + none }}")
snip("err_none_plus_str", "{{ none + 'a' }}")
snip("err_tuple_plus_list", "{{ (1,) + [2] }}")
snip("err_dict_plus_dict", "{{ {} + {} }}")
snip("err_minus_strings", "{{ 'a' - 'b' }}")
snip("err_mul_seq_by_str", "{{ 'a' * 'b' }}")
snip("err_mul_seq_by_float", "{{ [1] * 2.0 }}")
snip("err_div_zero", "{{ 1 / 0 }}")
snip("err_float_div_zero", "{{ 1.5 / 0 }}")
snip("err_floordiv_zero", "{{ 1 // 0 }}")
snip("err_mod_zero", "{{ 1 % 0 }}")
snip("err_unary_minus_str", "{{ -'a' }}")
snip("err_compare_str_int", "{{ 'a' < 1 }}")
snip("err_undefined_plus", "{{ missing + 1 }}")
snip("err_undefined_attr_plus", "{{ 'x' + d.nope }}", d={"a": 1})
snip("err_undefined_item_plus", "{{ 'x' + l[5] }}", l=[1])
snip("err_undefined_int_key", "{{ 'x' + d[0] }}", d={"a": 1})
snip("err_attr_of_undefined", "{{ missing.attr }}")
snip("err_item_of_undefined", "{{ missing['k'] }}")
snip("err_call_undefined", "{{ missing() }}")
snip("err_call_str", "{{ 'abc'() }}")
snip("comparisons", "{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' < 'b' }} {{ 'B' < 'a' }} {{ [1, 2] < [1, 3] }} "
     "{{ [1] < [1, 0] }} {{ 1 == 1 }} {{ 'a' != 'a' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ none == none }} "
     "{{ [1, 'a'] == [1, 'a'] }} {{ (1, 2) == [1, 2] }} {{ {'a': 1} == {'a': 1} }} {{ 'é' > 'z' }}")
snip("membership", "{{ 'a' in 'cat' }} {{ 'x' not in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} "
     "{{ 1 in {'k': 1} }} {{ 'a' in missing }} {{ [1] in [[1]] }} {{ 'role' in d }} {{ 'tool_calls' not in d }}",
     d={"role": "user"})
snip("err_in_int", "{{ 'a' in 5 }}")
snip("err_int_in_str", "{{ 1 in 'abc' }}")
snip("err_unhashable_in_dict", "{{ [1] in {'a': 1} }}")
snip("logic_truthiness", "{{ 0 or 'x' }} {{ '' or [] }} {{ 'a' and 'b' }} {{ 0 and 1 }} {{ not [] }} {{ not {} }} "
     "{{ not 0.0 }} {{ not missing }} {{ none or 'd' }} {{ [0] and 'ok' }} {{ {'a': 0} and 'ok' }}")
snip("logic_short_circuit", "{{ false and missing.attr }} {{ true or missing.attr }}")
snip("not_precedence", "{{ not 1 == 2 }} {{ not x is defined }} {{ not true and false }}", x=1)
snip("ternary", "{{ 'y' if 1 else 'n' }} {{ 'y' if 0 else 'n' }} {{ 'a' if false else 'b' if true else 'c' }}|{{ 'x' if false }}|")
snip("err_ternary_no_else_used", "{{ ('x' if false) + 'y' }}")

# ---- attribute and item lookup ------------------------------------------------------------------
snip("lookup_attr_vs_item", "{{ m.role }} {{ m['role'] }} {{ m.get('role') }} {{ m.get('nope', 'dflt') }} {{ m.get('nope') }}",
     m={"role": "user", "content": "hi"})
snip("lookup_missing_prints_empty", "[{{ m.nope }}][{{ m['nope'] }}][{{ l[9] }}][{{ s.nope }}][{{ n.x }}]",
     m={"a": 1}, l=[1], s="str", n=None)
snip("lookup_items_key_vs_method", "{{ m['items'] }} {{ m.items()|list }}", m={"items": "key wins for []"})
snip("lookup_nested", "{{ m.a.b[1].c }} {{ m['a']['b'][0] }} {{ m.a.b.0 }}", m={"a": {"b": [7, {"c": "deep"}]}})
snip("lookup_negative_index", "{{ l[-1] }} {{ l[-3] }} {{ 'abc'[-1] }} {{ '中文字'[1] }}", l=[1, 2, 3])
snip("slicing", "{{ l[1:] }} {{ l[:-1] }} {{ l[::2] }} {{ l[::-1] }} {{ l[-2:] }} {{ l[5:] }} {{ l[1:2:-1] }} "
     "{{ 'hello'[1:4] }} {{ 'hello'[::-1] }} {{ 'héllo'[1:3] }} {{ (1, 2, 3)[1:] }}", l=[0, 1, 2, 3, 4])
snip("err_slice_step_zero", "{{ [1][::0] }}")
snip("err_slice_of_dict", "[{{ d[1:] }}]", d={"a": 1})
snip("err_slice_of_none", "{{ none[1:] }}")
snip("err_slice_bad_bound", "{{ [1, 2]['a':] }}")
snip("err_slice_undefined_bound", "{{ [1, 2][missing:] }}")
snip("slice_bool_bounds", "{{ [1, 2, 3][true:] }}")
snip("lookup_dict_methods_attr", "{{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }}", d={"x": 1, "y": 2})
snip("lookup_unsafe_attr_prints_empty", "[{{ d.update }}][{{ d.pop }}][{{ l.append }}][{{ d.__class__ }}]", d={"a": 1}, l=[])
snip("err_unsafe_call", "{{ d.update({'b': 2}) }}", d={"a": 1})
snip("err_unsafe_list_call", "{{ l.append(1) }}", l=[])
snip("namespace_item_lookup", "{% set ns = namespace(k='v') %}{{ ns['k'] }} {{ ns.k }}")
snip("err_namespace_missing_attr", "{% set ns = namespace() %}{{ ns.nope + 1 }}")
snip("loop_attr_via_item", "{% for x in [1] %}{{ loop['index'] }}{% endfor %}")

# ---- statements and scoping ---------------------------------------------------------------------
snip("if_elif_else", "{% for v in [0, 1, 2, 3] %}{% if v == 1 %}one{% elif v == 2 %}two{% elif v == 3 %}three{% else %}zero{% endif %};{% endfor %}")
snip("for_loop_vars", "{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
     "{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.depth }}{{ loop.depth0 }}|{% endfor %}")
snip("for_prev_next", "{% for x in [1, 2, 3] %}[{{ loop.previtem }},{{ loop.nextitem }}]{% endfor %}")
snip("for_cycle_changed", "{% for x in [1, 1, 2, 2, 1] %}{{ loop.cycle('a', 'b', 'c') }}{{ loop.changed(x) }} {% endfor %}")
snip("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in [1] %}{{ x }}{% else %}no{% endfor %}")
snip("for_filter", "{% for x in range(10) if x is odd %}{{ x }}{{ '/' ~ loop.length if loop.last }}{% endfor %}")
snip("for_filter_else", "{% for x in [1, 3] if x is even %}{{ x }}{% else %}none even{% endfor %}")
snip("for_unpack_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", d={"a": 1, "b": [2]})
snip("for_unpack_items_filter", "{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %}", d={"z": 1, "a": 2})
snip("for_unpack_pairs", "{% for a, b in [[1, 2], 'xy', (3, 4)] %}{{ a }}{{ b }} {% endfor %}")
snip("err_unpack_too_many", "{% for a, b in [[1, 2, 3]] %}{% endfor %}")
snip("err_unpack_too_few", "{% for a, b in [[1]] %}{% endfor %}")
snip("err_unpack_int", "{% for a, b in [1] %}{% endfor %}")
snip("for_over_dict_string_undefined", "{% for k in d %}{{ k }}{% endfor %}|{% for c in 'héj' %}{{ c }}.{% endfor %}|{% for x in missing %}x{% endfor %}",
     d={"b": 1, "a": 2})
snip("err_for_over_none", "{% for x in none %}{% endfor %}")
snip("err_for_over_int", "{% for x in 42 %}{% endfor %}")
snip("for_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}")
snip("for_nested_loop_vars", "{% for a in [1, 2] %}{% set outer = loop %}{% for b in 'xy' %}{{ outer.index }}{{ loop.index }}{{ b }} {% endfor %}{% endfor %}")
snip("scope_set_in_loop_does_not_leak", "{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}")
snip("scope_set_in_loop_fresh_each_iteration", "{% for i in [1, 2] %}[{{ y }}]{% set y = i %}{{ y }}{% endfor %}[{{ y }}]")
snip("scope_set_in_if_leaks", "{% if true %}{% set x = 'set in if' %}{% endif %}{{ x }}")
snip("scope_loop_var_reassigned", "{% for m in [{'f': {'n': 'inner'}}] %}{% set m = m.f %}{{ m.n }}{% endfor %}")
snip("scope_override_context_var", "{% set messages = messages[1:] %}{{ messages|length }}", messages=[{"role": "a"}, {"role": "b"}])
snip("scope_undefined_context_default", "{% if not flag is defined %}{% set flag = false %}{% endif %}{{ flag }}")
snip("namespace_set_in_loop", "{% set ns = namespace(total=0, names=[]) %}{% for x in [1, 2, 3] %}{% set ns.total = ns.total + x %}"
     "{% set ns.names = ns.names + [x ~ ''] %}{% endfor %}{{ ns.total }} {{ ns.names }}")
snip("namespace_from_dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}")
snip("err_set_attr_non_namespace", "{% set d = {} %}{% set d.x = 1 %}")
snip("set_tuple_unpack", "{% set a, b = 1, 'two' %}{{ a }}{{ b }}")
snip("set_block", "{% set block %}Hello {{ 'World' }}!\n{% endset %}[{{ block }}]{{ block is string }}")
snip("set_block_filter", "{% set shout | upper | trim %}  quiet words  {% endset %}[{{ shout }}]")
snip("set_block_scoped", "{% set x = 'outer' %}{% set b %}{% set x = 'inner' %}{{ x }}{% endset %}{{ b }} {{ x }}")
snip("print_statement", "{% print 'a', 1 + 1 %}")
snip("generation_tag", "{% generation %}{% set g = 1 %}assistant text{% endgeneration %}[{{ g }}]")
snip("raise_exception_simple", "{{ raise_exception('Conversation roles must alternate user/assistant') }}")
snip("raise_exception_conditional", "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
     "{{ raise_exception('Unsupported role: ' + m.role) }}{% endif %}{{ m.role }}{% endfor %}",
     messages=[{"role": "user"}, {"role": "critic"}])
snip("strftime_now", "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S %A %j %%') }}|{{ strftime_now('%B %-d') }}")
snip("range_forms", "{{ range(3)|list }} {{ range(2, 5)|list }} {{ range(10, 0, -3)|list }} {{ range(0)|list }} {{ range(3)|length }}")
snip("dict_global", "{{ dict(a=1, b='x') }} {{ dict([('k', 'v')]) }}")
snip("undefined_semantics", "[{{ missing }}][{{ missing is defined }}][{{ missing is undefined }}][{{ missing|length }}]"
     "[{{ missing|list }}][{{ missing|default('d') }}][{{ missing == missing }}][{{ missing is none }}][{{ missing is iterable }}]")
snip("nested_undefined_attr_test", "{{ m.tool_calls is defined }} {{ m.tool_calls }} {{ not m.tool_calls }}", m={"role": "user"})

# ---- tests ----------------------------------------------------------------------------------------
snip("tests_types", "{{ none is none }} {{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 1 is integer }} "
     "{{ true is integer }} {{ 1.0 is float }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is mapping }} "
     "{{ true is boolean }} {{ 1 is boolean }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }}")
snip("tests_iterable_sequence", "{{ 'a' is iterable }} {{ 1 is iterable }} {{ {} is iterable }} {{ [] is sequence }} "
     "{{ {} is sequence }} {{ 'x' is sequence }} {{ 5 is sequence }} {{ d.keys() is sequence }} {{ (1,) is sequence }}",
     d={"a": 1})
snip("tests_comparisons", "{{ 1 is eq 1 }} {{ 1 is equalto 2 }} {{ 1 is ne 2 }} {{ 3 is gt 2 }} {{ 3 is ge 3 }} "
     "{{ 1 is lt 2 }} {{ 2 is le 1 }} {{ 3 is greaterthan 1 }} {{ 3 is lessthan 1 }} {{ 'a' is in 'abc' }} {{ 3 is in [1, 2] }}")
snip("tests_numbers", "{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 10 is divisibleby(3) }} {{ 3.0 is odd }}")
snip("tests_case", "{{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'Abc' is lower }} {{ '123' is lower }} {{ 'É' is upper }}")
snip("tests_misc", "{{ 'upper' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }} {{ range is callable }} "
     "{{ 1 is callable }} {{ 'x'|e is escaped }} {{ 'x' is escaped }} {{ none is sameas none }} {{ true is sameas true }}")
snip("tests_negated", "{{ 1 is not none }} {{ none is not none }} {{ x is not defined }} {{ 'a' is not string }}")
snip("tests_with_filters", "{{ [1, 2, 3]|select('odd')|list }} {{ [1, 2, 3]|reject('odd')|list }} {{ ['a', 1]|select('string')|list }}")
snip("err_test_odd_string", "{{ 'a' is odd }}")
snip("err_unknown_test", "{{ 1 is frobnicated }}")

# ---- filters ------------------------------------------------------------------------------------
snip("filter_trim", "[{{ '  a b \n'|trim }}][{{ 'xxaxx'|trim('x') }}][{{ '\u3000full\u3000'|trim }}][{{ 5|trim }}][{{ missing|trim }}]")
snip("filter_case", "{{ 'hello WORLD'|upper }} {{ 'HeLLo'|lower }} {{ 'hello world-foo(bar)'|title }} "
     "{{ 'hELLO wORLD'|capitalize }} {{ 'ß straße'|upper }} {{ 'ΣΑΣ ΟΔΟΣ'|lower }} {{ 'ǆemal'|title }} {{ none|upper }}")
snip("filter_string_methods_case", "{{ 'hello wORLD-foo'.title() }} {{ 'ßa'.capitalize() }} {{ 'İ'.lower()|length }} {{ 'ﬁne'.upper() }}")
snip("filter_length_count", "{{ [1, 2]|length }} {{ 'héllo'|length }} {{ {'a': 1}|count }} {{ ''|length }} {{ (1, 2, 3)|count }}")
snip("err_filter_length_none", "{{ none|length }}")
snip("filter_default", "{{ missing|default('d') }} {{ none|default('d') }} {{ ''|default('d', true) }} {{ 0|d('z', true) }} "
     "{{ 'v'|d('z') }} {{ missing|default }}|")
snip("filter_join", "{{ [1, 'a', none]|join(', ') }} {{ 'abc'|join('-') }} {{ [{'n': 'x'}, {'n': 'y'}]|join('+', attribute='n') }} "
     "{{ []|join(',') }} {{ ['a', 'b']|join }}")
snip("filter_first_last", "{{ [3, 4]|first }} {{ [3, 4]|last }} {{ 'xyz'|first }} {{ 'xyz'|last }} {{ {'k': 1, 'j': 2}|first }} "
     "[{{ []|first }}][{{ []|last }}]")
snip("err_filter_last_generator", "{{ [1, 2]|select|last }}")
snip("filter_list_items", "{{ 'ab'|list }} {{ {'a': 1}|list }} {{ (1, 2)|list }} {{ {'a': 1, 'b': 2}|items|list }} {{ missing|items|list }}")
snip("err_filter_items_non_mapping", "{{ 'abc'|items|list }}")
snip("filter_int_float", "{{ '42'|int }} {{ '4.9'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.99|int }} {{ -3.99|int }} {{ true|int }} "
     "{{ none|int }} {{ '0x1f'|int(0, 16) }} {{ ' 12 '|int }} {{ '1_000'|int }} {{ '3'|float }} {{ 'nan'|float }} "
     "{{ '-inf'|float }} {{ ' 2.5e3 '|float }} {{ 'abc'|float }} {{ 'abc'|float(1.5) }} {{ 7|float }} {{ none|float }}")
snip("err_filter_int_undefined", "{{ missing|int }}")
snip("filter_abs", "{{ -3|abs }} {{ (-3)|abs }} {{ -2.5|abs }} {{ true|abs }}")
snip("err_filter_abs_str", "{{ 'a'|abs }}")
snip("filter_replace", "{{ 'a-b-c'|replace('-', '+') }} {{ 'a-b-c'|replace('-', '', 1) }} {{ 'abc'|replace('', '.') }} {{ 5|replace('5', 'five') }}")
snip("filter_map", "{{ users|map(attribute='name')|list }} {{ users|map(attribute='age', default=0)|list }} "
     "{{ ['a', 'b']|map('upper')|join }} {{ [1, 2]|map('string')|list }} {{ users|map(attribute='address.city')|list }}",
     users=[{"name": "ann", "age": 3, "address": {"city": "Oslo"}}, {"name": "bo", "address": {"city": "Rome"}}])
snip("filter_map_missing_attr", "{{ [{'a': 1}, {}]|map(attribute='a')|list }}")
snip("filter_map_index_path", "{{ [[1, 2], [3, 4]]|map(attribute='1')|list }}")
snip("err_filter_map_no_args", "{{ [1]|map|list }}")
snip("filter_map_none_source", "{{ none|map('upper')|list }}")
snip("filter_selectattr", "{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} "
     "{{ ms|rejectattr('role', 'eq', 'user')|list|length }} {{ ms|selectattr('tool_calls')|list|length }} "
     "{{ ms|selectattr('tool_calls', 'defined')|list|length }}",
     ms=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "tool_calls": [1]},
         {"role": "user", "content": "c"}])
snip("filter_unique", "{{ ['a', 'A', 'b', 'a']|unique|list }} {{ ['a', 'A']|unique(case_sensitive=true)|list }} "
     "{{ [1, 1.0, true, 2]|unique|list }} {{ [{'n': 'x'}, {'n': 'X'}, {'n': 'y'}]|unique(attribute='n')|list }}")
snip("filter_reverse", "{{ 'abc'|reverse }} {{ [1, 2, 3]|reverse|list }} {{ {'a': 1, 'b': 2}|reverse|list }} {{ [1, 2]|select|reverse }}")
snip("filter_escape_safe", "{{ '<a href=\"x\">&\\'</a>'|e }} {{ '<b>'|escape }} {{ '<b>'|safe }} {{ ('<b>'|e) + '<i>' }} "
     "{{ '<i>' + ('<b>'|safe) }} {{ ('<b>'|safe) ~ '<i>' }} {{ ('<'|e)|e }} {{ '<'|forceescape }} {{ 5|e }}")
snip("filter_string", "{{ 5|string + '!' }} {{ none|string }} {{ [1, 'a']|string }} {{ missing|string }}|")
snip("filter_indent", "{{ 'a\nb\n\nc'|indent }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(2, blank=true) }}|"
     "{{ 'x\ny'|indent('> ') }}|{{ ''|indent(first=true) }}|{{ 'a\r\nb\x0bc'|indent(1) }}")
snip("err_filter_indent_int", "{{ 5|indent }}")
snip("filter_attr", "{{ d|attr('a') }} [{{ d|attr('zz') }}] {{ d|attr('items') is callable }}", d={"a": 1})
snip("filter_chained", "{{ '  Hello  '|trim|lower|replace('l', 'L')|length }}")
snip("filter_precedence", "{{ 'a' + 'b'|upper }} {{ -1|abs }} {{ ('a' + 'b')|upper }} {{ 1 + [1, 2]|length }}")
snip("err_unknown_filter", "{{ 1|frobnicate }}")
snip("unknown_filter_in_if_not_evaluated", "{% if false %}{{ 1|frobnicate }}{% endif %}ok")
snip("err_unknown_filter_in_if_evaluated", "{% if true %}{{ 1|frobnicate }}{% endif %}")

# ---- tojson (Hugging Face's) ----------------------------------------------------------------------
snip("tojson_basic", "{{ d|tojson }}", d={"b": 1, "a": [1.5, None, True, "é\"\\\n\t\u2028\x7f\x01"], "c": {}})
snip("tojson_indent", "{{ d|tojson(indent=4) }}", d={"name": "f", "parameters": {"type": "object", "properties": {}, "required": ["x"]}, "list": [1, [2, []]]})
snip("tojson_indent_string_and_zero", "{{ [1, {'a': 2}]|tojson(indent='\t') }}|{{ [1]|tojson(indent=0) }}")
snip("tojson_options", "{{ d|tojson(separators=(',', ':'), sort_keys=true) }} {{ 'é😀'|tojson(ensure_ascii=true) }} {{ d|tojson(sort_keys=true, indent=1) }}",
     d={"b": [1, 2], "a": "x", "B": None})
snip("tojson_scalars", "{{ 'str'|tojson }} {{ 1|tojson }} {{ 2.50|tojson }} {{ none|tojson }} {{ true|tojson }} {{ (1, 'a')|tojson }} {{ 1e20|tojson }}")
snip("err_tojson_undefined", "{{ missing|tojson }}")
snip("err_tojson_namespace", "{{ namespace(a=1)|tojson }}")
snip("tojson_input_floats", "{{ f|tojson }} {{ f }}", f=[0.1, 1e-07, 123456789012345678.0, 2.0, -0.0])

# ---- string methods ------------------------------------------------------------------------------
snip("str_split", "{{ 'a,b,,c'.split(',') }} {{ '  a  b c '.split() }} {{ 'a b c'.split(none, 1) }} {{ 'a,b,c'.split(',', 1) }} "
     "{{ 'a</think>b</think>c'.split('</think>')[-1] }} {{ 'x'.split('</think>', 1) }} {{ ''.split() }} {{ ''.split(',') }}")
snip("str_rsplit", "{{ 'a,b,c'.rsplit(',', 1) }} {{ '  a  b c '.rsplit(none, 1) }} {{ 'a b'.rsplit() }}")
snip("err_str_split_empty_sep", "{{ 'a'.split('') }}")
snip("str_strip", "[{{ '  x  '.strip() }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}][{{ 'xxhixx'.strip('x') }}][{{ '\n\tx\u2003'.strip() }}][{{ 'abcba'.strip('ab') }}]")
snip("str_startswith_endswith", "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith(('x', 'h')) }} "
     "{{ 'hello'.startswith('l', 2) }} {{ 'hello'.endswith('l', 0, 4) }} {{ 'héllo'.endswith('llo') }} {{ ''.startswith('') }}")
snip("str_replace_find_count", "{{ 'aaa'.replace('a', 'b', 2) }} {{ 'abc'.replace('', '-') }} {{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} "
     "{{ 'hello'.find('z') }} {{ 'héllo'.find('l') }} {{ 'aaaa'.count('aa') }} {{ 'abc'.count('') }} {{ 'hello'.find('l', 3) }} {{ 'hello'.index('e') }}")
snip("err_str_index_missing", "{{ 'abc'.index('z') }}")
snip("str_case_methods", "{{ 'Hello'.lower() }} {{ 'Hello'.upper() }} {{ 'hello world'.title() }} {{ 'hello World'.capitalize() }} {{ \"they're bill's\".title() }}")
snip("str_join_and_misc", "{{ ', '.join(['a', 'b']) }} {{ '-'.join('xyz') }} {{ 'a\nb\r\nc'.splitlines() }} {{ 'prefix-x'.removeprefix('prefix-') }} {{ 'x.txt'.removesuffix('.txt') }}")
snip("err_str_join_int", "{{ ','.join([1, 2]) }}")
snip("list_methods", "{{ [1, 2, 1].count(1) }} {{ ['a', 'b'].index('b') }} {{ (1, 2).index(2) }}")
snip("dict_get_default_types", "{{ d.get('a') }} {{ d.get('zz', [1]) }} {{ d.get(1) }}", d={"a": {"b": 1}})

# ---- messages as templates see them ---------------------------------------------------------------
snip("messages_content_parts", "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}"
     "{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}{% endif %}|{% endfor %}",
     messages=[{"role": "user", "content": "plain"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]}])
snip("messages_content_parts_printed", "{{ messages[0].content }}", messages=[{"role": "user", "content": [{"type": "text", "text": "x"}]}])
snip("messages_unicode_keys_values", "{% for k, v in messages[0]|items %}{{ k }}:{{ v }};{% endfor %}",
     messages=[{"role": "user", "content": "中文", "名字": "值"}])
snip("tools_loop_with_tojson", "{% for t in tools %}{{ t.function.name }}={{ t.function.parameters|tojson }}\n{% endfor %}",
     tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "查询"}}}}}])
snip("tools_none_checks", "{{ tools is none }} {{ tools is defined }} {{ documents is none }} {{ add_generation_prompt }}")

# ---- more lexer, generator and precedence corners ------------------------------------------------
snip("lex_nested_braces", "{{ {'a': {'b': [1, {'c': 2}]}} }}{{ {'x': 1}['x'] }}")
snip("lex_tag_ends_inside_strings", "{{ '}}' }}{{ \"%}\" }}{% if '%}' %}ok{% endif %}")
snip("lex_comment_with_tags", "a{# {{ x }} {% if %} #}b")
snip("lex_multiline_tag", "{{\n  'a'\n  ~ 'b'\n}}|{%\n if\n true\n%}c{% endif %}")
snip("lex_operators_without_spaces", "{{1+2*3-4//2}}{{'a'~'b'}}{{[1,2][0]}}{{(1)}}")
snip("lex_octal_and_null_escape", "{{ ['\\0', '\\12'] }}")
snip("generator_single_pass", "{% set g = [1, 2, 3]|select %}{{ g|list }}{{ g|list }}")
snip("generator_first_consumes", "{% set g = [1, 2, 3]|select %}{{ g|first }}{{ g|list }}")
snip("generator_truthy_even_empty", "{{ 'yes' if [0]|select else 'no' }} {{ 'yes' if [0]|select|list else 'no' }}")
snip("generator_in", "{{ 2 in [1, 2, 3]|select }} {{ 5 in [1]|map('int') }}")
snip("generator_loop", "{% for x in ['a', 'b']|map('upper') %}{{ loop.index }}{{ x }}{{ loop.last }} {% endfor %}")
snip("err_generator_len", "{{ [1]|select|length }}")
snip("err_generator_subscript", "{{ ([1]|select)[0] }}")
snip("dict_literal_duplicate_keys", "{{ {'a': 1, 'b': 2, 'a': 3} }}")
snip("not_in_precedence", "{{ not 'a' in 'abc' }} {{ 'a' not in 'abc' }} {{ not 'z' in 'abc' }}")
snip("filter_before_compare", "{{ [1, 2, 3]|length > 2 }} {{ 'abc'|upper == 'ABC' }} {{ -1|abs + 1 }}")
snip("is_test_binds_tight", "{{ 1 + 1 is odd }} {{ x is none or x == 1 }} {{ 'a' ~ 1 is number }}", x=1)
snip("ternary_in_filter_args", "{{ [1, 2]|join('x' if true else 'y') }}")
snip("call_kwargs_splat", "{{ 'a,b,c'.split(*[','], **{'maxsplit': 1}) }}")
snip("folded_slice_on_constant", "[{{ none[1:] }}][{{ 5[1:] is defined }}]")
snip("err_runtime_slice_on_none", "{{ n[1:] }}", n=None)
snip("messages_last_and_roles", "{{ messages[-1].role }} {{ messages|map(attribute='role')|join(',') }} {{ messages|selectattr('role', 'in', ['user', 'tool'])|list|length }}",
     messages=[{"role": "system"}, {"role": "user"}, {"role": "tool"}])
snip("loop_index_arith", "{% for m in messages %}{% if loop.index0 > 0 and messages[loop.index0 - 1].role == m.role %}dup{% endif %}{{ m.role }} {% endfor %}",
     messages=[{"role": "user"}, {"role": "user"}, {"role": "assistant"}])
snip("string_compare_unicode_order", "{{ ['b', 'a', 'B', 'é', 'z']|select('lt', 'c')|list }}")
snip("int_filter_bases", "{{ '0b11'|int(base=2) }} {{ 'ff'|int(base=16) }} {{ '0o17'|int(0, 0) }} {{ '010'|int(0, 0) }} {{ '12'|int(base=3) }}")
snip("float_filter_forms", "{{ '1_000.5'|float }} {{ '.5'|float }} {{ '5.'|float }} {{ '1e-3'|float }} {{ 'infinity'|float }} {{ '0x10'|float }} {{ '1__0'|float }}")
snip("items_of_dict_sorted_by_template", "{% for k, v in d|items if v > 1 %}{{ k }}{% endfor %}", d={"a": 1, "b": 2, "c": 3})
snip("nested_namespace_list_append", "{% set ns = namespace(xs=[]) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.xs = ns.xs + [m.content] %}{% endif %}{% endfor %}{{ ns.xs|join('|') }}",
     messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
snip("printing_in_loop_of_dicts", "{% for t in tools %}{{ t }}\n{% endfor %}", tools=[{"type": "function", "function": {"name": "x", "p": [1.5, None, True]}}])

# ---- jinja2's compile-time scoping (idtracking) ---------------------------------------------------
snip("scope_root_set_hides_variable_from_earlier_loop", "{% for m in [1] %}[{{ x }}]{% endfor %}{% set x = 1 %}{{ x }}", x=5)
snip("scope_root_read_before_set_sees_variable", "[{{ x }}]{% set x = 1 %}{{ x }}", x=5)
snip("scope_conditional_set_keeps_variable", "{% for m in [1] %}[{{ x }}]{% endfor %}{% if m %}{% set x = 1 %}{% endif %}", x=5)
snip("scope_if_else_set_keeps_variable", "{% for a in [1] %}{% for b in [1] %}[{{ x }}]{% endfor %}{% if a %}{% set x = 2 %}{% else %}{% set x = 4 %}{% endif %}{% endfor %}", x=5)
snip("scope_if_elif_else_set_hides_variable", "{% for a in [1] %}{% for b in [1] %}[{{ x }}]{% endfor %}{% if a %}{% set x = 2 %}{% elif b %}{% set x = 3 %}{% else %}{% set x = 4 %}{% endif %}{% endfor %}", x=5)
snip("scope_loop_frame_set_hides_variable", "{% for a in [1] %}{% for b in [1] %}[{{ x }}]{% endfor %}{% set x = 2 %}{% endfor %}", x=5)
snip("scope_loop_else_frame", "{% for a in [] %}{% else %}{% for b in [1] %}[{{ x }}]{% endfor %}{% set x = 1 %}{% endfor %}", x=5)
snip("scope_tuple_set_hides_variable", "{% for b in [1] %}[{{ x }}]{% endfor %}{% set x, y = 1, 2 %}", x=5)
snip("scope_set_block_reads_own_name", "{% set x %}{{ x }}b{% endset %}{{ x }}", x="a")
snip("scope_partial_if_in_loop", "{% for m in [1, 2] %}{% if m == 1 %}{% set x = 'a' %}{% endif %}[{{ x }}]{% endfor %}", x=5)
snip("scope_alias_of_root_value", "{% set x = 1 %}{% for m in [1, 2] %}{% if m == 2 %}{% set x = x + 10 %}{% endif %}[{{ x }}]{% endfor %}")
snip("scope_inner_loop_set_invisible", "{% for a in [1] %}{% for b in [1] %}{% set x = 2 %}{% endfor %}[{{ x }}]{% endfor %}", x=5)
snip("scope_namespace_set_is_load", "{% set ns = namespace(v=1) %}{% for a in [1] %}{% set ns.v = 2 %}{% endfor %}{{ ns.v }}")
snip("scope_generation_frame", "{% generation %}{% for b in [1] %}[{{ x }}]{% endfor %}{% set x = 1 %}{% endgeneration %}", x=5)

# ---- sort, dictsort, min, max, sum ----------------------------------------------------------------
snip("sort_basic", "{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'a', 'C']|sort }} {{ ['b', 'A', 'a']|sort(case_sensitive=true) }} "
     "{{ [3, 1, 2]|sort(reverse=true) }} {{ 'cab'|sort }} {{ {'b': 1, 'a': 2}|sort }} {{ [[2, 'a'], [1, 'b'], [1, 'a']]|sort }}")
snip("sort_stable_attribute", "{{ ms|sort(attribute='age')|map(attribute='n')|join }} {{ ms|sort(attribute='age', reverse=true)|map(attribute='n')|join }} "
     "{{ ms|sort(attribute='age,n')|map(attribute='n')|join }} {{ ms|sort(attribute='city.name')|map(attribute='n')|join }}",
     ms=[{"n": "a", "age": 3, "city": {"name": "Z"}}, {"n": "b", "age": 1, "city": {"name": "y"}},
         {"n": "c", "age": 3, "city": {"name": "x"}}, {"n": "d", "age": 1, "city": {"name": "W"}}])
snip("sort_floats_and_bools", "{{ [2.5, 1, true, 0.5, false]|sort }} {{ [1.0, 1, true]|sort }}")
snip("err_sort_mixed_types", "{{ [1, 'a', 2]|sort }}")
snip("err_sort_mixed_types_reverse", "{{ ['x', 2, none]|sort(reverse=true) }}")
snip("err_sort_dicts", "{{ [{'a': 1}, {'a': 0}]|sort }}")
snip("sort_equal_dicts_need_no_order", "{{ [{'a': 1}, {'a': 1}]|sort }}")
snip("sort_long_list", "{{ range(100)|reverse|sort|list == range(100)|list }} {{ (range(70)|list + range(70)|list)|sort(reverse=true)|first }}")
snip("sort_nan_small", "{{ [3.0, 'nan'|float, 1.0, 2.0]|sort }} {{ ['nan'|float, 2.0, 1.0]|sort }}")
snip("dictsort", "{{ d|dictsort }} {{ d|dictsort(by='value') }} {{ d|dictsort(reverse=true) }} {{ d|dictsort(true) }}",
     d={"b": 2, "A": 3, "a": 1})
snip("dictsort_loop", "{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %}", d={"z": {"x": 1}, "m": [1], "a": "s"})
snip("err_dictsort_by", "{{ {'a': 1}|dictsort(by='x') }}")
snip("err_dictsort_list", "{{ [1]|dictsort }}")
snip("min_max", "{{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ ['b', 'A', 'a']|min }} {{ ['b', 'A', 'a']|max }} "
     "{{ ['b', 'A', 'a']|max(case_sensitive=true) }} {{ ms|min(attribute='age') }} {{ ms|max(attribute='age') }} [{{ []|min }}]",
     ms=[{"n": "a", "age": 3}, {"n": "b", "age": 1}, {"n": "c", "age": 3}])
snip("err_max_mixed", "{{ [1, 'a']|max }}")
snip("sum", "{{ [1, 2, 3]|sum }} {{ [1.5, 2]|sum }} {{ ms|sum(attribute='age') }} {{ [[1], [2]]|sum(start=[]) }} {{ []|sum }} {{ [true, true]|sum }} {{ [0.1, 0.2, 0.3]|sum }}",
     ms=[{"age": 3}, {"age": 1}])
snip("err_sum_strings", "{{ ['a', 'b']|sum(start='') }}")
snip("err_sum_mixed", "{{ [1, 'a']|sum }}")

# ---- regressions found by differential fuzzing against jinja2 -------------------------------------
snip("err_indent_list", "{{ [1, 2]|indent }}")
snip("err_indent_tuple", "{{ (1, 2)|indent }}")
snip("err_str_find_int", "{{ 'abc'.find(1) }}")
snip("err_unique_tuple_with_dict", "{{ {'a': {'b': 1}}.items()|list|unique|list }}")
snip("err_markup_times_dict", "{{ 'x'|safe * {} }}")
snip("err_markup_times_list", "{{ 'x'|safe * [1] }}")
snip("err_str_times_markup", "{{ 'x' * 'y'|e }}")
snip("err_dict_times_markup", "{{ {} * 'y'|e }}")
snip("markup_times_int", "{{ '<'|safe * 2 }} {{ 2 * '<'|e }}")
snip("err_markup_plus_int", "{{ 'x'|safe + 1 }}")
snip("err_list_plus_markup", "{{ [1] + 'x'|safe }}")
snip("break_in_inner_for_else", "{% for a in [1, 2, 3] %}{{ a }}{% for b in [] %}{% else %}{% if a == 2 %}{% break %}{% endif %}{% endfor %}{% endfor %}")
snip("continue_in_set_block", "{% for a in [1, 2] %}{% set x %}{{ a }}{% continue %}{% endset %}[{{ x }}]{% endfor %}")
snip("err_str_mod_undefined_is_formatting", "{{ 1 % missing }}")
snip("namespace_private_attr_refused", "{% set ns = namespace(_p=1, q=2) %}[{{ ns._p }}][{{ ns.q }}][{{ ns['_p'] }}]")
snip("err_namespace_private_attr_used", "{% set ns = namespace(_p=1) %}{{ ns._p + 1 }}")

SNIPPETS = S
