import os
import signal

import pytest

from aichaos.errors import Interrupted
from aichaos.interrupts import deferred, signals_raise


def test_first_signal_raises_later_ones_only_hurry():
    with signals_raise() as gate:
        with pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.1)  # give the handler a chance to run
        assert info.value.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # noted, not raised: teardown must not be cut short
        assert gate.received == ["SIGTERM", "SIGINT"] and gate.hurried


def test_signal_inside_a_deferred_section_is_raised_at_its_end():
    reached_end_of_section = False
    with signals_raise(), pytest.raises(Interrupted), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        reached_end_of_section = True
    assert reached_end_of_section


def test_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with signals_raise():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
