"""The load-time choice between two exact ways of computing a layer (fcnfast/engine/calibrate.py)."""
from fcnfast.engine import calibrate


def test_paired_timing_alternates_and_takes_each_ones_median(monkeypatch):
    """Both warmed up once, then timed in rounds whose order alternates; the medians compared."""
    order = []
    # each call of ``first`` lasts 3 ticks, of ``second`` 1 tick, except one slow outlier each
    costs = {"first": iter([3, 3, 3, 9, 3, 3, 3, 3]), "second": iter([1, 1, 50, 1, 1, 1, 1, 1])}
    now = [0.0]

    def run(name):
        def call():
            order.append(name)
            now[0] += next(costs[name]) / 1e3  # seconds → the timer reads milliseconds
        return call

    monkeypatch.setattr(calibrate.time, "perf_counter", lambda: now[0])
    a, b = calibrate.paired_ms(run("first"), run("second"))
    assert order[:2] == ["first", "second"]  # the warm-up
    rounds = order[2:]
    assert len(rounds) == 2 * calibrate.ROUNDS
    pairs = [rounds[i:i + 2] for i in range(0, len(rounds), 2)]
    assert pairs[0] == ["first", "second"] and pairs[1] == ["second", "first"]
    assert all(p == pairs[i % 2] for i, p in enumerate(pairs))
    assert abs(a - 3.0) < 1e-9 and abs(b - 1.0) < 1e-9  # the outliers do not move a median


def test_long_calls_are_timed_in_fewer_rounds(monkeypatch):
    calls = []
    now = [0.0]
    monkeypatch.setattr(calibrate.time, "perf_counter", lambda: now[0])

    def slow():
        calls.append(1)
        now[0] += (calibrate.LONG_MS + 1) / 1e3

    calibrate.paired_ms(slow, lambda: None)
    assert len(calls) == 1 + calibrate.LONG_ROUNDS


def test_the_second_way_is_taken_only_when_clearly_faster(monkeypatch):
    for a, b, want in [(2.0, 1.0, True), (2.0, 1.95, False), (1.0, 2.0, False)]:
        monkeypatch.setattr(calibrate, "paired_ms", lambda first, second, a=a, b=b: (a, b))
        assert calibrate.second_faster(None, None) is want
