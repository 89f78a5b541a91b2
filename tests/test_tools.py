"""The calculator, search/open and function tools, through the Tool protocol."""

from __future__ import annotations

import asyncio
import doctest
import enum
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import pytest

from agentmill.errors import UserError
from agentmill.rollout.configs import (
    CalculatorToolConfig,
    FunctionToolConfig,
    SearchToolConfig,
)
from agentmill.rollout.tools import Tool, ToolError, build_tools, calculator, function, search
from agentmill.rollout.tools.function import FunctionTool, tool_schema

ROOT = Path(__file__).resolve().parents[1]


def call(tool: Tool, **arguments: Any) -> str:
    return asyncio.run(tool.call(arguments))


def test_doctests_of_the_tool_modules() -> None:
    for module in (calculator, search, function):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# --- calculator -------------------------------------------------------------------------------

CALC = calculator.build(CalculatorToolConfig())[0]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("7 / 2", "3.5"),
        ("6 / 3", "2"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** 10", "1024"),
        ("2^10", "1024"),
        ("3 × 4 ÷ 6", "2"),
        ("5 − 8", "-3"),
        ("12 * 12 =", "144"),
        ("1,234 + 1", "1235"),
        ("1,000,000 / 8", "125000"),
        ("1,234.5 * 2", "2469"),
        ("max(1,234)", "234"),
        ("min(4, -2, 9)", "-2"),
        ("-(-3)", "3"),
        ("+4", "4"),
        ("sqrt(2)", "1.41421356237"),
        ("1 / 3", "0.333333333333"),
        ("0.1 + 0.2", "0.3"),
        ("2 * pi", "6.28318530718"),
        ("log(e)", "1"),
        ("ln(e ** 2)", "2"),
        ("log(8, 2)", "3"),
        ("log10(1000) + log2(8)", "6"),
        ("exp(0)", "1"),
        ("sin(0) + cos(0)", "1"),
        ("round(tan(pi / 4), 6)", "1"),
        ("atan(1) * 4", "3.14159265359"),
        ("abs(-3.5)", "3.5"),
        ("round(2.567, 2)", "2.57"),
        ("round(1234.5, -2)", "1200"),
        ("floor(-2.5) + ceil(2.1)", "0"),
        ("factorial(10)", "3628800"),
        ("comb(52, 5)", "2598960"),
        ("perm(5, 2)", "20"),
        ("math.sqrt(16)", "4"),
        ("2 ** -1", "0.5"),
        ("1.5e20", "1.5e+20"),
        ("123456789 * 987654321", "121932631112635269"),
    ],
)
def test_calculator_evaluates(expression: str, expected: str) -> None:
    assert call(CALC, expression=expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9**9**9", "more than 1000 digits"),
        ("10 ** 100000", "more than 1000 digits"),
        ("factorial(100000)", "more than 1000 digits"),
        ("factorial(10 ** 100)", "more than 1000 digits"),
        ("comb(10 ** 9, 5 * 10 ** 8)", "more than 1000 digits"),
        ("perm(10 ** 6)", "more than 1000 digits"),
        ("(2 ** 3000) * (2 ** 3000)", "more than 1000 digits"),
        ("2.0 ** 10000", "too large"),
        ("exp(1000)", "too large"),
        ("1e308 * 10", "not a finite number"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("sqrt(-1)", r"sqrt\(-1\): math domain error"),
        ("log(0)", "math domain error"),
        ("(-8) ** (1 / 3)", "complex"),
        ("factorial(-1)", "non-negative whole number"),
        ("factorial(2.5)", "non-negative whole number"),
        ("__import__('os').system('true')", "unknown function"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("x + 1", "unknown name 'x'"),
        ("'a' * 3", "only numbers"),
        ("1j", "only numbers"),
        ("True + 1", "only numbers"),
        ("[1, 2]", "unsupported syntax"),
        ("1 < 2", "unsupported syntax"),
        ("lambda: 1", "unsupported syntax"),
        ("(1).__class__", "unsupported syntax"),
        ("-" * 200 + "1", "nested deeper than 50"),
        ("(" * 300 + "1" + ")" * 300, "cannot parse"),
        ("1 +" * 400 + "1", "over 1000 characters"),
        ("2 +", "cannot parse"),
        ("", "empty"),
        ("min()", "needs at least one number"),
    ],
)
def test_calculator_refuses_with_a_clear_message(expression: str, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(ToolError, match=message):
        call(CALC, expression=expression)
    assert time.monotonic() - start < 0.5  # refused before any expensive work


def test_calculator_schema_and_bad_argument() -> None:
    function_schema = CALC.schema()["function"]
    assert function_schema["name"] == "calculator"
    assert function_schema["parameters"]["required"] == ["expression"]
    assert "sqrt" in function_schema["description"]
    with pytest.raises(ToolError, match="must be a string"):
        call(CALC, expression=42)


# --- search / open ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> tuple[Tool, Tool]:
    search_tool, open_tool = search.build(SearchToolConfig())
    return search_tool, open_tool


def test_bundled_corpus_is_well_formed() -> None:
    lines = search.bundled_corpus().read_text(encoding="utf-8").splitlines()
    records = [orjson.loads(line) for line in lines]
    assert len(records) >= 40 and len({r["id"] for r in records}) == len(records)
    assert all(80 <= len(r["text"].split()) <= 250 for r in records)
    titles = {r["title"] for r in records}
    linked = [r for r in records if any(t in r["text"] for t in titles - {r["title"]})]
    assert len(linked) >= 30  # most articles name another by title, for multi-hop questions


def test_search_ranks_the_relevant_article_first(bundled: tuple[Tool, Tool]) -> None:
    search_tool, _ = bundled
    text = call(search_tool, query="who invented the Voss turbine")
    first = text.splitlines()[0]
    assert first.startswith("[voss-turbine] Voss turbine — ") or first.startswith("[ada-voss]")
    assert len(text.splitlines()) == 5
    assert len(call(search_tool, query="lighthouse height", top_k=2).splitlines()) == 2


def test_search_snippet_shows_the_matching_passage(bundled: tuple[Tool, Tool]) -> None:
    search_tool, _ = bundled
    line = call(search_tool, query="electric street lights", top_k=1)
    assert "street lights" in line and len(line) < 400


def test_search_argument_errors(bundled: tuple[Tool, Tool]) -> None:
    search_tool, _ = bundled
    with pytest.raises(ToolError, match="non-empty"):
        call(search_tool, query="   ")
    with pytest.raises(ToolError, match="no document matches"):
        call(search_tool, query="the of and")
    with pytest.raises(ToolError, match="top_k"):
        call(search_tool, query="river", top_k=0)


def test_open_by_id_or_title_and_unknown_ids(bundled: tuple[Tool, Tool]) -> None:
    _, open_tool = bundled
    text = call(open_tool, id="orrin-dam")
    assert text.startswith("[orrin-dam] Orrin Dam\n\n") and "Voss turbines" in text
    assert call(open_tool, id="[Orrin Dam]") == text
    with pytest.raises(ToolError, match="close ids: orrin-dam"):
        call(open_tool, id="orin-dam")
    with pytest.raises(ToolError, match="id"):
        call(open_tool, id="")


def test_multi_hop_questions_are_answerable_from_the_corpus(bundled: tuple[Tool, Tool]) -> None:
    search_tool, open_tool = bundled
    lines = (ROOT / "examples" / "data" / "search_tasks.jsonl").read_text().splitlines()
    tasks = [orjson.loads(line) for line in lines]
    assert len(tasks) >= 12
    corpus = " ".join(call(open_tool, id=r["id"]) for r in map(orjson.loads, _corpus_lines()))
    derived = {"26": ["1871", "1897"]}  # answers computed from facts, not quoted
    for task in tasks:
        assert all(fact in corpus for fact in derived.get(task["answer"], [task["answer"]])), task
        assert call(search_tool, query=task["question"])  # every question finds something


def _corpus_lines() -> list[str]:
    return search.bundled_corpus().read_text(encoding="utf-8").splitlines()


def test_folder_corpus_ids_titles_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "setup.md").write_text(
        "# Setting up\n\nInstall the kettle. " * 1 + "x " * 400
    )
    (tmp_path / "notes.txt").write_text("Kettle notes\nA kettle boils water quickly.\n")
    (tmp_path / "ignored.json").write_text('{"not": "a document"}')
    cfg = SearchToolConfig(corpus=tmp_path, max_open_chars=100, name="find", open_name="read")
    search_tool, open_tool = search.build(cfg)
    assert (search_tool.name, open_tool.name) == ("find", "read")
    results = call(search_tool, query="kettle boils")
    assert results.splitlines()[0].startswith("[notes] Kettle notes — A kettle boils water")
    assert "[guides/setup] Setting up" in results
    opened = call(open_tool, id="guides/setup")
    assert opened.startswith("[guides/setup] Setting up\n\nInstall the kettle.")
    assert opened.endswith("characters]") and "[truncated: showing 100 of" in opened


def test_jsonl_corpus_accepts_contents_and_body(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [
        {"id": 1, "title": "Alpha", "text": "alpha particles are helium nuclei"},
        {"id": "b", "contents": "Beta decay\nemits an electron"},
        {"id": "c", "title": "Gamma", "body": "gamma rays are photons"},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n\n")
    search_tool, open_tool = search.build(SearchToolConfig(corpus=path))
    assert call(search_tool, query="electron").startswith("[b] Beta decay — ")
    assert call(open_tool, id="1").startswith("[1] Alpha")
    assert "photons" in call(open_tool, id="gamma")  # a title works as an id too


def test_corpus_index_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "text": "first version"}\n')
    first = search.load_corpus(path)
    assert search.load_corpus(path) is first
    path.write_text('{"id": "a", "text": "second version"}\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = search.load_corpus(path)
    assert second is not first and second.by_id["a"].text == "second version"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", "not valid JSON"),
        ('{"title": "no id", "text": "x"}\n', "needs `id` and `text`"),
        ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "duplicate id"),
        ("\n", "no documents"),
    ],
)
def test_bad_corpora_are_user_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        search.build(SearchToolConfig(corpus=path))


