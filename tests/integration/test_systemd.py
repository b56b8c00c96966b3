"""The systemd units and systemd/install.sh, checked without a running systemd.

- install.sh runs into a temporary DESTDIR root with a stub interpreter in place of python3
  (so no venv is really built and nothing reaches the network): the files, modes and owners
  it leaves, idempotence, --dry-run, --uninstall, --prefix.
- ``systemd-analyze verify`` and ``systemd-analyze security --offline=yes`` read the units
  as the installer left them, with ``--root=`` pointing at a copy of that root. There the
  ExecStart= programs exist (the stub venv), and the host's own units are copied in so that
  sysinit.target and friends (every service's default dependencies) resolve. verify's exit
  code ignores unknown directives (a warning only), so its output must be empty too.

Without ``systemd-analyze`` (Debian/Ubuntu package ``systemd``; ``make test`` installs it when
run as root) the unit checks are skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
INSTALL = SYSTEMD / "install.sh"
UNITS = ("detection-agent.service", "detection-agent-engine.service", "jetson-performance.service")
UNIT_DIR = "etc/systemd/system"
# `systemd-analyze security --offline=yes` on detection-agent.service measured 1.5 ("OK") with
# systemd 252 (Debian 12); the goal is 2.5 or lower. The score is printed rounded to 0.1 and
# dropping one sandboxing directive adds 0.1-2.0, so with that systemd the limit is 1.6; other
# versions weigh the checks differently and are held to the goal.
EXPOSURE_SYSTEMD = 252
EXPOSURE_MEASURED = 1.5
EXPOSURE_MARGIN = 0.1
EXPOSURE_GOAL = 2.5

pytestmark = pytest.mark.integration

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed "
                                   "(apt-get install systemd; `make test` does it when run as root)")

# Stands in for python3 and for the venv's python: records its arguments, makes what `-m venv`
# and `-m pip install --no-deps` would make, and answers import checks (cv2 yes, tensorrt no).
STUB_PYTHON = r"""#!/usr/bin/env bash
echo "python $*" >> "$STUB_LOG"
if [[ $1 == -m && $2 == venv ]]; then
    dir="${*: -1}"
    mkdir -p "$dir/bin"
    cp "$0" "$dir/bin/python"
    printf 'include-system-site-packages = true\n' > "$dir/pyvenv.cfg"
elif [[ $1 == -m && $2 == pip && " $* " == *" --no-deps "* ]]; then
    printf '#!/bin/sh\nexit 0\n' > "$(dirname "$0")/detection-agent"
    chmod 755 "$(dirname "$0")/detection-agent"
elif [[ $1 == -c ]]; then
    case "$2" in *tensorrt*|*pycuda*) exit 1 ;; esac
