"""math_reward and extract_answer: the answer formats models write, one case per line."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agentmill.scoring import math_reward as public_math_reward
from agentmill.scoring.math import clean_answer, extract_answer, gold_answer, math_reward

GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)

MATCHES = [
    # boxed
    (r"The result is \boxed{42}.", "42"),
    (r"\boxed{\frac{3}{4}}", "0.75"),
    (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}"),
    (r"\boxed{\frac{1}{\frac{1}{2}}}", "2"),
    (r"\boxed{{12}}", "12"),
    (r"first \boxed{3} but on reflection \boxed{5}", "5"),
    (r"\fbox{17}", "17"),
    (r"\boxed{x = 5}", "5"),
    (r"\boxed{\sqrt{4}}", "2"),
    (r"\boxed{\{1, 2\}}", r"\{1,2\}"),
    # GSM8K hashes
    ("so she has 72 clips\n#### 72", "72"),
    ("#### 1,000", "1000"),
    # phrases
    ("The answer is 7.", "7"),
    ("Therefore, the final answer is 3.5 meters. Hope that helps!", "3.5"),
    ("Final Answer: $\\frac{1}{3}$", "1/3"),
    ("**Answer:** 12", "12"),
    ("The answer is:\n\n  19", "19"),
    # fractions vs decimals
    ("The answer is 1/2", "0.5"),
    ("The answer is 0.5", r"\frac{1}{2}"),
    ("The answer is 0.333333", "1/3"),
    ("The answer is 1.50", "3/2"),
    ("The answer is 100.0", "100"),
    # negative numbers
    ("The answer is -3.", "-3"),
    ("The temperature fell to \u22125 degrees", "-5"),
    (r"\boxed{-\frac{1}{2}}", "-0.5"),
    # thousands separators
    ("The answer is 1,234", "1234"),
    ("The answer is 1234", "1,234"),
    ("It costs $1,234,567.", "1234567"),
    (r"\boxed{1{,}234}", "1234"),
    # units and currency
    ("The answer is 42 apples.", "42"),
    ("The answer is $42.", "42"),
    ("The answer is \\$18.00", "18"),
    ("The answer is 42 cm", "42"),
    (r"\boxed{42\text{ cm}}", "42"),
    (r"\boxed{\text{42 dollars}}", "42"),
    # percentages: '%' matches the number and the fraction
    ("The answer is 50%.", "50"),
    ("The answer is 50%", "0.5"),
    (r"\boxed{25\%}", "25"),
    ("The answer is 0.5", "50%"),
    ("The answer is 50", "50%"),
    ("The answer is 50 percent", "0.5"),
    # scientific notation
    ("The answer is 1.5e3", "1500"),
    (r"\boxed{1.5 \times 10^{3}}", "1500"),
    # last number fallback, trailing punctuation
    ("First 3 then 4 and finally 12.", "12"),
    ("12!", "12"),
    # ground truths: full GSM8K solutions, boxed, numbers, words
    ("The answer is 72", GSM8K_SOLUTION),
    ("The answer is 6", r"We get \boxed{6}."),
    ("The answer is Paris.", "Paris"),
    ("the answer is yes", "Yes"),
]

MISMATCHES = [
    (r"\boxed{41}", "42"),
    (r"\boxed{5} ... no wait, \boxed{3}", "5"),
    ("The answer is 3", "-3"),
    ("The answer is 0.333", "1/3"),
    ("The answer is 0.5", "50"),  # a bare fraction is not the percentage
    ("The answer is 1,235", "1234"),
    ("The answer is 73", GSM8K_SOLUTION),
    ("The answer is Pairs", "Paris"),  # sympy alone would say a*i*p*r*s == a*i*p*r*s
    (r"\boxed{\pi}", "3.14"),
    ("I don't know.", "7"),
    ("", "7"),
    ("}}{{\\boxed{", "7"),
    ("\\boxed{}", "7"),
    ("$$$%%%^^^", "7"),
    ("\x00\x01\ufffd", "7"),
    (r"\boxed{10^{10^{10}}}", "5"),  # would hang sympy: refused
    (r"\boxed{(10^{10})!}", "5"),
    (r"\boxed{9^{9^{9}}}", "9"),
    (r"\boxed{(x+1)^{5000}}", "1"),
    (r"\boxed{" + "1+" * 600 + "1}", "601"),  # over MAX_ANSWER_CHARS
    ("The answer is 42", ""),
]


@pytest.mark.parametrize(("response", "gold"), MATCHES)
def test_matches(response: str, gold: str) -> None:
    assert math_reward(response, gold) == 1.0


@pytest.mark.parametrize(("response", "gold"), MISMATCHES)
def test_mismatches(response: str, gold: str) -> None:
    assert math_reward(response, gold) == 0.0


EXTRACTIONS = [
    (r"so \boxed{\frac{a}{b^{2}}} done", r"\frac{a}{b^{2}}"),
    (r"\boxed{1} and \boxed{2}", "2"),
    (r"\boxed {7}", "7"),
    (r"\boxed{3} then \boxed{4", "3"),  # an unclosed (cut-off) box is skipped
    ("steps\n#### 1,234\n", "1,234"),
    ("The answer is 42. Next sentence.", "42"),
    ("THE FINAL ANSWER IS 9", "9"),
    ("answer: x = 3.5!", "x = 3.5"),
    ("I got 12, then 15.", "15"),
    ("5 - 3 = 2", "2"),
    ("it went to -7", "-7"),
    ("halve: 3/4", "3/4"),
    ("up 12.5% this year", "12.5%"),
    ("total 1,234,567 items", "1,234,567"),
    ("no number at all", None),
    ("", None),
]


@pytest.mark.parametrize(("response", "expected"), EXTRACTIONS)
def test_extract_answer(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("\\(42\\)", "42"),
        ("**42**", "42"),
        ("-$5", "-5"),
        ("42 apples", "42"),
        ("5x", "5x"),
        ("50 %", "50\\%"),
    ],
)
def test_clean_answer(raw: str, clean: str) -> None:
    assert clean_answer(raw) == clean


def test_gold_answer_uses_the_part_after_the_last_hashes() -> None:
    assert gold_answer(GSM8K_SOLUTION) == "72"
    assert gold_answer("  #### -1,500 ") == "-1500"


def test_public_wrapper_and_numeric_ground_truth() -> None:
    assert public_math_reward("the answer is 4", "4") == 1.0
    assert math_reward("the answer is 0.25", 0.25) == 1.0  # type: ignore[arg-type]


def test_works_off_the_main_thread() -> None:
    """math_verify's SIGALRM timeouts would raise in a worker thread; ours are off."""
    results: list[float] = []
    thread = threading.Thread(target=lambda: results.append(math_reward("\\boxed{1/2}", "0.5")))
    thread.start()
    thread.join(timeout=60)
    assert results == [1.0]
    assert asyncio.run(asyncio.to_thread(math_reward, "\\boxed{3}", "3")) == 1.0


def test_explosive_answers_are_refused_quickly() -> None:
    start = time.monotonic()
    assert math_reward(r"\boxed{10^{10^{10^{10}}}}", "1") == 0.0
    assert math_reward(r"\boxed{2^{1000}}", "2^{1000}") == 1.0  # big but fine
    assert time.monotonic() - start < 10
