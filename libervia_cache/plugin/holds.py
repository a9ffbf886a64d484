"""Why a synchronised node is held back from being served, though its state is COMPLETED.

The state in the database says what the last sync achieved; it cannot say what the
cache may have missed since. A node is held (answered by the network) while:

- its profile has just (re)connected and its nodes are not listed for checking yet;
- it waits for its check after a (re)connection or a reopening of the store: events
  sent meanwhile were lost (:mod:`.freshness`);
- it is *suspect*: an event could not be applied to it (the store failed, a payload
  could not be fetched, an item could not be stored), so it may differ from the server.

Holds are kept by node id: ids are never reused, so a hold ends with its node, and a
node created later under the same name starts clean. Beginning a new sync of a node
lifts its holds: from then on its state (IN_PROGRESS) keeps it from being served until
the sync completes.
"""

from __future__ import annotations

#: reasons, as the miss counters and the status name them
RECONNECTED = "checked for changes after a reconnection"
SUSPECT = "may have missed a change"
CHECKING = "checking something with the server"


class Holds:
    """Node ids and profiles held back from being served, with the reason."""

    def __init__(self) -> None:
        self._profiles: set[str] = set()
        self._unchecked: set[int] = set()
        self._suspect: dict[int, str] = {}
        self._checking: dict[int, str] = {}

    def reason(self, profile: str, node_id: int) -> str | None:
        """Why the node may not be served now (None: it may)."""
        if profile in self._profiles or node_id in self._unchecked:
            return RECONNECTED
        if node_id in self._suspect:
            return SUSPECT
        if node_id in self._checking:
            return CHECKING
        return None

    def why_suspect(self, node_id: int) -> str | None:
        """What made the node suspect, in one line (None: it is not)."""
        return self._suspect.get(node_id)

    def hold_profile(self, profile: str) -> None:
        self._profiles.add(profile)

    def release_profile(self, profile: str) -> None:
        self._profiles.discard(profile)

    def hold_unchecked(self, node_ids: list[int]) -> None:
        self._unchecked.update(node_ids)

    def checked(self, node_id: int) -> None:
        self._unchecked.discard(node_id)

    def suspect(self, node_id: int, why: str) -> None:
        self._suspect[node_id] = why

    def checking(self, node_id: int, what: str) -> None:
        """A question is being asked of the server about the node (its answer may show
        the cache's copy is wrong): hold it meanwhile, without starting a sync."""
        self._checking[node_id] = what

    def checked_with_server(self, node_id: int) -> None:
        """The question was answered and the copy is right: serve the node again."""
        self._checking.pop(node_id, None)

    def sync_began(self, node_id: int) -> None:
        """A new sync owns the node: its state now keeps it from being served."""
        self._unchecked.discard(node_id)
        self._suspect.pop(node_id, None)
        self._checking.pop(node_id, None)
