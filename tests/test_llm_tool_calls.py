"""OpenAI function calling in the LLM generator: tools offered, streamed ``tool_calls`` assembled into
``ToolRequest``s, the results sent back as ``tool`` messages, then the answer — against the stand-in speaking the
real wire format over HTTP, and the bundled local model (llama.cpp) offered a tool."""

from __future__ import annotations

import asyncio
import json

import pytest

from chatsite.local_llm import LocalLLM
from knowledge.answering import AnswerBackendError
from knowledge.answering.generators import ToolOffer, ToolRequest
from knowledge.answering.generators.openai import (
    MAX_TOOL_ROUNDS,
    SYSTEM_PROMPT,
    TOOLS_PROMPT,
    OpenAIChatGenerator,
    format_passages,
)
from knowledge.retrieval import Passage
from tests.llm_standin import LLMStandin

ORDER_TOOL = ToolOffer(
    name="order_status",
    description="Look up the status of the customer's order by its order number. Use for: where is my order?",
    parameters={
        "type": "object",
        "properties": {"order_number": {"type": "string", "pattern": "^\\d{5}$"}},
        "required": ["order_number"],
    },
)
REFUND_TOOL = ToolOffer(
    name="refund_status",
    description="Whether the refund of an order has been paid. Use for: has my refund been paid?",
    parameters={"type": "object", "properties": {"order_number": {"type": "string"}}, "required": ["order_number"]},
)
ORDER_CALL = {"name": "order_status", "arguments": '{"order_number": "10432"}'}
QUESTION = "Where is my order 10432?"
PASSAGES = [
    Passage(
        chunk_id=1, document_id=1, title="Tracking an order", source="tracking.md", heading="", page=None,
        text="Every order can be tracked from the Orders page.", language="en", snippet="", url="",
        vector_score=0.8, keyword_score=None, score=0.8, vector_rank=1, keyword_rank=None,
    )
]  # fmt: skip


@pytest.fixture
def llm(settings):
    with LLMStandin(reply="Track it from the Orders page [1].", tool_calls=[ORDER_CALL]) as standin:
        settings.LLM_MAX_RETRIES = 0
        settings.LLM_TEMPERATURE = 0.0
        yield standin


def generator_for(base_url: str, model: str = "standin-model", timeout: float = 5.0) -> OpenAIChatGenerator:
    return OpenAIChatGenerator(base_url=base_url, model=model, api_key="sk-test", timeout=timeout)


async def consume(generator: OpenAIChatGenerator, tools=(ORDER_TOOL,), results=None, question: str = QUESTION):
    """Text pieces and tool requests in the order they came; each request gets ``results(request)`` as its
    result before the next piece is asked for, as the pipeline does."""
    pieces: list[str | ToolRequest] = []
    async for piece in generator.stream(question, PASSAGES, [], tools):
        if isinstance(piece, ToolRequest) and results is not None:
            piece.result = results(piece)
        pieces.append(piece)
    return pieces


def found(request: ToolRequest) -> dict:
    return {"order": request.arguments.get("order_number"), "status": "shipped", "cite_as": 2}


def text_of(pieces: list) -> str:
    return "".join(p for p in pieces if isinstance(p, str))


def requests_of(pieces: list) -> list[ToolRequest]:
    return [p for p in pieces if isinstance(p, ToolRequest)]


# --- The request ---------------------------------------------------------------------------------------------
async def test_tools_are_offered_in_openai_format_with_the_tool_rules_in_the_prompt(llm):
    llm.tool_calls = []  # the model answers without calling anything
    pieces = await consume(generator_for(llm.base_url), tools=(ORDER_TOOL, REFUND_TOOL))

    request = llm.streamed_requests()[-1]
    assert request["tools"] == [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in (ORDER_TOOL, REFUND_TOOL)
    ]
    assert request["tool_choice"] == "auto"
    system = request["messages"][0]["content"]
    assert TOOLS_PROMPT in system and "never invent" in system.lower() and '"cite_as": n' in system
    assert system.index(TOOLS_PROMPT) < system.index("\nPassages:\n<passage id=")  # the passages, data, stay last
    assert text_of(pieces) == "Track it from the Orders page [1]." and not requests_of(pieces)


