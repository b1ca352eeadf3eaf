"""``client.models``: the base models the operator configured (``model.list``)."""

from __future__ import annotations

from typing import List

from .connection import Connection
from .errors import InternalError
from .types import Model

__all__ = ["Models"]


class Models:
    """The daemon's base models (``client.models``)."""

    def __init__(self, connection: Connection):
        self._conn = connection

    def list(self) -> List[Model]:
        """The base models the operator configured (names only; an entry without a
        name is skipped). InternalError when ``models`` is not an array."""
        raw = self._conn.call("model.list").body.get("models")
        if raw is not None and not isinstance(raw, list):
            raise InternalError(f"malformed reply to model.list: models is {raw!r}, not an array")
        return [m for m in (Model.from_dict(x) for x in raw or []) if m is not None]