fi
exit 0
"""


class Installer:
    """Runs install.sh against one DESTDIR with the stub interpreter."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.log = tmp / "stub.log"
        self.python = tmp / "bin" / "python3"
        self.python.parent.mkdir(parents=True, exist_ok=True)
        self.python.write_text(STUB_PYTHON, encoding="utf-8")
        self.python.chmod(0o755)
        self.log.touch()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "DESTDIR": str(self.root), "PYTHON": str(self.python), "STUB_LOG": str(self.log)}
        done = subprocess.run(["bash", str(INSTALL), *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def calls(self) -> List[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


def manifest(root: Path) -> Dict[str, Tuple[str, int, int, int, Optional[str]]]:
    """Every path under root: type, mode, uid, gid, symlink target (no times: they change)."""
    entries = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
        target = os.readlink(path) if kind == "l" else None
        entries[str(path.relative_to(root))] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, target)
    return entries


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def installer(tmp_path: Path) -> Installer:
    return Installer(tmp_path)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Installer, subprocess.CompletedProcess]:
    inst = Installer(tmp_path_factory.mktemp("install"))
    return inst, inst.run()


# -- install.sh -----------------------------------------------------------------------------------

Installed = Tuple[Installer, subprocess.CompletedProcess]


def test_install_lays_out_files_modes_and_owners(installed: Installed) -> None:
    inst, done = installed
    root = inst.root
    expected = {
        "etc/detection-agent": 0o750,
        "etc/detection-agent/agent.yaml": 0o640,
        "etc/detection-agent/agent.yaml.example": 0o640,
        "etc/detection-agent/agent.env": 0o600,  # secrets
        "var/lib/detection-agent": 0o750,
        "opt/detection-agent/docs/deployment.md": 0o644,
        **{f"{UNIT_DIR}/{unit}": 0o644 for unit in UNITS},
    }
    for rel, want in expected.items():
        assert (root / rel).exists(), rel
        assert mode(root / rel) == want, f"{rel}: {oct(mode(root / rel))}, expected {oct(want)}"
    conf = root / "etc/detection-agent"
    assert (conf / "agent.yaml").read_bytes() == (REPO / "configs/agent.yaml").read_bytes()
    assert (conf / "agent.env").read_bytes() == (SYSTEMD / "agent.env.example").read_bytes()
    assert os.access(root / "opt/detection-agent/venv/bin/detection-agent", os.X_OK)
    if os.geteuid() == 0:  # root-owned files really are; the service user's are announced, not made
        for rel in ("etc/detection-agent/agent.env", f"{UNIT_DIR}/detection-agent.service"):
            assert ((root / rel).stat().st_uid, (root / rel).stat().st_gid) == (0, 0), rel
    out = done.stdout
    assert re.search(r"skipped \(DESTDIR\): useradd --system .*--groups video .*detection-agent", out)
    assert re.search(r"skipped .*: chown root:detection-agent \S+/etc/detection-agent/agent.yaml\n", out)
    assert re.search(r"skipped .*: chown detection-agent:detection-agent \S+/var/lib/detection-agent\n", out)
    # enabled the way systemctl enable does it; the engine unit comes with the agent (Requires=),
    # the performance unit stays opt-in
    wants = root / UNIT_DIR / "multi-user.target.wants"
    assert os.readlink(wants / "detection-agent.service") == "/etc/systemd/system/detection-agent.service"
    assert sorted(p.name for p in wants.iterdir()) == ["detection-agent.service"]


def test_install_venv_uses_system_site_packages_and_not_pip_opencv(installed: Installed) -> None:
    inst, _ = installed
    calls = inst.calls()
    venv = [c for c in calls if " -m venv " in f" {c} "]
    assert venv == [f"python -m venv --system-site-packages {inst.root}/opt/detection-agent/venv"]
    pip = [c for c in calls if "-m pip install" in c]
    assert any("--no-deps" in c and c.endswith(str(REPO)) for c in pip), pip
    # JetPack's OpenCV (with GStreamer) is importable here: pip's must not be installed over it
    assert not any("opencv" in c for c in pip), pip


def test_install_dependency_list_matches_pyproject() -> None:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M)
    listed = re.search(r"^PY_DEPS=\((.*?)\)", INSTALL.read_text(encoding="utf-8"), re.M)
    assert block and listed
    declared = {d for d in re.findall(r'"([^"]+)"', block.group(1)) if not d.startswith("opencv")}
    assert set(re.findall(r'"([^"]+)"', listed.group(1))) == declared


def _requirements(text: str) -> List[str]:
    return re.findall(r'"([^"]+)"', text)


