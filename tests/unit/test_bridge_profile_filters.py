"""A profiles filter that is not a list of names is a bad request naming it."""

from __future__ import annotations

from typing import Any

import pytest

from libervia_cache.backend.bridge import Bridge
from libervia_cache.errors import BridgeError
from tests.unit.storage.conftest import db_url, store  # noqa: F401
from tests.unit.storage.test_search_purge_fuzz import bridge  # noqa: F401


@pytest.mark.parametrize("profiles", [True, "bob", 3, {"bob": 1}])
@pytest.mark.parametrize(
    ("method", "key"), [("ps_cache_search", "query"), ("ps_cache_purge", "filters")]
)
async def test_a_profiles_filter_that_is_not_a_list_is_a_bad_request_naming_it(
    bridge: Bridge,  # noqa: F811
    method: str,
    key: str,
    profiles: Any,
) -> None:
    with pytest.raises(BridgeError) as error:
        await bridge.dispatch(method, {key: {"profiles": profiles}})
    assert error.value.kind == "bad_request", error.value
    assert error.value.message.startswith("profiles:")
