"""Request body templates: strings with ``{{ call }}`` parts drawn fresh for every request.

So that inputs vary like production traffic::

    json: {text: "{{ words(lognormal(20, 0.8)) }}", entity: "{{ zipf(1000, 1.2) }}"}

A string that is exactly one ``{{ … }}`` keeps the drawn value's type (an int stays an int);
otherwise the drawn values are formatted into the string. Only the functions below, numbers and
strings are allowed: templates are parsed, never ``eval``-ed.

- ``words(n)``: n words of text (n rounded, at least 1)
- ``lognormal(median, sigma)``: a lognormal draw with that median
- ``uniform(a, b)``, ``randint(a, b)``: uniform float / integer in [a, b]
- ``zipf(n, s=1.1)``: an integer in 1..n, rank k drawn with weight 1/k**s (hot keys)
- ``choice(x, y, …)``: one of the arguments
"""

from __future__ import annotations

import ast
import bisect
import itertools
import math
import random
import re
from collections.abc import Callable
from typing import Any

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.S)
_VOCAB = (
    "model latency token batch queue gpu memory retry timeout cache feature store vector embed "
    "request answer serve scale shard replica canary rollout health ready predict score label "
    "input output layer tensor kernel stream socket proxy fault chaos drill signal metric alert"
).split()


class TemplateError(ValueError):
    pass


def _words(rng: random.Random, n: float) -> str:
    count = max(1, round(n))
    return " ".join(rng.choice(_VOCAB) for _ in range(count))


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    if median <= 0 or sigma < 0:
        raise TemplateError("lognormal(median, sigma) needs median > 0 and sigma >= 0")
    return rng.lognormvariate(math.log(median), sigma)


_ZIPF_CACHE: dict[tuple[int, float], list[float]] = {}


def _zipf(rng: random.Random, n: float, s: float = 1.1) -> int:
    key = (int(n), float(s))
    if key[0] < 1:
        raise TemplateError("zipf(n, s) needs n >= 1")
    cumulative = _ZIPF_CACHE.get(key)
    if cumulative is None:
        cumulative = list(itertools.accumulate(1.0 / k**key[1] for k in range(1, key[0] + 1)))
        _ZIPF_CACHE[key] = cumulative
    return bisect.bisect_left(cumulative, rng.random() * cumulative[-1]) + 1


def _randint(rng: random.Random, a: float, b: float) -> int:
    return rng.randint(int(a), int(b))


FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    # name: (function(rng, *args), min args, max args)
    "words": (_words, 1, 1),
    "lognormal": (_lognormal, 2, 2),
    "uniform": (lambda rng, a, b: rng.uniform(a, b), 2, 2),
    "randint": (_randint, 2, 2),
    "zipf": (_zipf, 1, 2),
    "choice": (lambda rng, *xs: rng.choice(xs), 1, 1000),
}

Draw = Callable[[random.Random], Any]


def _compile_expr(node: ast.expr) -> Draw:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str) and not isinstance(
        node.value, bool
    ):
        value = node.value
        return lambda rng: value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        # a negative number; minus on anything else (-words(5) is a string) is refused here
        operand = node.operand
        if not (isinstance(operand, ast.Constant) and isinstance(operand.value, int | float)
                and not isinstance(operand.value, bool)):
            raise TemplateError(f"'-' applies to numbers only, not to {ast.unparse(operand)!r}")
        negative = -operand.value
        return lambda rng: negative
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name not in FUNCTIONS:
            raise TemplateError(f"unknown template function {name}(); known: {', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            raise TemplateError(f"{name}() takes positional arguments only")
        fn, lo, hi = FUNCTIONS[name]
        if not lo <= len(node.args) <= hi:
            raise TemplateError(f"{name}() takes {lo}{'' if lo == hi else f' to {hi}'} argument(s)")
        args = [_compile_expr(a) for a in node.args]
        return lambda rng: fn(rng, *(a(rng) for a in args))
    raise TemplateError(f"not allowed in a template: {ast.unparse(node)!r}")


def _compile_string(text: str) -> Draw:
    parts = _TEMPLATE.split(text)
    if len(parts) == 1:
        if "{{" in text or "}}" in text:
            raise TemplateError(f"unbalanced template braces in {text!r}")
        return lambda rng: text
    draws: list[Draw | str] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if "{{" in part or "}}" in part:
                raise TemplateError(f"unbalanced template braces in {text!r}")
            if part:
                draws.append(part)
            continue
        try:
            tree = ast.parse(part.strip(), mode="eval")
        except SyntaxError as exc:
            raise TemplateError(f"template {{{{{part}}}}} does not parse: {exc.msg}") from exc
        draws.append(_compile_expr(tree.body))
    if len(draws) == 1 and not isinstance(draws[0], str):
        return draws[0]  # a lone template keeps its type

    def render(rng: random.Random) -> str:
        return "".join(d if isinstance(d, str) else str(d(rng)) for d in draws)

    return render


def compile_template(value: Any) -> Draw:
    """Compile a JSON value whose strings may hold templates into a function of an RNG."""
    if isinstance(value, str):
        return _compile_string(value)
    if isinstance(value, dict):
        items = [(k, compile_template(v)) for k, v in value.items()]
        return lambda rng: {k: d(rng) for k, d in items}
    if isinstance(value, list):
        drawn = [compile_template(v) for v in value]
        return lambda rng: [d(rng) for d in drawn]
    return lambda rng: value


def check_templates(value: Any) -> None:
    """Raise TemplateError if any template in ``value`` is malformed; draws once to catch bad arguments."""
    draw = compile_template(value)
    draw(random.Random(0))
