"""Loading a hook's function, only from the directories of `hooks_path`.

A hook module is never looked for in the working directory or on sys.path,
and one that has been loaded before is loaded afresh, so that a reload picks
up an edited hook (bridge/hooks.py runs the functions).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys

from reshaper.bridge.appliance import SetupError

_LOADED: set[str] = set()  # top-level modules load_hook imported from hooks_path


class HookLoadError(SetupError):
    pass


def _moved(exc: BaseException) -> str:
    """A hint for hooks written against the names of earlier versions (bridge.hooks.Reply)."""
    if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == "bridge":
        return " (hooks import Reply from reshaper.hook: the appliance's modules are reshaper.bridge.*)"
    return ""


def load_hook(call: str, paths: list[str]):
    """The function named "package.module:function", found only under paths."""
    module_name, _, function = call.partition(":")
    top = module_name.split(".")[0]
    roots = [os.path.abspath(p) for p in paths]
    if top in _LOADED:
        # ours from an earlier load: load afresh, so a reload picks up edited hooks
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
        _LOADED.discard(top)
    loaded = sys.modules.get(top)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None) or ""
        if not any(os.path.abspath(origin).startswith(root + os.sep) for root in roots):
            raise HookLoadError(f"hook module {top!r} is already imported from elsewhere ({origin or 'built in'}); "
                                f"rename the hook module")
    else:
        spec = importlib.machinery.PathFinder.find_spec(top, roots)
        if spec is None:
            raise HookLoadError(f"no module {top!r} in hooks_path ({', '.join(roots)})")
        module = importlib.util.module_from_spec(spec)
        sys.modules[top] = module
        _LOADED.add(top)
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            del sys.modules[top]
            _LOADED.discard(top)
            raise HookLoadError(f"loading {top!r} failed: {exc.__class__.__name__}: {exc}{_moved(exc)}") from None
    try:
        module = importlib.import_module(module_name)  # submodules resolve inside the package found above
        fn = getattr(module, function)
    except (ImportError, AttributeError) as exc:
        raise HookLoadError(f"cannot load hook {call!r}: {exc}") from None
    if not callable(fn):
        raise HookLoadError(f"hook {call!r} is not a function")
    return fn
