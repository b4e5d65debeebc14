"""moto's server, with DynamoDB requests handled one at a time.

moto rolls a failed TransactWriteItems back by restoring a copy of the whole table taken
when the transaction began, which also undoes whatever other requests wrote meanwhile
(real DynamoDB isolates transactions). Concurrent writers, as the store's contract suite
and the multi-replica test have, would then see acknowledged writes vanish. One lock
around DynamoDB requests makes moto's transactions isolated again; other services stay
concurrent.

Usage: the same arguments as `moto_server` (run with the virtualenv's python).
"""

import sys
import threading

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_LOCK = threading.Lock()
_CALL_ACTION = DynamoHandler.call_action


def _serialized_call_action(self):
    with _LOCK:
        return _CALL_ACTION(self)


DynamoHandler.call_action = _serialized_call_action

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
