"""JSON for the transports: compact (schema.json_text), and a result shared by identical
subscriptions (schema.json_text.EncodedOnce) is spliced in as the JSON it was encoded
to once, instead of being encoded again for every socket."""

from __future__ import annotations

from schema.json_text import EncodedOnce, compact_json


def encode_json(message: object) -> str:
    """compact_json(message), the same text, faster for messages whose last key is
    `payload` and whose payload is only a shared result's data (a graphql-transport-ws /
    graphql-ws `next`/`data` message)."""
    if isinstance(message, dict) and message:
        payload = message.get("payload")
        if (
            isinstance(payload, dict)
            and len(payload) == 1
            and isinstance(payload.get("data"), EncodedOnce)
            and next(reversed(message)) == "payload"
        ):
            data: EncodedOnce = payload["data"]
            # graphql-transport-ws `next`, keys in strawberry's order: id, type, payload.
            if len(message) == 3 and next(iter(message)) == "id" and message.get("type") == "next":
                return next_message(message["id"], data)
            spliced = '"payload":{"data":' + data.json + "}}"
            rest = compact_json({key: value for key, value in message.items() if key != "payload"})
            return (rest[:-1] + "," if len(rest) > 2 else "{") + spliced
    return compact_json(message)


def next_message(operation_id: object, data: EncodedOnce) -> str:
    """The graphql-transport-ws `next` message of an operation whose result is only
    `data`, the text encode_json makes of strawberry's message dict for it."""
    operation = compact_json(operation_id)
    return '{"id":' + operation + ',"type":"next","payload":{"data":' + data.json + "}}"
