"""A warm node's SuperNode: Flower's own ``flower-supernode``, with its fixed waits made short.

Flower 1.42's SuperNode (``flwr.supernode.start_client_internal``) has three waits written into
its loop: it sleeps 3 s whenever the SuperLink has no message for it (so the next round's message
waits on average half of that, and up to 3 s, after the server sent it), it checks every 0.5 s
whether the ClientApp has stored its reply, and it pulls a message's objects from the SuperLink
with a backoff starting at 1 s (the SuperLink may not hold them yet when the message arrives). A
ClientApp that takes seconds to start hides them; a forked one (``ecufl.fleet.warm``) does not.

A warm node runs this module instead of ``flower-supernode``, with the same arguments: it is
Flower's SuperNode, same code, same connection, node id, tokens, Runtime API and messages; only
those three waits change (module attributes of ``start_client_internal``, nothing else):

- no message: wait ``ECUFL_NODE_POLL`` seconds (``ecufl fleet up`` sets nodes / 20, 0.05 to
  1 s, so a fleet's SuperNodes together ask the SuperLink about 20 times a second) for ``ECUFL_NODE_POLL_WINDOW`` seconds (default 30) after the node's last reply went out
  or after it started, Flower's 3 s after that (an idle fleet does not poll the SuperLink faster
  than Flower's own does);
- the reply check and the wait for a reply's objects: every 0.02 s instead of 0.5 s (the state
  is the SuperNode's own memory: no request);
- pulling a message's objects: backoff from 0.05 s doubling to 2 x ``ECUFL_NODE_POLL`` (at least
  0.2 s; Flower's: 1 s to 10 s). The cap grows with the fleet because every node pulls at once
  while the server is still uploading them: at 16 nodes, retries every 0.2 s (two objects at a
  time per node) kept the SuperLink so busy that the server's own upload took 11 s.

Per message it writes one line to the node's log (``warm SuperNode timing {...}``: when it polled
the SuperLink and got the message, when the message's objects were stored, when the reply went).

Cold nodes (``ecufl fleet up --cold``) and the bare Flower app of ``ecufl fleet overhead
--compare-flower`` keep Flower's plain ``flower-supernode``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time as _time

from flwr.supernode import start_client_internal as sci

POLL_ENV = "ECUFL_NODE_POLL"
WINDOW_ENV = "ECUFL_NODE_POLL_WINDOW"
IDLE = 3.0  # Flower's sleep when the SuperLink had no message (start_client_internal.py:263)
REPLY_CHECK = 0.5  # Flower's reply / object checks (start_client_internal.py:470, :506)
SHORT_CHECK = 0.02
PULL_BACKOFF = (0.05, 0.2)  # the cap is at least 2 x ECUFL_NODE_POLL: see the module's doc
NODE_TIMING = "warm SuperNode timing "  # one line per message in the node's log: polled, stored, sent (time.time())


def _seconds(name: str, default: float, lo: float, hi: float) -> float:
    try:
        return min(hi, max(lo, float(os.environ.get(name, default))))
    except ValueError:
        sys.exit(f"{name}={os.environ[name]!r}: expected seconds")


class Waits:
    """Stands in for the ``time`` module inside ``start_client_internal``: its ``sleep`` shortens
    Flower's fixed waits as described above; everything else is ``time``'s."""

    def __init__(self, poll: float, window: float) -> None:
        self.poll, self.window = poll, window
        self.busy_at = _time.monotonic()  # the node's start counts as activity: the first round comes soon

    def active(self) -> None:
        self.busy_at = _time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds == IDLE:
            _time.sleep(self.poll if _time.monotonic() - self.busy_at < self.window else IDLE)
        elif seconds == REPLY_CHECK:
            _time.sleep(SHORT_CHECK)
        else:
            _time.sleep(seconds)

    def __getattr__(self, name: str):
        return getattr(_time, name)


def install(poll: float, window: float) -> Waits:
    waits = Waits(poll, window)
    sci.time = waits  # the module's `time` name only: the rest of Flower keeps the real module
    sci.pull_objects = functools.partial(sci.pull_objects, initial_backoff=PULL_BACKOFF[0],
                                         backoff_cap=max(PULL_BACKOFF[1], 2 * poll))
    pull, push = sci._pull_and_store_message, sci._push_messages
    times: dict[str, float] = {}

    def pull_and_store_message(*args, **kwargs):
        times["polled_at"] = _time.time()
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            times["stored_at"] = _time.time()  # the message and its objects are in the node's store
        return run_id

    def push_messages(*args, **kwargs):
        try:
            return push(*args, **kwargs)
        finally:
            waits.active()  # a reply went out: the server's next message comes soon
            print(NODE_TIMING + json.dumps(times | {"sent_at": _time.time()}), file=sys.stderr, flush=True)

    sci._pull_and_store_message, sci._push_messages = pull_and_store_message, push_messages
    return waits


def main() -> None:
    install(_seconds(POLL_ENV, 0.1, 0.02, IDLE), _seconds(WINDOW_ENV, 30.0, 0.0, 3600.0))
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