async def test_without_tools_the_request_is_the_plain_chat_request(llm):
    pieces = await consume(generator_for(llm.base_url), tools=())

    request = llm.streamed_requests()[-1]
    assert set(request) == {"model", "messages", "stream", "max_tokens", "temperature", "_authorization"}
    assert request["messages"][0]["content"] == SYSTEM_PROMPT.format(passages=format_passages(PASSAGES))
    assert "Tools:" not in request["messages"][0]["content"]
    assert text_of(pieces) == "Track it from the Orders page [1]." and len(llm.requests) == 1


# --- Streamed tool calls -------------------------------------------------------------------------------------
async def test_a_call_streamed_in_fragments_becomes_one_tool_request(llm):
    generator = generator_for(llm.base_url)
    stream = generator.stream(QUESTION, PASSAGES, [], (ORDER_TOOL,))
    request = await anext(stream)

    assert isinstance(request, ToolRequest)
    assert (request.call_id, request.name, request.arguments) == (
        "call_standin_0_0",
        "order_status",
        {"order_number": "10432"},
    )
    assert request.result is None
    assert len(llm.requests) == 1  # nothing is sent back until the consumer has the result
    await stream.aclose()


async def test_two_parallel_calls_become_two_requests_answered_in_order(llm):
    llm.tool_calls = [ORDER_CALL, {"name": "refund_status", "arguments": '{"order_number": "10433"}'}]
    llm.tool_reply = "Order {order} is {status} [2]."
    pieces = await consume(generator_for(llm.base_url), tools=(ORDER_TOOL, REFUND_TOOL), results=found)

    made = requests_of(pieces)
    assert [(r.call_id, r.name, r.arguments) for r in made] == [
        ("call_standin_0_0", "order_status", {"order_number": "10432"}),
        ("call_standin_0_1", "refund_status", {"order_number": "10433"}),
    ]
    follow_up = llm.streamed_requests()[1]["messages"]
    assert [m["tool_call_id"] for m in follow_up if m["role"] == "tool"] == ["call_standin_0_0", "call_standin_0_1"]
    assert text_of(pieces) == "Order 10433 is shipped [2]."  # the stand-in merged both results' fields


# --- The result goes back, the answer comes out --------------------------------------------------------------
async def test_follow_up_holds_the_assistant_tool_calls_and_the_tool_result_then_the_answer_streams(llm):
    llm.tool_preamble = "Let me check. "
    llm.tool_reply = "Your order {order} has {status} [{cite_as}]."
    pieces = await consume(generator_for(llm.base_url), results=found)

    first, follow_up = llm.streamed_requests()
    assert follow_up["messages"][: len(first["messages"])] == first["messages"]
    assistant, tool = follow_up["messages"][len(first["messages"]) :]
    assert assistant == {
        "role": "assistant",
        "content": "Let me check. ",
        "tool_calls": [
            {"id": "call_standin_0_0", "type": "function", "function": ORDER_CALL},
        ],
    }
    result = {"order": "10432", "status": "shipped", "cite_as": 2}
    assert tool == {"role": "tool", "tool_call_id": "call_standin_0_0", "content": json.dumps(result)}
    assert follow_up["tool_choice"] == "auto" and follow_up["tools"] == first["tools"]
    # The text before the call, the request, then the answer built from the tool result, streamed word by word.
    [at] = [i for i, piece in enumerate(pieces) if isinstance(piece, ToolRequest)]
    assert text_of(pieces[:at]) == "Let me check. "
    assert text_of(pieces) == "Let me check. Your order 10432 has shipped [2]." and len(pieces) > 5


