import pytest

from aichaos.experiment.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("2m", 120.0), ("500ms", 0.5), ("1h", 3600.0), ("1m30s", 90.0), (" 5 s ", 5.0),
    (12, 12.0), (1.5, 1.5), ("2.5s", 2.5), ("7", 7.0),
])
def test_parses(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "abc", "30x", "s30", "-5s", -1, True, None, [1], "1m 30x",
                                 float("inf"), float("nan"), "inf", "nan", "-3"])
def test_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_formats():
    assert format_duration(0.25) == "250ms"
    assert format_duration(30) == "30s"
    assert format_duration(120) == "2m"
