"""What a hook author imports: the public API of Python hooks (bridge/hooks.py runs them).

    def function(frame, ctx: HookContext) -> frame | [frames] | Reply(frame) | None

Kept apart from the appliance so that a hook module, such as those in
examples/hooks/, depends on these two names only.
"""
from __future__ import annotations

import dataclasses


class Reply:
    """A frame that leaves by the port its trigger came in on."""

    def __init__(self, frame):
        self.frame = frame


@dataclasses.dataclass(frozen=True)
class HookContext:
    port: str           # "a" or "b": where the frame came in
    rule: str
    timestamp_ns: int
    mode: str
