"""Builds rules._engine, the C engine for Python (cffi API mode, run by pip).

The cdef is taken from rs_program.h itself, so the constants, structs and
prototypes Python sees are the ones the engine is compiled with.
"""
import pathlib
import re

from cffi import FFI

ENGINE_DIR = pathlib.Path(__file__).resolve().parent / "engine"


def engine_cdef(header_text):
    """C declarations of rs_program.h that cffi's parser accepts."""
    text = re.sub(r"/\*.*?\*/", "", header_text, flags=re.S)
    defines = sorted(set(re.findall(r"^#define\s+(RS_[A-Z0-9_]+)[ \t]+\S", text, flags=re.M)))
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return "\n".join(f"#define {name} ..." for name in defines) + "\n" + body


ffibuilder = FFI()
ffibuilder.cdef(engine_cdef((ENGINE_DIR / "rs_program.h").read_text()))
ffibuilder.set_source(
    "rules._engine",
    '#include "rs_program.h"',
    # relative to the project root, where pip runs the build
    sources=["rules/engine/engine.c"],
    include_dirs=["rules/engine"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