def test_missing_corpus_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        search.build(SearchToolConfig(corpus=tmp_path / "nope"))


# --- function tools ---------------------------------------------------------------------------


class Unit(enum.Enum):
    METRE = "m"
    FOOT = "ft"


def convert(value: float, unit: Unit, precision: int | None = None, tags: list[str] = []) -> dict:  # noqa: B006
    """Convert a length to centimetres.

    Longer explanation that is not part of the description.

    Args:
        value: the length to convert,
            in the given unit
        unit (Unit): unit of `value`
        precision: digits to round to

    Returns:
        the converted length
    """
    factor = {Unit.METRE: 100.0, Unit.FOOT: 30.48}[unit]
    result = value * factor
    return {"cm": round(result, precision) if precision is not None else result, "tags": tags}


async def lookup(key: Literal["a", "b"], *, loud: bool = False) -> str:
    """Look a key up.

    :param key: which key
    :param bool loud: shout the answer
    """
    await asyncio.sleep(0)
    return f"value of {key}".upper() if loud else f"value of {key}"


def noted(
    count: Annotated[int, "how many times"], scores: dict[str, float], pair: tuple[int, str]
) -> int:
    return count


def test_schema_from_hints_and_google_docstring() -> None:
    schema = tool_schema(convert)
    assert schema["type"] == "function"
    function_schema = schema["function"]
    assert function_schema["name"] == "convert"
    assert function_schema["description"] == "Convert a length to centimetres."
    params = function_schema["parameters"]
    assert params["required"] == ["value", "unit"] and params["additionalProperties"] is False
    props = params["properties"]
    assert props["value"] == {
        "type": "number",
        "description": "the length to convert, in the given unit",
    }
    assert props["unit"] == {
        "type": "string",
        "enum": ["m", "ft"],
        "description": "unit of `value`",
    }
    assert props["precision"] == {
        "type": ["integer", "null"],
        "description": "digits to round to",
        "default": None,
    }
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "default": []}


