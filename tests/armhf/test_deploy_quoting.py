"""deploy/beaglebone/deploy.sh with hostile file names, no board: `ssh` and `scp` on
PATH are stand-ins that run each remote command with `bash -c` in a directory
playing the board, and copy files there. The names carry quotes, spaces, `$(...)`
and backticks whose commands would create a marker file in the home directory of
whichever shell ran them (here or on the "board"); a copy of deploy.sh runs
beside a stub install.sh that records its arguments and the rule file it got.
The same deploy against the emulated board is in test_board_deploy.py."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BB = REPO / "deploy/beaglebone"
DEPLOY = BB / "deploy.sh"
MARKER = "rs-injected"
# each would run `touch rs-injected` in $HOME if a shell parsed it; the first has balanced
# quotes (it runs), the second an odd one (it breaks an unquoted command line, then runs)
HOSTILE = [f"r $(cd;touch {MARKER}).yaml",
           f"it's new rules $(cd;touch {MARKER}) `cd;touch {MARKER}` \"q\"; touch {MARKER}; x.yaml"]
RDIR_RE = re.compile(r"^/tmp/reshaper-deploy\.[A-Za-z0-9]{6}$")

FAKE_SSH = r"""#!/bin/bash
# ssh [options] [--] HOST COMMAND...: the board's shell runs COMMAND (its words joined by
# spaces, as ssh sends them) in the board's home, with the board's tools first on PATH
while [ $# -gt 0 ]; do
  case $1 in
    -[oipFlJ]) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
shift   # HOST
printf '%s\0' "$*" >>"$FAKE_BOARD/commands"
cd "$FAKE_BOARD/home" && HOME=$FAKE_BOARD/home PATH=$FAKE_BOARD/bin:$PATH exec bash -c "$*"
"""
FAKE_SCP = r"""#!/bin/bash
# scp [options] FILE... HOST:DIR/ : copies into DIR under each FILE's own name
files=()
while [ $# -gt 0 ]; do
  case $1 in
    -[oPiFlJ]) shift 2 ;;
    -*) shift ;;
    *) files+=("$1"); shift ;;
  esac