async def test_a_request_left_without_result_is_answered_as_not_run(llm):
    llm.tool_reply = "I could not check: {error}"
    pieces = await consume(generator_for(llm.base_url), results=lambda request: None)

    tool = llm.streamed_requests()[1]["messages"][-1]
    assert json.loads(tool["content"]) == {"error": "The tool was not run."}
    assert text_of(pieces) == "I could not check: The tool was not run."


async def test_closing_the_stream_during_the_answer_after_a_call_closes_the_http_stream(llm):
    llm.tool_reply = " ".join(f"word{i}" for i in range(400))
    llm.token_delay = 0.01
    stream = generator_for(llm.base_url).stream(QUESTION, PASSAGES, [], (ORDER_TOOL,))
    request = await anext(stream)
    request.result = found(request)
    assert await asyncio.to_thread(llm.stream_finished.wait, 3)  # the tool call's stream, read to its end
    llm.stream_finished.clear()
    assert (await anext(stream)).startswith("word0")
    await stream.aclose()
    assert await asyncio.to_thread(llm.disconnected.wait, 3)
    assert not llm.stream_finished.is_set() and len(llm.streamed_requests()) == 2


# --- What the model gets wrong -------------------------------------------------------------------------------
@pytest.mark.parametrize("arguments", ['{"order_number": "10432"', '["10432"]', '"10432"'])
async def test_arguments_that_are_not_a_json_object_become_empty_and_echo_as_empty(llm, arguments):
    llm.tool_calls = [{"name": "order_status", "arguments": arguments}]
    pieces = await consume(generator_for(llm.base_url), results=lambda request: {"error": "order_number missing"})

    [request] = requests_of(pieces)
    assert (request.name, request.arguments) == ("order_status", {})
    assistant = llm.streamed_requests()[1]["messages"][-2]
    assert assistant["tool_calls"][0]["function"]["arguments"] == "{}"  # servers that parse it get valid JSON


async def test_a_stream_cut_in_the_middle_of_a_call_is_a_backend_error(llm):
    llm.cut_tool_call = True
    with pytest.raises(AnswerBackendError, match="ended in the middle of a tool call"):
        await consume(generator_for(llm.base_url), results=found)
    assert len(llm.requests) == 1


async def test_a_call_without_a_function_name_is_a_backend_error(llm):
    llm.tool_calls = [{"name": "", "arguments": '{"order_number": "10432"}'}]
    with pytest.raises(AnswerBackendError, match="without a function name"):
        await consume(generator_for(llm.base_url), results=found)
    assert len(llm.requests) == 1


async def test_a_model_that_keeps_asking_must_answer_after_the_last_round(llm):
    llm.tool_rounds = 99
    llm.tool_reply = "Your order has {status} [{cite_as}]."
    pieces = await consume(generator_for(llm.base_url), results=found)

    sent = llm.streamed_requests()
    assert len(sent) == MAX_TOOL_ROUNDS + 1 == 3
    assert [r["tool_choice"] for r in sent] == ["auto", "auto", "none"]
    assert len(requests_of(pieces)) == MAX_TOOL_ROUNDS
    assert [r.call_id for r in requests_of(pieces)] == ["call_standin_0_0", "call_standin_1_0"]
    assert text_of(pieces) == "Your order has shipped [2]."


# --- The bundled local model -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_llm(tmp_path_factory):
    with LocalLLM(log_path=tmp_path_factory.mktemp("llm") / "llama-server.log") as server:
        yield server


@pytest.mark.e2e
async def test_the_local_model_accepts_tools_and_answers(local_llm, settings):
    """SmolLM2-135M's chat template has no tool support, so llama.cpp leaves the tools out of its prompt; and the
    135M model, even shown them through a template that renders tools, answers in prose rather than calling one.
    What must hold is that offering tools (as the demo tools are, under `make run-llm`) breaks nothing: the
    request is accepted (llama.cpp builds without jinja templates refused ``tools``) and the answer streams."""
    settings.LLM_MAX_TOKENS = 24
    generator = generator_for(local_llm.base_url, model=local_llm.model, timeout=60.0)
    pieces = await consume(generator, results=found)

    assert text_of(pieces).strip()
