"""moto's server, with DynamoDB transactions made isolated and cheap.

Two things in moto 5.2's DynamoDB differ from the real service in ways the store's tests
notice, and this launcher changes exactly those (run it like `moto_server`, with the
virtualenv's python):

* moto serves requests on several threads, and TransactWriteItems rolls a cancelled
  transaction back by restoring a copy of the whole table taken when it began. That also
  undoes whatever other requests wrote meanwhile, so with concurrent writers (the store's
  contract suite, the multi-replica test) acknowledged writes vanish. Here DynamoDB
  requests are served one at a time (other services stay concurrent).
* That copy is a deep copy of the whole table on every transaction: ~0.5 s for a table of
  a few hundred items, which starves everything else. With requests serialized, a
  transaction can instead check every condition first, against the state before the
  transaction as DynamoDB does, and write only if all hold: nothing to roll back.
"""

import sys
import threading

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_LOCK = threading.Lock()
_CALL_ACTION = DynamoHandler.call_action


def _serialized_call_action(self):
    with _LOCK:
        return _CALL_ACTION(self)


def _key_of(backend, op_type, op):
    if op_type != "Put":
        return op["Key"]
    table = backend.get_table(op["TableName"])
    attrs = op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def _transact_write_items(self, transact_items):
    """All conditions first (against the state before the transaction), then all writes."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    seen = set()
    plans = []
    reasons = []
    for item in transact_items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError("Unsupported transaction operation")
        key = _key_of(self, op_type, op)
        identity = (op["TableName"], str(sorted(key.items())))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
        current = self.get_item(op["TableName"], key)
        condition = op.get("ConditionExpression")
        holds = condition is None or get_filter_expression(
            condition,
            op.get("ExpressionAttributeNames"),
            op.get("ExpressionAttributeValues"),
        ).expr(current)
        if holds:
            reasons.append((None, None, None))
        else:
            old = None
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old = current.to_json()["Attributes"]
            reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
        plans.append((op_type, op, key))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    for op_type, op, key in plans:
        if op_type == "Put":
            self.put_item(op["TableName"], op["Item"])
        elif op_type == "Delete":
            self.delete_item(op["TableName"], key)
        elif op_type == "Update":
            self.update_item(
                op["TableName"],
                key,
                update_expression=op["UpdateExpression"],
                expression_attribute_names=op.get("ExpressionAttributeNames"),
                expression_attribute_values=op.get("ExpressionAttributeValues"),
            )


DynamoHandler.call_action = _serialized_call_action
DynamoDBBackend.transact_write_items = _transact_write_items

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
