"""Progress in sources fitted, from the tasks' reports (issue 17)."""
from __future__ import annotations

from dja_sepp import progress
from dja_sepp.progress import FitBoard, TaskProgress, task_progress


class _Client:
    def __init__(self):
        self.handlers = {}

    def subscribe_topic(self, topic, handler):
        self.handlers[topic] = handler

    def unsubscribe_topic(self, topic):
        self.handlers.pop(topic)


def test_task_reports_reach_the_board():
    client = _Client()
    with progress.shown(True):
        board = FitBoard(client, ["a", "b", "c"])
    sent = []

    def send(msg):
        sent.append(msg)
        client.handlers[progress.TOPIC]((0.0, msg))

    # tile a: two models of 10 sources, two passes each; the engine reports per group
    with task_progress(expected_calls=2, interval=0.0, send=send, key="a"):
        progress.begin(10)
        assert board.counts() == (0.0, 20 + 20 + 20)   # b and c count as a's 20 for now
        for _ in range(2 * 5):
            progress.advance(2 / 2)                     # groups of 2 sources, 2 passes
        progress.begin(10)
        for _ in range(5):
            progress.advance(1.0)
    assert sent[-1] == {"key": "a", "done": 15.0, "total": 20.0}
    progress.advance(5)                                 # outside a task: nothing happens
    board.finish("a", True)
    board.finish("b", True, n_sources=4)                # an engine that reports nothing
    assert board.counts() == (24.0, 36.0)               # c: the mean of the known tiles (20, 4)
    board.refresh()
    assert "tiles 2/3" in str(board.bar.postfix)
    board.close()
    assert progress.TOPIC not in client.handlers


def test_reports_are_throttled():
    sent = []
    task = TaskProgress("k", sent.append, interval=3600.0)
    task.begin(100)                 # the total is always sent
    for _ in range(50):
        task.advance(1)
    assert len(sent) == 1
    task.emit(force=True)
    assert sent[-1]["done"] == 50.0


def test_bars_are_off_unless_shown():
    assert progress.bar(range(3)).disable
    assert progress.bar(range(3), disable=True).disable
    with progress.shown(True):
        assert not progress.bar(range(3), file=open("/dev/null", "w")).disable
        assert progress.bar(range(3), disable=True).disable
