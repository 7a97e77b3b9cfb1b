"""The client library for other Python processes: drive the daemon and follow its stream.

    from transport.client import ClientKeys, ControlClient, Subscriber

    with ControlClient("tcp://127.0.0.1:7451") as control:
        control.submit("arb_btc", inputs={"threshold": 10.0})

    with Subscriber("tcp://127.0.0.1:7450", "tcp://127.0.0.1:7451",
                    topics=("workflow/arb_btc/",), since_seq=saved + 1) as events:
        for event in events:          # strictly increasing seq, gaps filled by replay
            saved = event["seq"]

`ControlClient` is in `control_client.py`, `Subscriber` in `subscriber.py`; the errors they
raise in `errors.py` (re-exported here).
"""

from transport.control_client import ControlClient
from transport.errors import (
    BadRequestError,
    ControlError,
    DaemonUnreachable,
    HaltedError,
    InternalServerError,
    LimitExceededError,
    NotFoundError,
    OverloadedError,
    TransportError,
    UnauthorizedError,
    UnknownOpError,
    UnknownWorkflowError,
)
from transport.security import ClientKeys
from transport.subscriber import Subscriber

__all__ = [
    "BadRequestError",
    "ClientKeys",
    "ControlClient",
    "ControlError",
    "DaemonUnreachable",
    "HaltedError",
    "InternalServerError",
    "LimitExceededError",
    "NotFoundError",
    "OverloadedError",
    "Subscriber",
    "TransportError",
    "UnauthorizedError",
    "UnknownOpError",
    "UnknownWorkflowError",
]