def _for_python(requirements: List[str], python: str) -> Dict[str, Any]:
    """name -> SpecifierSet of the requirements whose marker holds on that Python version."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    found: Dict[str, Any] = {}
    for text in requirements:
        req = Requirement(text)
        environment = {"python_version": python, "python_full_version": python}
        if req.marker is None or req.marker.evaluate(environment):
            found[req.name] = found.get(req.name, SpecifierSet()) & req.specifier
    return found


def test_numpy_stays_below_1_24_on_python_3_8() -> None:
    """TensorRT 8.4-8.5 (JetPack 5, Python 3.8) build tensorrt.nptype with np.bool, gone in numpy
    1.24-1.26: pyproject.toml and install.sh both cap numpy there, and only there."""
    block = re.search(r"^dependencies = \[(.*?)\]", (REPO / "pyproject.toml").read_text(encoding="utf-8"),
                      re.S | re.M)
    listed = re.search(r"^PY_DEPS=\((.*?)\)", INSTALL.read_text(encoding="utf-8"), re.M)
    assert block and listed
    for requirements in (_requirements(block.group(1)), _requirements(listed.group(1))):
        jetpack5 = _for_python(requirements, "3.8")["numpy"]
        jetpack6 = _for_python(requirements, "3.10")["numpy"]
        assert "1.23.5" in jetpack5 and "1.24.4" not in jetpack5 and "1.21.0" in jetpack5
        assert "1.26.4" in jetpack6 and "2.2.0" in jetpack6


def test_eval_extra_and_install_bring_a_coco_engine() -> None:
    """`eval` needs a COCO engine: faster-coco-eval from Python 3.8, hotcoco (fastest) from 3.10."""
    from agent.evaluate.coco import ENGINES

    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    extra = re.search(r"^eval = \[(.*?)\]", text, re.S | re.M)
    listed = re.search(r"^EVAL_DEPS=\((.*?)\)", INSTALL.read_text(encoding="utf-8"), re.M)
    assert extra and listed
    engines = {r for r in _requirements(extra.group(1)) if r.split(";")[0].split(">")[0].strip() in ENGINES}
    assert set(_requirements(listed.group(1))) == engines  # install.sh installs the extra's engines
    assert set(_for_python(sorted(engines), "3.8")) == {"faster-coco-eval"}
    assert set(_for_python(sorted(engines), "3.10")) == {"faster-coco-eval", "hotcoco"}


def test_install_installs_the_coco_engine_without_numpy_2(installed: Installed) -> None:
    inst, _ = installed
    pip = [c for c in inst.calls() if "-m pip install" in c and "--no-deps" not in c]
    assert any("faster-coco-eval>=1.6" in c and "hotcoco; python_version >= '3.10'" in c for c in pip), pip
    # JetPack's apt OpenCV is built against numpy 1.x: every dependency install keeps numpy below 2
    assert pip and all("numpy<2" in c for c in pip), pip


def test_install_twice_gives_the_same_tree(installer: Installer) -> None:
    installer.run()
    first = manifest(installer.root)
    again = installer.run()
    assert manifest(installer.root) == first
    assert "= kept /etc/detection-agent/agent.yaml" in again.stdout
    assert "= venv /opt/detection-agent/venv exists" in again.stdout
    assert sum(" -m venv " in c for c in installer.calls()) == 1


def test_install_keeps_edited_config_and_retightens_secrets(installer: Installer) -> None:
    installer.run()
    config = installer.root / "etc/detection-agent/agent.yaml"
    env = installer.root / "etc/detection-agent/agent.env"
    config.write_text("# edited on the device\n", encoding="utf-8")
    env.write_text("MQTT_PASSWORD=hunter2\n", encoding="utf-8")
    env.chmod(0o644)
    installer.run()
    assert config.read_text(encoding="utf-8") == "# edited on the device\n"
    assert env.read_text(encoding="utf-8") == "MQTT_PASSWORD=hunter2\n"
    assert mode(env) == 0o600


def test_dry_run_prints_every_action_and_changes_nothing(installer: Installer) -> None:
    done = installer.run("--dry-run")
    assert not installer.root.exists()
    assert installer.calls() == []  # not even `python -m venv`
    out = done.stdout
    for action in ("useradd --system", "install -d -m 0750 ", "install -m 0600 ", "install -m 0644 ",
                   "-m venv --system-site-packages", "pip install", "--no-deps", "systemctl --root="):
        assert action in out, action
    # on an installed tree too
    installer.run()
    before = manifest(installer.root)
    calls = len(installer.calls())
    installer.run("--dry-run")
    installer.run("--dry-run", "--uninstall")
    assert manifest(installer.root) == before
    assert not any(" -m " in c for c in installer.calls()[calls:])  # only import checks ran


def test_uninstall_removes_units_keeps_config_and_state(installer: Installer) -> None:
    installer.run()
    state = installer.root / "var/lib/detection-agent"
    (state / "model.engine").write_bytes(b"plan")
    config = installer.root / "etc/detection-agent/agent.yaml"
    config.write_text("# mine\n", encoding="utf-8")
    installer.run("--uninstall")
    left = [p for p in (installer.root / "etc/systemd").rglob("*") if p.name.endswith(".service")]
    assert left == []
    assert not (installer.root / "opt/detection-agent").exists()
    assert config.read_text(encoding="utf-8") == "# mine\n"
    assert mode(installer.root / "etc/detection-agent/agent.env") == 0o600
    assert (state / "model.engine").read_bytes() == b"plan"
    installer.run("--uninstall")  # twice: nothing left to do, still fine


def test_prefix_rewrites_the_units(installer: Installer) -> None:
    installer.run("--prefix", "/srv/agent")
    unit = (installer.root / UNIT_DIR / "detection-agent.service").read_text(encoding="utf-8")
    start = "ExecStart=/srv/agent/venv/bin/detection-agent run --config /etc/detection-agent/agent.yaml"
    assert start in unit.splitlines()
    assert "/opt/detection-agent" not in unit
    assert os.access(installer.root / "srv/agent/venv/bin/detection-agent", os.X_OK)


def test_refuses_bad_arguments(installer: Installer) -> None:
    assert installer.run("--frobnicate", check=False).returncode != 0
    assert installer.run("--prefix", "relative/path", check=False).returncode != 0
    assert not installer.root.exists()


def test_install_script_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    done = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout


# -- the units --------------------------------------------------------------------------------------

def directives(unit: str) -> Dict[str, List[str]]:
    """``Key`` -> every value it is given (units repeat keys; configparser cannot read them)."""
    found: Dict[str, List[str]] = {}
    for line in (SYSTEMD / unit).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_agent_unit_matches_the_agent() -> None:
    from agent.cli.main import build_parser

    unit = directives("detection-agent.service")
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    start, pre = unit["ExecStart"][0].split(), unit["ExecStartPre"][0].split()
    assert start[1:] == ["run", "--config", "/etc/detection-agent/agent.yaml"]
    assert pre[1:] == ["check-config", "/etc/detection-agent/agent.yaml"]
    parser = build_parser()  # the unit's command lines are ones the CLI accepts
    assert parser.parse_args(start[1:]).command == "run"
    assert parser.parse_args(pre[1:]).command == "check-config"
    assert unit["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    # the agent pings every WatchdogSec/2 while inference goes round; start-up is not watched
    watchdog = int(unit["WatchdogSec"][0])
    assert 10 <= watchdog <= 120 and int(unit["TimeoutStartSec"][0]) > watchdog
    assert int(unit["TimeoutStopSec"][0]) > 5  # the agent stops within 5 s
    assert unit["Restart"] == ["on-failure"] and "StartLimitBurst" in unit
    assert unit["EnvironmentFile"] == ["-/etc/detection-agent/agent.env"]
    assert unit["StateDirectory"] == ["detection-agent"] and unit["User"] == ["detection-agent"]
    assert unit["SupplementaryGroups"] == ["video"]
    assert unit["CapabilityBoundingSet"] == [""] and unit["MemoryDenyWriteExecute"] == ["no"]
    assert unit["DevicePolicy"] == ["closed"]
    allowed = " ".join(unit["DeviceAllow"])
    for node in ("char-video4linux", "char-17000000.*", "/dev/nvmap", "/dev/nvhost-ctrl-gpu",
                 "/dev/nvgpu/igpu0/ctrl", "char-nvhost*", "char-nvidia*"):
        assert node in allowed, node
    assert "detection-agent-engine.service" in unit["Requires"] and "MemoryMax" in unit


# What jetson_clocks does with $HOME (L4T's script: FAN_STATUS_FILE="${HOME}/.jetsonclocks_fan.txt",
# written by --store, read by --restore): the stub records the path it would write.
STUB_JETSON_CLOCKS = r"""#!/usr/bin/env bash
echo "jetson_clocks $* fan=${HOME}/.jetsonclocks_fan.txt" >> "$STUB_LOG"
"""


def test_performance_unit_gives_jetson_clocks_a_writable_home(tmp_path: Path) -> None:
    """Without HOME, jetson_clocks --store would write its fan state to /.jetsonclocks_fan.txt."""
    unit = directives("jetson-performance.service")
    env = dict(v.split("=", 1) for v in unit.get("Environment", []))
    assert "HOME" in env, "jetson_clocks writes $HOME/.jetsonclocks_fan.txt: the unit must set HOME"
    runtime = [f"/run/{d}" for d in " ".join(unit.get("RuntimeDirectory", [])).split()]
    state = [f"/var/lib/{d}" for d in " ".join(unit.get("StateDirectory", [])).split()]
    assert env["HOME"] in runtime + state  # a directory systemd creates for the unit, writable by it
    assert not env["HOME"].startswith(("/root", "/home"))  # ProtectHome=yes hides those
    # Run the unit's start and stop commands as systemd would, with a stub jetson_clocks.
    root = tmp_path / "root"
    stub = tmp_path / "jetson_clocks"
    stub.write_text(STUB_JETSON_CLOCKS, encoding="utf-8")
    stub.chmod(0o755)
    log = tmp_path / "stub.log"
    run_env = {"PATH": os.environ["PATH"], "STUB_LOG": str(log), "JETSON_CLOCKS": "1",
               **{k: v.replace("/run/", f"{root}/run/") for k, v in env.items()}}
    (root / env["HOME"].lstrip("/")).mkdir(parents=True)
    for command in unit["ExecStart"] + unit["ExecStop"]:
        assert command.startswith("/bin/sh -c '") and command.endswith("'")
        script = command[len("/bin/sh -c '"):-1].replace("$$", "$").replace("/run/", f"{root}/run/")
        script = script.replace("/usr/bin/jetson_clocks", str(stub)).replace("/usr/sbin/nvpmodel", "true")
        subprocess.run(["/bin/sh", "-c", script], env=run_env, check=True, timeout=30)
    calls = log.read_text(encoding="utf-8").splitlines()
    assert calls and any(" --store " in c for c in calls)
    home = run_env["HOME"]
    for call in calls:
        assert call.endswith(f"fan={home}/.jetsonclocks_fan.txt"), call


def test_engine_unit_runs_before_the_agent() -> None:
    from agent.cli.main import build_parser

    unit = directives("detection-agent-engine.service")
    assert unit["Type"] == ["oneshot"] and "detection-agent.service" in unit["Before"]
    assert unit["ExecStart"] == ["/opt/detection-agent/venv/bin/detection-agent ensure-engine "
                                 "--config /etc/detection-agent/agent.yaml"]
    args = build_parser().parse_args(unit["ExecStart"][0].split()[1:])  # a command line the CLI takes
    assert (args.command, args.check) == ("ensure-engine", False)
    assert args.config == "/etc/detection-agent/agent.yaml"
    assert unit["User"] == ["detection-agent"] and unit["StateDirectory"] == ["detection-agent"]
    assert unit["PrivateNetwork"] == ["yes"] and unit["CapabilityBoundingSet"] == [""]


@pytest.fixture(scope="module")
def verify_root(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed root plus what systemd-analyze --root= needs to resolve the units."""
    inst, _ = installed
    root = tmp_path_factory.mktemp("verify") / "root"
    shutil.copytree(inst.root, root, symlinks=True)
    candidates = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
    host_units = next((p for p in candidates if p.is_dir()), None)
    if host_units is None:
        pytest.skip("no /usr/lib/systemd/system on this host to resolve sysinit.target against")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir(exist_ok=True)
    for tool in ("sh", "kill"):  # ExecReload=/bin/kill, jetson-performance's /bin/sh -c
        (root / "bin" / tool).write_text("#!/bin/true\n", encoding="utf-8")
        (root / "bin" / tool).chmod(0o755)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANALYZE), *args], capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify(verify_root: Path, unit: str) -> None:
    done = analyze("verify", f"--root={verify_root}", str(verify_root / UNIT_DIR / unit))
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).strip() == ""  # not even a warning


