"""Jinja sources of the chat formats that ``--chat-template NAME`` selects.

Each template reproduces, for system/user/assistant messages, the text that
llama.cpp's own built-in formatter (``llm_chat_apply_template``) produces for
the format of the same name; they were written from that description, not
copied. Two names differ from llama.cpp on purpose:

- ``llama2`` is llama.cpp's ``llama2-sys``: the system prompt goes into a
  ``<<SYS>>`` block inside the first ``[INST]``, as Meta's format describes.
- ``mistral`` is llama.cpp's ``mistral-v3``: ``[INST] ...[/INST]`` with the
  system prompt prepended to the user text of its turn.

Like llama.cpp, none of them writes a leading BOS (the tokenizer adds it),
and ``llama2``, ``mistral`` and ``orion`` ignore ``add_generation_prompt``
because their prompts already end where the reply starts.

Formats whose role names come from the message (chatml, llama3, phi3, zephyr,
monarch) render a ``tool`` message like any other role. The rest have no slot
for tool results, so a ``tool`` message makes them raise instead of silently
dropping it.

Every tag uses ``-`` whitespace control, so the layout below never reaches the
prompt; only the quoted strings do.
"""

# Each template is a raw string so that Jinja, not Python, reads the `\n` escapes.

_CHATML = r"""
{%- for message in messages -%}
  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""

_LLAMA2 = r"""
{%- set ns = namespace(in_turn=true) -%}
{{- '[INST] ' -}}
{%- for message in messages -%}
  {%- if not ns.in_turn -%}
    {{- '[INST] ' -}}
    {%- set ns.in_turn = true -%}
  {%- endif -%}
  {%- if message.role == 'system' -%}
    {{- '<<SYS>>\n' + message.content + '\n<</SYS>>\n\n' -}}
  {%- elif message.role == 'user' -%}
    {{- message.content + ' [/INST]' -}}
  {%- elif message.role == 'assistant' -%}
    {{- message.content + '</s>' -}}
    {%- set ns.in_turn = false -%}
  {%- else -%}
    {{- raise_exception("the llama2 chat template has no '" + message.role + "' role") -}}
  {%- endif -%}
{%- endfor -%}
"""

_LLAMA3 = r"""
{%- for message in messages -%}
  {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n' -}}
  {{- (message.content | trim) + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
"""

_MISTRAL = r"""
{%- set ns = namespace(in_turn=false) -%}
{%- for message in messages -%}
  {%- if not ns.in_turn -%}
    {{- '[INST] ' -}}
    {%- set ns.in_turn = true -%}
  {%- endif -%}
  {%- if message.role == 'system' -%}
    {{- message.content + '\n\n' -}}
  {%- elif message.role == 'user' -%}
    {{- message.content + '[/INST]' -}}
  {%- elif message.role == 'assistant' -%}
    {{- ' ' + (message.content | trim) + '</s>' -}}
    {%- set ns.in_turn = false -%}
  {%- else -%}
    {{- raise_exception("the mistral chat template has no '" + message.role + "' role") -}}
  {%- endif -%}
{%- endfor -%}
"""

# Gemma has no system role: system text waits and opens the next user turn.
_GEMMA = r"""
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
  {%- if message.role == 'system' -%}
    {%- set ns.system = ns.system + (message.content | trim) -%}
  {%- elif message.role in ('user', 'assistant') -%}
    {%- set role = 'model' if message.role == 'assistant' else 'user' -%}
    {{- '<start_of_turn>' + role + '\n' -}}
    {%- if ns.system and role == 'user' -%}
      {{- ns.system + '\n\n' -}}
      {%- set ns.system = '' -%}
    {%- endif -%}
    {{- (message.content | trim) + '<end_of_turn>\n' -}}
  {%- else -%}
    {{- raise_exception("the gemma chat template has no '" + message.role + "' role") -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<start_of_turn>model\n' -}}
{%- endif -%}
"""

_PHI3 = r"""
{%- for message in messages -%}
  {{- '<|' + message.role + '|>\n' + message.content + '<|end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|assistant|>\n' -}}
{%- endif -%}
"""

_ZEPHYR = r"""
{%- for message in messages -%}
  {{- '<|' + message.role + '|>\n' + message.content + '<|endoftext|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|assistant|>\n' -}}
{%- endif -%}
"""

# AlphaMonarch repeats "<s>" before every turn but the first (the tokenizer
# supplies that one).
_MONARCH = r"""
{%- for message in messages -%}
  {%- if not loop.first -%}
    {{- '<s>' -}}
  {%- endif -%}
  {{- message.role + '\n' + message.content + '</s>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<s>assistant\n' -}}
{%- endif -%}
"""

_DEEPSEEK = r"""
{%- for message in messages -%}
  {%- if message.role == 'system' -%}
    {{- message.content -}}
  {%- elif message.role == 'user' -%}
    {{- '### Instruction:\n' + message.content + '\n' -}}
  {%- elif message.role == 'assistant' -%}
    {{- '### Response:\n' + message.content + '\n<|EOT|>\n' -}}
  {%- else -%}
    {{- raise_exception("the deepseek chat template has no '" + message.role + "' role") -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '### Response:\n' -}}
{%- endif -%}
"""

_COMMAND_R = r"""
{%- set tokens = {'system': '<|SYSTEM_TOKEN|>', 'user': '<|USER_TOKEN|>', 'assistant': '<|CHATBOT_TOKEN|>'} -%}
{%- for message in messages -%}
  {%- if message.role not in tokens -%}
    {{- raise_exception("the command-r chat template has no '" + message.role + "' role") -}}
  {%- endif -%}
  {{- '<|START_OF_TURN_TOKEN|>' + tokens[message.role] -}}
  {{- (message.content | trim) + '<|END_OF_TURN_TOKEN|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' -}}
{%- endif -%}
"""

_VICUNA = r"""
{%- for message in messages -%}
  {%- if message.role == 'system' -%}
    {{- message.content + '\n\n' -}}
  {%- elif message.role == 'user' -%}
    {{- 'USER: ' + message.content + '\n' -}}
  {%- elif message.role == 'assistant' -%}
    {{- 'ASSISTANT: ' + message.content + '</s>\n' -}}
  {%- else -%}
    {{- raise_exception("the vicuna chat template has no '" + message.role + "' role") -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- 'ASSISTANT:' -}}
{%- endif -%}
"""

# Orion has no system role either; its text opens the next human turn. Every
# human turn already ends with the assistant cue, so there is no generation prompt.
_ORION = r"""
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
  {%- if message.role == 'system' -%}
    {%- set ns.system = ns.system + message.content -%}
  {%- elif message.role == 'user' -%}
    {{- 'Human: ' -}}
    {%- if ns.system -%}
      {{- ns.system + '\n\n' -}}
      {%- set ns.system = '' -%}
    {%- endif -%}
    {{- message.content + '\n\nAssistant: </s>' -}}
  {%- elif message.role == 'assistant' -%}
    {{- message.content + '</s>' -}}
  {%- else -%}
    {{- raise_exception("the orion chat template has no '" + message.role + "' role") -}}
  {%- endif -%}
{%- endfor -%}
"""

_OPENCHAT = r"""
{%- for message in messages -%}
  {%- if message.role == 'system' -%}
    {{- message.content + '<|end_of_turn|>' -}}
  {%- elif message.role == 'user' -%}
    {{- 'GPT4 Correct User: ' + message.content + '<|end_of_turn|>' -}}
  {%- elif message.role == 'assistant' -%}
    {{- 'GPT4 Correct Assistant: ' + message.content + '<|end_of_turn|>' -}}
  {%- else -%}
    {{- raise_exception("the openchat chat template has no '" + message.role + "' role") -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- 'GPT4 Correct Assistant:' -}}
{%- endif -%}
"""

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": _CHATML,
    "llama2": _LLAMA2,
    "llama3": _LLAMA3,
    "mistral": _MISTRAL,
    "gemma": _GEMMA,
    "phi3": _PHI3,
    "zephyr": _ZEPHYR,
    "monarch": _MONARCH,
    "deepseek": _DEEPSEEK,
    "command-r": _COMMAND_R,
    "vicuna": _VICUNA,
    "orion": _ORION,
    "openchat": _OPENCHAT,
}