done
target=${files[-1]}; unset 'files[-1]'
printf '%s\0' "${files[@]##*/}" >>"$FAKE_BOARD/copied"
cp -- "${files[@]}" "${target#*:}"
"""
STUB_INSTALL = r"""#!/bin/bash
# stands in for install.sh: its arguments, and the rule file it was given
printf '%s\0' "$@" >"$FAKE_BOARD/install-args"
while [ $# -gt 0 ]; do
  if [ "$1" = --rules ]; then cp -- "$2" "$FAKE_BOARD/installed-rules.yaml"; fi
  if [ "$1" = --rules-files ]; then cp -- "$2" "$FAKE_BOARD/installed-rules-files.tar.gz"; fi
  shift
done
"""
BOARD_TOOLS = {
    "systemctl": "#!/bin/sh\necho active\n",
    "sudo": '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n',
}


@pytest.fixture
def world(tmp_path):
    """The deploying machine (a copy of deploy.sh beside the stub install.sh, fake ssh and
    scp on PATH, its own HOME and TMPDIR) and the "board" directory."""
    def write(path: Path, text: str, mode: int = 0o755) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    repo = tmp_path / "repo"
    (repo / "deploy/beaglebone").mkdir(parents=True)
    shutil.copy(DEPLOY, repo / "deploy/beaglebone/deploy.sh")
    write(repo / "deploy/beaglebone/install.sh", STUB_INSTALL)
    (repo / ".venv").symlink_to(REPO / ".venv")   # deploy.sh validates with REPO/.venv/bin/reshaper
    board = tmp_path / "board"
    for name, text in BOARD_TOOLS.items():
        write(board / "bin" / name, text)
    (board / "home").mkdir()
    here_bin = tmp_path / "bin"
    write(here_bin / "ssh", FAKE_SSH)
    write(here_bin / "scp", FAKE_SCP)
    for d in ("home", "tmp", "files"):
        (tmp_path / d).mkdir()
    env = dict(os.environ, PATH=f"{here_bin}:{os.environ['PATH']}", HOME=str(tmp_path / "home"),
               TMPDIR=str(tmp_path / "tmp"), FAKE_BOARD=str(board))
    env.pop("RESHAPER_SSH_OPTS", None)

    class World:
        root, files = tmp_path, tmp_path / "files"

        @staticmethod
        def deploy(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["bash", str(repo / "deploy/beaglebone/deploy.sh"), *args], cwd=tmp_path / "files",
                                  env=env, capture_output=True, text=True, timeout=120)

        @staticmethod
        def read0(name: str) -> list[str]:
            f = board / name
            return f.read_text().split("\0")[:-1] if f.exists() else []

        @staticmethod
        def installed_rules() -> bytes:
            return (board / "installed-rules.yaml").read_bytes()

        @staticmethod
        def injected() -> list[Path]:
            """Marker files anywhere in the test's tree (both homes, the board, the copies)."""
            return list(tmp_path.rglob(MARKER))

    return World()


def hostile_rules(world, name: str = HOSTILE[1]) -> tuple[Path, bytes]:
    rules = world.files / name
    rules.write_bytes((BB / "rules.example.yaml").read_bytes())
    return rules, rules.read_bytes()


def fake_bundle(world) -> Path:
    """A bundle like build.sh's (one top directory), with the stub install.sh, under a hostile name."""
    top = world.root / "bundle-src/reshaper-beaglebone-0.1.0"
    top.mkdir(parents=True)
    (top / "install.sh").write_text(STUB_INSTALL)
    bundle = world.files / f"bundle $(cd;touch {MARKER}) `touch {MARKER}`.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return bundle


def check_not_injected(world, r: subprocess.CompletedProcess) -> None:
    assert world.injected() == [], (world.injected(), world.read0("commands"))
    assert r.returncode == 0, r.stdout + r.stderr
    # no file name of this machine went into a remote command line
    for command in world.read0("commands"):
        assert MARKER not in command and "it's" not in command and "$(" not in command, command


def check_clean(rdir: str, world) -> None:
    assert RDIR_RE.match(rdir), rdir
    assert not Path(rdir).exists()                       # the board's temporary directory is removed
    assert list((world.root / "tmp").iterdir()) == []    # and so is the local staging directory


@pytest.mark.parametrize("name", HOSTILE, ids=["dollar-paren", "odd-quote"])
def test_full_deploy_hostile_rule_and_bundle_names(world, name):
    rules, content = hostile_rules(world, name)
    bundle = fake_bundle(world)
    r = world.deploy("root@board", str(rules), "--mode", "ring", "--vlans", "100,200", "--bundle", str(bundle))
    check_not_injected(world, r)
    args = world.read0("install-args")
    assert args[:5] == ["--mode", "ring", "--interface", "eth0", "--rules"] and args[6:] == ["--vlans", "100,200"], \
        (args, r.stdout, r.stderr)
    rdir = str(Path(args[5]).parent)
    assert args[5] == f"{rdir}/rules.yaml"
    assert world.read0("copied") == ["bundle.tar.gz", "rules.yaml"]
    assert world.installed_rules() == content        # the rule file arrived, whole, under its fixed name
    check_clean(rdir, world)


@pytest.mark.parametrize("name", HOSTILE, ids=["dollar-paren", "odd-quote"])
@pytest.mark.parametrize("mode", [None, "kernel"])
def test_rules_only_hostile_name(world, mode, name):
    rules, content = hostile_rules(world, name)
    r = world.deploy("root@board", str(rules), "--rules-only", *(["--mode", mode] if mode else []))
    check_not_injected(world, r)
    args = world.read0("install-args")
    assert args[:2] == ["--rules-only", "--rules"] and args[3:] == (["--mode", mode] if mode else []), \
        (args, r.stdout, r.stderr)
    rdir = str(Path(args[2]).parent)
    assert args[2] == f"{rdir}/rules.yaml"
    assert world.read0("copied") == ["install.sh", "rules.yaml"]
    assert world.installed_rules() == content
    check_clean(rdir, world)


def test_rollback(world):
    r = world.deploy("root@board", "--rollback")
    check_not_injected(world, r)
    assert world.read0("install-args") == ["--rollback"], (r.stdout, r.stderr)
    assert world.read0("copied") == ["install.sh"]
    (rdir,) = {c.split()[-1] for c in world.read0("commands") if c.startswith("rm -rf ")}
    check_clean(rdir, world)


def test_host_that_is_an_option_is_refused(world):
    rules, _ = hostile_rules(world)
    r = world.deploy(f"-oProxyCommand=touch {world.root}/home/{MARKER}", str(rules))
    assert r.returncode == 2 and "bad HOST" in r.stderr, r.stdout + r.stderr
    assert world.read0("commands") == [] and world.injected() == []


def test_board_answer_is_not_trusted_as_a_directory(world):
    """The board's mktemp answer goes into later command lines: anything but mktemp's own
    pattern stops the deploy before it is used."""
    fake = world.root / "board/bin/mktemp"
    fake.write_text(f"#!/bin/sh\necho '/tmp/reshaper-deploy.abc123; touch {MARKER}'\n")
    fake.chmod(0o755)
    rules, _ = hostile_rules(world)
    r = world.deploy("root@board", str(rules), "--rules-only")
    assert r.returncode == 1 and "unexpected temporary directory" in r.stderr, r.stdout + r.stderr
    assert world.read0("commands") == ["true", "mktemp -d /tmp/reshaper-deploy.XXXXXX"]
    assert world.read0("copied") == [] and world.injected() == []


# a rule file whose schedule file and delivery trace have names a shell would run, one in a folder
NAMED = {f"phases of it's $(cd;touch {MARKER}).csv": "for,delay\n1s,10ms\n",
         f"links/`touch {MARKER}` up.trace": "1\n2\n"}


def rules_naming_files(world) -> Path:
    for name, text in NAMED.items():
        (world.files / name).parent.mkdir(parents=True, exist_ok=True)
        (world.files / name).write_text(text)
    rules, _ = hostile_rules(world, HOSTILE[0])
    quoted = [json.dumps(name) for name in NAMED]   # JSON strings are YAML double-quoted strings
    rules.write_text(rules.read_text() + f"  - {{name: scheduled, match: {{ip_proto: udp, dst_port: 7000}}, "
                     f"schedule: {{file: {quoted[0]}}}}}\n"
                     f"  - {{name: traced, match: {{ip_proto: udp, dst_port: 7001}}, "
                     f"actions: [{{rate: {{trace: {quoted[1]}}}}}]}}\n")
    return rules


@pytest.mark.parametrize("rules_only", [False, True], ids=["full", "rules-only"])
def test_the_files_a_rule_file_names_go_with_it(world, rules_only):
    """A schedule file and a delivery trace the rule file names travel in a tarball, by the names it
    gives them, and install.sh is told where it is; no name goes into a command line."""
    rules = rules_naming_files(world)
    if rules_only:
        r = world.deploy("root@board", str(rules), "--rules-only")
    else:
        r = world.deploy("root@board", str(rules), "--bundle", str(fake_bundle(world)))
    check_not_injected(world, r)
    args = world.read0("install-args")
    rdir = str(Path(args[args.index("--rules") + 1]).parent)
    assert args[args.index("--rules-files") + 1] == f"{rdir}/rules-files.tar.gz", args
    assert world.read0("copied")[-2:] == ["rules.yaml", "rules-files.tar.gz"]
    with tarfile.open(world.root / "board/installed-rules-files.tar.gz") as tar:
        got = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
    assert got == NAMED
    check_clean(rdir, world)


def test_a_named_file_outside_the_rule_files_folder_is_refused(world):
    (world.root / "elsewhere.csv").write_text("for\n1s\n")
    rules, _ = hostile_rules(world)
    rules.write_text(rules.read_text() + "  - {name: s, schedule: {file: ../elsewhere.csv}}\n")
    r = world.deploy("root@board", str(rules), "--rules-only")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "names ../elsewhere.csv, which is not under its directory" in r.stderr and "nothing deployed" in r.stderr
    assert world.read0("commands") == [] and world.read0("copied") == []