@needs_analyze
def test_systemd_analyze_verify_catches_a_bad_unit(verify_root: Path) -> None:
    """The check above can fail: a misspelt directive and a missing program are reported."""
    unit = verify_root / UNIT_DIR / "broken-agent.service"
    text = (SYSTEMD / "detection-agent.service").read_text(encoding="utf-8")
    unit.write_text(text.replace("ProtectHome=yes", "ProtectHomes=yes").replace("/venv/bin/", "/venv/nobin/"),
                    encoding="utf-8")
    try:
        done = analyze("verify", f"--root={verify_root}", str(unit))
    finally:
        unit.unlink()
    output = done.stdout + done.stderr
    assert "Unknown key" in output and "ProtectHomes" in output
    assert done.returncode != 0 and "is not executable" in output


def exposure(verify_root: Path, unit: str) -> float:
    done = analyze("security", "--offline=yes", "--no-pager", f"--root={verify_root}",
                   str(verify_root / UNIT_DIR / unit))
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip(f"this systemd-analyze has no --offline (systemd >= 250 needed): {done.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


@needs_analyze
def test_agent_exposure_score(verify_root: Path) -> None:
    score = exposure(verify_root, "detection-agent.service")
    version = re.search(r"systemd (\d+)", analyze("--version").stdout)
    same = version is not None and int(version.group(1)) == EXPOSURE_SYSTEMD
    limit = EXPOSURE_MEASURED + EXPOSURE_MARGIN if same else EXPOSURE_GOAL
    print(f"systemd-analyze security --offline=yes detection-agent.service: {score} (limit {limit})")
    assert score <= limit + 1e-9
    # the engine builder has no network at all: it scores lower still
    assert exposure(verify_root, "detection-agent-engine.service") < score
