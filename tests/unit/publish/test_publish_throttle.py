"""Throttled log lines: the first at once, then at most one summary per interval, nothing lost."""

import logging

from agent.publish.throttle import Throttled


def test_first_at_once_then_one_summary_per_interval(caplog):
    now = [0.0]
    log = logging.getLogger("test.throttle")
    throttled = Throttled(log, logging.WARNING, lambda n, by: f"{n} event(s): {dict(sorted(by.items()))}",
                          interval=60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="test.throttle")
    throttled.note({"a": 1})
    for _ in range(500):  # a flood within the interval: counted, not logged
        now[0] += 0.1
        throttled.note({"a": 1, "b": 2})
    assert [r.getMessage() for r in caplog.records] == ["1 event(s): {'a': 1}"]
    throttled.flush()  # the periodic job, before the interval is over: still quiet
    assert len(caplog.records) == 1
    now[0] = 61.0
    throttled.flush()
    assert caplog.records[-1].getMessage() == "1500 event(s): {'a': 500, 'b': 1000}"
    throttled.note({"a": 3})  # inside the next interval: held...
    throttled.close()  # ...until the end, whatever the interval
    assert caplog.records[-1].getMessage() == "3 event(s): {'a': 3}"
    assert throttled.total == 1504 and throttled.lines == 3
    throttled.close()
    assert len(caplog.records) == 3  # nothing pending: nothing more


def test_the_traceback_goes_with_the_line_that_is_written(caplog):
    log = logging.getLogger("test.throttle.exc")
    throttled = Throttled(log, logging.ERROR, lambda n, by: f"{n} error(s)", clock=lambda: 0.0)
    caplog.set_level(logging.ERROR, logger="test.throttle.exc")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        throttled.note({"x": 1}, exc_info=exc)
    assert caplog.records[0].exc_info is not None and "boom" in caplog.text
