"""The engine's names against the names of what it is compiled with.

The engine (rules/engine/engine.c and its rs_*.h headers) is compiled into the
kernel module against whatever headers Debian ships next. A kernel macro that
happens to spell one of the engine's identifiers rewrites the engine's text
(Debian's 6.1.0-57 headers added `field_get()`, which broke the armhf build).
So: every file-scope name of the engine carries the rs_ prefix, and no
identifier in the engine's text is a macro of the compiler's surroundings.
rs_compat.h is the one file that names the surroundings on purpose.
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "rules/engine"
BOUNDARY = "rs_compat.h"       # maps the engine's few needs to the kernel or libc
PREFIX = re.compile(r"rs_", re.I)
# C keywords: the kernel redefines some (inline, asm); they are not names the engine chose
C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern
float for goto if inline int long register restrict return short signed sizeof static struct
switch typedef union unsigned void volatile while _Bool _Static_assert asm""".split())
_COMMENT_OR_LITERAL = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
_IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*\b")
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)", re.M)


def engine_files() -> list[Path]:
    """The engine's own text: what the module compiles, less the boundary (no harnesses)."""
    return [ENGINE / "engine.c"] + sorted(p for p in ENGINE.glob("rs_*.h") if p.name != BOUNDARY)


def identifiers(path: Path) -> set[str]:
    """Every identifier in a C file's code (comments and literals left out)."""
    return set(_IDENTIFIER.findall(_COMMENT_OR_LITERAL.sub(" ", path.read_text())))


def own_macros() -> set[str]:
    return {m for p in engine_files() + [ENGINE / BOUNDARY] for m in _DEFINE.findall(p.read_text())}


def macro_names(dm_output: str) -> set[str]:
    """Macro names in `cpp -dM` output."""
    return set(re.findall(r"^#define (\w+)", dm_output, re.M))


def collisions(foreign_macros: set[str]) -> dict[str, list[str]]:
    """{engine file: identifiers of its text that a foreign macro would rewrite}."""
    clash = foreign_macros - own_macros() - C_KEYWORDS
    found = {p.name: sorted(identifiers(p) & clash) for p in engine_files()}
    return {name: names for name, names in found.items() if names}


def file_scope_names() -> list[tuple[str, str, str]]:
    """(file, kind, name) of every file-scope declaration of the user-space engine
    translation unit that lies in rules/engine, from clang's AST."""
    out = subprocess.run(["clang", "-Xclang", "-ast-dump=json", "-fsyntax-only", f"-I{ENGINE}",
                          str(ENGINE / "engine.c")], capture_output=True, text=True, check=True).stdout
    found: list[tuple[str, str, str]] = []
    current = [""]

    def follow(loc) -> None:
        # the dump names a location's file only when it changes: track it in dump order
        if isinstance(loc, dict):
            if "file" in loc and ("line" in loc or "offset" in loc):
                current[0] = loc["file"]
            for key, value in loc.items():
                if key != "inner":
                    follow(value)
        elif isinstance(loc, list):
            for value in loc:
                follow(value)

    def walk(node: dict, top: bool) -> None:
        for key in ("loc", "range"):
            follow(node.get(key))
        if top and node.get("name") and not node.get("isImplicit"):
            found.append((current[0], node["kind"], node["name"]))
        for child in node.get("inner", []):
            if top and node.get("kind") == "EnumDecl":
                walk(child, True)     # enum constants are file-scope names too
            else:
                walk(child, False)

    for node in json.loads(out)["inner"]:
        walk(node, True)
    return [(Path(f).name, kind, name) for f, kind, name in found if Path(f).resolve().parent == ENGINE]


def kernel_macros(kdir: Path, make_vars: tuple[str, ...] = ()) -> set[str]:
    """Every macro defined where the module compiles the engine (rs_engine.c), as
    Kbuild compiles it against the headers tree kdir (make_vars: ARCH=, CROSS_COMPILE=)."""
    with tempfile.TemporaryDirectory(prefix="reshaper-kmacros-") as tmp:
        src = Path(tmp) / "src"
        subprocess.run(["make", "-s", "-C", str(REPO / "kmod"), "dkms-src", f"DEST={src}"],
                       check=True, capture_output=True)
        r = subprocess.run(["make", "-C", str(kdir), f"M={src}", *make_vars, "KCFLAGS=-dM", "rs_engine.i"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return macro_names((src / "rs_engine.i").read_text())
