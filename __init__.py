"""ComfyUI-OTCache: skip diffusion-transformer work on scheduled steps and reuse cached results.

ComfyUI loads this folder as a package: it exports ``comfy_entrypoint`` (the
node list) and ``WEB_DIRECTORY`` (the plot widget) and nothing else. The nodes
are imported when ComfyUI asks for them, not when this module is imported, so
importing the package has no side effects. Should they fail to import (a
requirement missing, say), ComfyUI must still start: one log line says why and
what to do, and the pack offers no nodes.
"""
import logging

WEB_DIRECTORY = "./web"

try:
    from comfy_api.latest import ComfyExtension as _Base
except Exception:  # noqa: BLE001 - outside ComfyUI (or one without the V3 API) the module stays importable
    _Base = object

_log = logging.getLogger("otcache")


def _load_nodes() -> list:
    try:
        from .nodes import NODE_CLASSES
        from .nodes.routes import register_routes
    except Exception as e:  # noqa: BLE001 - any import failure must leave ComfyUI running
        _log.warning(f"OTCache: nodes not loaded ({type(e).__name__}: {e}); ComfyUI starts without them. "
                     "Install the pack's requirements (pip install -r requirements.txt in the pack folder) "
                     "and restart.")
        return []
    register_routes()
    return [cls for cls in NODE_CLASSES if _schema_ok(cls)]


def _schema_ok(cls) -> bool:
    """One node with a bad schema must not take the pack's other nodes down with it."""
    try:
        cls.GET_SCHEMA()
        return True
    except Exception as e:  # noqa: BLE001
        _log.warning(f"OTCache: node {cls.__name__} not loaded ({type(e).__name__}: {e})")
        return False


class _OTCacheExtension(_Base):
    async def get_node_list(self) -> list:
        return _load_nodes()


async def comfy_entrypoint() -> _OTCacheExtension:
    return _OTCacheExtension()


__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
