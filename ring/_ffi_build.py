"""Builds ring._ring: the ring-mode loop and the same C engine (cffi API mode, run by pip)."""
import importlib.util
import pathlib

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _engine_build():
    """rules/_ffi_build.py, loaded by path: the build runs without the package importable."""
    spec = importlib.util.spec_from_file_location("_rules_ffi_build", ROOT / "rules" / "_ffi_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


engine_cdef = _engine_build().engine_cdef
ffibuilder = FFI()
ffibuilder.cdef(engine_cdef((ROOT / "rules" / "engine" / "rs_program.h").read_text())
                + engine_cdef((ROOT / "ring" / "ring.h").read_text()))
ffibuilder.set_source(
    "ring._ring",
    '#include "rs_program.h"\n#include "ring.h"',
    # relative to the project root, where pip runs the build
    sources=["ring/ring.c", "rules/engine/engine.c"],
    include_dirs=["ring", "rules/engine"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
