"""Builds reshaper._native, the one C extension (cffi API mode, run by pip from setup.py).

It holds the engine (rules/engine/), ring mode's loop (ring/), the device
settings and privileges every mode uses (reshaper/offloads.c, privileges.c) and
the kernel module's netlink contract (kmod/reshaper_genl.h). The cdef is taken
from the public headers themselves (HEADERS), so the constants, structs and
prototypes Python sees are the ones the C is compiled with: none is copied into
Python. Private headers (ring/ring_internal.h) are compiled, never given to cffi.
"""
import pathlib
import re

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADERS = ("rules/engine/rs_program.h", "rules/engine/rs_dist_tables.h", "ring/ring.h", "reshaper/offloads.h",
           "reshaper/privileges.h", "kmod/reshaper_genl.h")
SOURCES = ("rules/engine/engine.c", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "ring").glob("*.c")),
           "reshaper/offloads.c", "reshaper/privileges.c")


def header_cdef(header_text: str) -> str:
    """The C declarations of a header that cffi's parser accepts: integer #defines become
    `#define NAME ...` (their values come from the compiler), other preprocessor lines go, and a
    constant table's values too (`T name[N] = {...};` becomes `T name[...];`, its length the compiler's)."""
    text = re.sub(r"/\*.*?\*/", "", header_text, flags=re.S)
    text = re.sub(r"\[\w+\]\s*=\s*\{.*?\};", "[...];", text, flags=re.S)
    defines = sorted(set(re.findall(r"^#define\s+((?:RS|RESHAPER)_[A-Z0-9_]+)[ \t]+[^\s\"]", text, flags=re.M)))
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return "\n".join(f"#define {name} ..." for name in defines) + "\n" + body


ffibuilder = FFI()
ffibuilder.cdef("typedef uint64_t __u64;\nstatic const char *const reshaper_genl_name;\n"
                + "\n".join(header_cdef((ROOT / h).read_text()) for h in HEADERS))
ffibuilder.set_source(
    "reshaper._native",
    "#include <linux/types.h>\n"
    + "".join(f'#include "{pathlib.Path(h).name}"\n' for h in HEADERS)
    + "static const char *const reshaper_genl_name = RESHAPER_GENL_NAME;\n",
    # relative to the project root, where pip runs the build
    sources=list(SOURCES),
    include_dirs=sorted({str(pathlib.Path(h).parent) for h in HEADERS}),
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
