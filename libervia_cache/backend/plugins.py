"""Plugin loader of the reference daemon.

Plugins are found through the entry point group :data:`ENTRY_POINT_GROUP`, like any
third-party plugin: each entry point names a module holding a ``PLUGIN_INFO`` dict::

    PLUGIN_INFO = {
        "name": "Pubsub cache",          # human name
        "import_name": "PUBSUB_CACHE",   # key in host.plugins, named by dependencies
        "dependencies": ["XEP-0060"],    # import names that must load first
        "recommendations": [],           # optional import names, loaded first if present
        "main": "PubsubCache",           # class of the module, constructed with host
        "description": "...",
    }

Plugins are constructed in dependency order. A plugin that fails (import error, bad
``PLUGIN_INFO``, exception in its constructor) is logged with its name and skipped,
unless another plugin depends on it: then :class:`PluginLoadError` names both and the
daemon stops. A dependency cycle or a dependency that is not installed is a
:class:`PluginLoadError` too. Recommendations are only an ordering hint.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from libervia_cache.errors import describe

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "PluginLoadError",
    "declared_config",
    "load_plugins",
]

log = logging.getLogger(__name__)

#: Entry point group where the daemon finds its plugins.
ENTRY_POINT_GROUP = "libervia.backend.plugins"


class PluginLoadError(Exception):
    """A plugin that others require could not be loaded (the message is one line)."""


class EntryPointLike(Protocol):
    """What the loader needs of an entry point (``importlib.metadata.EntryPoint``)."""

    @property
    def name(self) -> str: ...

    def load(self) -> Any: ...


@dataclass(frozen=True)
class PluginInfo:
    """A validated ``PLUGIN_INFO``, with the module it comes from."""

    name: str
    import_name: str
    main: str
    module: Any
    dependencies: tuple[str, ...] = ()
    recommendations: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``IMPORT_NAME (Human name)``, for messages."""
        return f"{self.import_name} ({self.name})"


class _BadPluginInfo(Exception):
    pass


def _string_list(info: dict[str, Any], key: str) -> tuple[str, ...]:
    value = info.get(key, [])
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _BadPluginInfo(f'PLUGIN_INFO["{key}"] must be a list of import names')
    return tuple(value)


def parse_plugin_info(module: Any) -> PluginInfo:
    """Validate the ``PLUGIN_INFO`` of ``module``; raises ``ValueError`` if it is bad."""
    info = getattr(module, "PLUGIN_INFO", None)
    if not isinstance(info, dict):
        raise ValueError("module has no PLUGIN_INFO dict")
    try:
        for key in ("name", "import_name", "main"):
            if not isinstance(info.get(key), str) or not info[key]:
                raise _BadPluginInfo(f'PLUGIN_INFO["{key}"] must be a non-empty string')
        description = info.get("description", "")
        if not isinstance(description, str):
            raise _BadPluginInfo('PLUGIN_INFO["description"] must be a string')
        dependencies = _string_list(info, "dependencies")
        recommendations = _string_list(info, "recommendations")
    except _BadPluginInfo as e:
        raise ValueError(str(e)) from None
    main_class = getattr(module, info["main"], None)
    if not callable(main_class):
        raise ValueError(f'PLUGIN_INFO["main"] names {info["main"]!r}, not a class of the module')
    known = {"name", "import_name", "main", "description", "dependencies", "recommendations"}
    return PluginInfo(
        name=info["name"],
        import_name=info["import_name"],
        main=info["main"],
        module=module,
        dependencies=dependencies,
        recommendations=recommendations,
        description=description,
        extra={k: v for k, v in info.items() if k not in known},
    )


def _discover(
    entry_points: Iterable[EntryPointLike], quiet: bool = False
) -> tuple[dict[str, PluginInfo], dict[str, str]]:
    """Import every entry point: (valid plugins by import name, failures by name)."""
    plugins: dict[str, PluginInfo] = {}
    failures: dict[str, str] = {}
    for entry_point in entry_points:
        try:
            info = parse_plugin_info(entry_point.load())
        except Exception as e:
            reason = describe(e)
            if quiet:
                failures[entry_point.name] = reason
                continue
            log.error("plugin %s failed to load, skipped: %s", entry_point.name, reason)
            log.debug("plugin %s import failure", entry_point.name, exc_info=True)
            failures[entry_point.name] = reason
            continue
        if info.import_name != entry_point.name and not quiet:
            log.warning(
                "plugin entry point %s declares import name %s; using %s",
                entry_point.name,
                info.import_name,
                info.import_name,
            )
        if info.import_name in plugins:
            reason = f"duplicate import name, already provided by {plugins[info.import_name].label}"
            if not quiet:
                log.error("plugin %s skipped: %s", info.label, reason)
            continue
        plugins[info.import_name] = info
    return plugins, failures


