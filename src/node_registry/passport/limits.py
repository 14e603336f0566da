"""Size and count limits on a passport, each with the reason for its number.

They are constants rather than settings: a passport accepted by one registry must be
accepted by every other, and the etcd backend can never store a document over its request
limit (1.5 MiB by default), whatever a config file says.
"""

from __future__ import annotations

#: The whole passport as compact JSON. Kubernetes caps all annotations of an object at 256 KiB;
#: a passport is a description, not a payload, and this leaves etcd's 1.5 MiB far away.
MAX_PASSPORT_BYTES = 256 * 1024
#: Labels on one node. Kubernetes sets none; selectors and the label index grow with it.
MAX_LABELS = 64
#: Capabilities on one node; each becomes one derived label ``capability.<name>``.
MAX_CAPABILITIES = 128
#: Resource entries (``cpu``, ``memory``, ``nvidia.com/gpu``, ...); each becomes a derived label.
MAX_RESOURCES = 32
#: Taints on one node. Kubernetes sets none; every toleration of a task is tried against each.
MAX_TAINTS = 32
#: Conditions in status; Kubernetes nodes carry about five.
MAX_CONDITIONS = 32
#: Total bytes of annotation keys and values, as Kubernetes' TotalAnnotationSizeLimitB.
MAX_ANNOTATIONS_BYTES = 64 * 1024
#: Capability names must leave room for the ``capability.`` prefix inside a 63-character label name.
MAX_CAPABILITY_NAME = 63 - len("capability.")
#: Containers (objects, arrays) nested inside each other, counting the passport itself.
#: pydantic's serializer gives up past 254 levels, so a deeper document could be stored but
#: never read back; a description needs a handful, and depth is a cheap way to exhaust a stack.
MAX_NESTING_DEPTH = 64
#: Digits of an integer anywhere in a passport. Python reads any length (up to 4,300 digits,
#: then it raises), but Kubernetes' JSON carries int64 and JavaScript 53 bits; 40 digits
#: hold any 128-bit integer and refuse the thousands of digits that only cost CPU.
MAX_INTEGER_DIGITS = 40
#: A passport read from at most this many bytes is validated on the event loop that read it
#: (tens of microseconds as JSON, less than a hop to a worker thread costs); a larger one in
#: a worker thread, so that milliseconds of pure Python never stall the heartbeats the loop
#: serves. The server parses bodies by the same line (``server.body.INLINE_PARSE_BYTES``).
INLINE_VALIDATION_BYTES = 16 * 1024
