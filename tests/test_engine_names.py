"""No name of the engine can collide with its surroundings (see tests/helpers/engine_names.py);
the kernel side of this is checked against the newest Debian headers in
tests/kmod/test_kmod.py (amd64) and tests/armhf/test_kmod_armhf.py (armmp)."""
import subprocess

from tests.helpers.engine_names import (ENGINE, PREFIX, collisions, engine_files, file_scope_names,
                                macro_names, own_macros)


def test_every_file_scope_name_of_the_engine_is_prefixed():
    names = file_scope_names()
    kinds = {kind for _, kind, _ in names}
    assert {"FunctionDecl", "RecordDecl", "VarDecl"} <= kinds, names   # the dump was read
    assert ("engine.c", "FunctionDecl", "rs_run") in names
    assert [n for n in names if not PREFIX.match(n[2])] == []


def test_every_macro_of_the_engine_is_prefixed():
    macros = own_macros()
    assert "RS_MAGIC" in macros and "RS_ETH_HLEN" in macros
    assert sorted(m for m in macros if not PREFIX.match(m)) == []


def test_no_libc_macro_spells_an_engine_identifier():
    dm = subprocess.run(["gcc", "-E", "-dM", f"-I{ENGINE}", str(ENGINE / "engine.c")],
                        capture_output=True, text=True, check=True).stdout
    libc = macro_names(dm)
    assert "UINT32_MAX" in libc
    assert collisions(libc) == {}


def test_a_colliding_macro_is_found():
    """The check itself: a macro spelling engine identifiers is reported per file,
    a keyword the kernel redefines (inline) and the engine's own macros are not."""
    assert collisions({"rs_run", "uint8_t", "inline", "RS_MAGIC"}) == \
        {"engine.c": ["rs_run", "uint8_t"], "rs_program.h": ["rs_run", "uint8_t"]}
    assert [p.name for p in engine_files()] == ["engine.c", "rs_dist_tables.h", "rs_program.h"]
