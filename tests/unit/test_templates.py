import random
import statistics

import pytest

from aichaos.load.templates import TemplateError, check_templates, compile_template


def draw(value, n=1, seed=1):
    rng = random.Random(seed)
    fn = compile_template(value)
    return [fn(rng) for _ in range(n)]


def test_lone_template_keeps_type():
    [v] = draw("{{ randint(3, 3) }}")
    assert v == 3 and isinstance(v, int)


def test_mixed_string_formats():
    [v] = draw("id-{{ randint(7, 7) }}-x")
    assert v == "id-7-x"


def test_words_lognormal_spread_matches_the_declaration():
    lengths = [len(t.split()) for t in draw("{{ words(lognormal(20, 0.8)) }}", n=4000)]
    assert statistics.median(lengths) == pytest.approx(20, rel=0.1)
    # sigma 0.8: the 90th percentile sits near 20 * e^(1.2816 * 0.8) ≈ 55.7
    assert sorted(lengths)[int(0.9 * len(lengths))] == pytest.approx(55.7, rel=0.12)
    assert min(lengths) >= 1


def test_zipf_prefers_low_ranks():
    values = draw("{{ zipf(100, 1.2) }}", n=5000)
    assert all(1 <= v <= 100 for v in values)
    share_of_1 = values.count(1) / len(values)
    expected = 1 / sum(1 / k**1.2 for k in range(1, 101))  # P(1) = 1 / H(100, 1.2) ≈ 0.278
    assert share_of_1 == pytest.approx(expected, abs=0.02)
    assert values.count(1) > values.count(2) > values.count(10)


def test_nested_structures():
    [v] = draw({"a": ["{{ choice('x', 'y') }}", 1], "b": {"c": "{{ uniform(1, 1) }}"}})
    assert v["a"][0] in ("x", "y") and v["a"][1] == 1 and v["b"]["c"] == 1.0


@pytest.mark.parametrize("bad", [
    "{{ __import__('os') }}", "{{ open('x') }}", "{{ words(1) + 1 }}", "{{ words(x=1) }}", "{{ words() }}",
    "{{ lognormal(-1, 1) }}", "{{ unclosed", "{{ 1 +* 2 }}", "{{ zipf(0) }}",
])
def test_rejects_anything_but_known_calls(bad):
    with pytest.raises(TemplateError):
        check_templates({"t": bad})


def test_minus_applies_to_numbers_only():
    assert compile_template("{{ uniform(-2, -1) }}")(random.Random(1)) < 0
    for bad in ("{{ -words(5) }}", "{{ -'a' }}", "{{ --1 }}"):
        with pytest.raises(TemplateError, match="numbers only"):
            compile_template(bad)
