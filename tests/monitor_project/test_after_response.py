"""Work left for after the answer (monitor_project/after_response.py), outside a request
and while one is being answered (the handler's side: tests/monitor_project/test_asgi_http.py)."""

from monitor_project import after_response as after


def test_outside_a_request_the_work_runs_at_once():
    done: list[int] = []

    after.after_response(lambda: done.append(1))

    assert done == [1]


def test_while_collecting_the_work_waits_and_runs_in_order_when_asked():
    done: list[int] = []
    after.collecting_start()
    try:
        after.after_response(lambda: done.append(1))
        after.after_response(lambda: done.append(2))
        assert done == []
    finally:
        collected = after.collecting_stop()

    after.collected_run(collected)

    assert done == [1, 2]


def test_after_collecting_stops_work_runs_at_once_again():
    after.collecting_start()
    after.collecting_stop()
    done: list[int] = []

    after.after_response(lambda: done.append(1))

    assert done == [1]


def test_one_failing_piece_does_not_stop_the_others(caplog):
    done: list[int] = []

    after.collected_run([lambda: 1 / 0, lambda: done.append(2)])

    assert done == [2]
    assert "work after the response failed" in caplog.text