def test_schema_from_rest_docstring_literal_and_annotated() -> None:
    props = tool_schema(lookup)["function"]["parameters"]["properties"]
    assert props["key"] == {"type": "string", "enum": ["a", "b"], "description": "which key"}
    assert props["loud"] == {"type": "boolean", "description": "shout the answer", "default": False}
    noted_props = tool_schema(noted)["function"]["parameters"]["properties"]
    assert noted_props["count"] == {"type": "integer", "description": "how many times"}
    assert noted_props["scores"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert noted_props["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]


def test_sync_function_runs_in_a_thread_and_returns_json() -> None:
    tool = FunctionTool(convert)
    assert orjson.loads(call(tool, value=2, unit="m")) == {"cm": 200.0, "tags": []}
    assert orjson.loads(call(tool, value=1, unit="ft", precision=0)) == {"cm": 30.0, "tags": []}


def test_async_function_is_awaited() -> None:
    tool = FunctionTool(lookup, name="lookup_key")
    assert tool.schema()["function"]["name"] == "lookup_key"
    assert call(tool, key="a") == "value of a"
    assert call(tool, key="b", loud=True) == "VALUE OF B"


def test_arguments_are_validated_before_the_call() -> None:
    tool = FunctionTool(convert)
    with pytest.raises(ToolError, match="'unit' is a required property"):
        call(tool, value=1)
    with pytest.raises(ToolError, match="unit: 'yard' is not one of"):
        call(tool, value=1, unit="yard")
    with pytest.raises(ToolError, match="value: 'ten' is not of type 'number'"):
        call(tool, value="ten", unit="m")
    with pytest.raises(ToolError, match="Additional properties"):
        call(tool, value=1, unit="m", colour="red")


@pytest.fixture
def tool_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "agentmill_demo_tools.py").write_text(
        "def shout(text: str) -> str:\n"
        '    """Upper-case the text."""\n'
        "    return text.upper()\n\n"
        "class Box:\n"
        "    @staticmethod\n"
        "    def size(n: int) -> list[int]:\n"
        "        return list(range(n))\n\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "agentmill_demo_tools"


def test_build_imports_colon_and_dotted_paths(tool_module: str) -> None:
    (shout,) = function.build(FunctionToolConfig(path=f"{tool_module}.shout"))
    assert shout.name == "shout" and call(shout, text="hi") == "HI"
    (size,) = function.build(FunctionToolConfig(path=f"{tool_module}:Box.size", name="box_size"))
    assert call(size, n=3) == "[0,1,2]"
    tools = build_tools([FunctionToolConfig(path=f"{tool_module}:shout"), CalculatorToolConfig()])
    assert sorted(tools) == ["calculator", "shout"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("agentmill_no_such_module:f", "cannot import module 'agentmill_no_such_module'"),
        ("{module}:missing", "has no attribute 'missing'"),
        ("{module}:NOT_CALLABLE", "is a int, not a function"),
        ("justaname", "must look like package.module:function"),
    ],
)
def test_build_errors_name_the_problem(tool_module: str, path: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        function.build(FunctionToolConfig(path=path.format(module=tool_module)))