def _check_dependencies(plugins: dict[str, PluginInfo], failures: dict[str, str]) -> None:
    for info in plugins.values():
        for dependency in info.dependencies:
            if dependency in plugins:
                continue
            if dependency in failures:
                raise PluginLoadError(
                    f"plugin {info.label} requires plugin {dependency}, which failed to "
                    f"load: {failures[dependency]}"
                )
            raise PluginLoadError(
                f"plugin {info.label} requires plugin {dependency}, which is not installed"
            )


def dependency_order(plugins: dict[str, PluginInfo]) -> list[PluginInfo]:
    """Order ``plugins`` so that dependencies (and present recommendations) come first.

    Plugins otherwise keep their given order. Raises :class:`PluginLoadError` on a
    cycle of dependencies; a recommendation that would close a cycle is ignored.
    Every dependency must be in ``plugins`` (unknown names are skipped here).
    """
    ordered: list[PluginInfo] = []
    done: set[str] = set()
    path: list[str] = []  # the current chain of dependencies being visited

    def visit(import_name: str, required: bool) -> None:
        if import_name in done:
            return
        if import_name in path:
            if not required:
                return  # a recommendation closing a loop is only a hint: drop it
            cycle = [*path[path.index(import_name) :], import_name]
            raise PluginLoadError(f"plugin dependency cycle: {' -> '.join(cycle)}")
        info = plugins[import_name]
        path.append(import_name)
        for dependency in info.dependencies:
            if dependency in plugins:
                visit(dependency, required=True)
        for recommendation in info.recommendations:
            if recommendation in plugins:
                visit(recommendation, required=False)
        path.pop()
        done.add(import_name)
        ordered.append(info)

    for import_name in plugins:
        visit(import_name, required=True)
    return ordered


def declared_config(
    entry_points: Iterable[EntryPointLike] | None = None,
) -> dict[str, tuple[Any, ...]]:
    """The configuration sections the plugins declare in ``PLUGIN_INFO["config"]``
    (``{section: (hostapi.ConfigKey, ...)}``), merged; plugins that fail to load declare
    nothing (they are reported when the daemon loads them)."""
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    plugins, __ = _discover(entry_points, quiet=True)
    declared: dict[str, tuple[Any, ...]] = {}
    for info in plugins.values():
        config = info.extra.get("config") or {}
        if not isinstance(config, dict):
            continue
        for section, keys in config.items():
            declared[section] = (*declared.get(section, ()), *keys)
    return declared


def load_plugins(
    host: Any, entry_points: Iterable[EntryPointLike] | None = None
) -> dict[str, object]:
    """Load the plugins of :data:`ENTRY_POINT_GROUP` and construct them with ``host``.

    Returns ``{import_name: instance}`` in load order. When ``host.plugins`` is a
    mutable mapping, each instance is also put there as soon as it is constructed, so
    that a plugin's constructor can reach the plugins it depends on.
    ``entry_points`` defaults to the installed entry points (injectable for tests).

    Raises :class:`PluginLoadError` (one-line message naming the plugins) when a
    required plugin fails, is missing, or dependencies form a cycle; other failing
    plugins are logged with their name and skipped.
    """
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    plugins, failures = _discover(entry_points)
    _check_dependencies(plugins, failures)
    order = dependency_order(plugins)

    registry = getattr(host, "plugins", None)
    if not isinstance(registry, MutableMapping):
        registry = None
    loaded: dict[str, object] = {}
    dependents: dict[str, list[PluginInfo]] = {}
    for info in order:
        for dependency in info.dependencies:
            dependents.setdefault(dependency, []).append(info)

    for info in order:
        main_class = getattr(info.module, info.main)
        try:
            instance = main_class(host)
        except Exception as e:
            reason = describe(e)
            if info.import_name in dependents:
                log.error("plugin %s failed to start", info.label, exc_info=True)
                names = ", ".join(d.label for d in dependents[info.import_name])
                raise PluginLoadError(
                    f"plugin {names} requires plugin {info.label}, which failed to start: {reason}"
                ) from e
            log.error("plugin %s failed to start, skipped: %s", info.label, reason)
            log.debug("plugin %s start failure", info.label, exc_info=True)
            continue
        loaded[info.import_name] = instance
        if registry is not None:
            registry[info.import_name] = instance
        log.info("plugin %s loaded", info.label)
    return loaded
