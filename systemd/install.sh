#!/usr/bin/env bash
# Install detection-agent as a systemd service on a Jetson (or any systemd Linux).
#
#   sudo systemd/install.sh                    install or upgrade (idempotent: run it again after git pull)
#   sudo systemd/install.sh --dry-run          print every action, change nothing
#   sudo systemd/install.sh --uninstall        remove the units and the program; keep configs, state, user
#   DESTDIR=/tmp/root systemd/install.sh       stage into another root (tests, packaging): no user is
#                                              created, nothing is started, units are enabled in that root
#
# What it does: a system user "detection-agent" (group video for cameras and the Jetson GPU);
# a venv in PREFIX/venv with --system-site-packages, so JetPack's tensorrt and its GStreamer-enabled
# OpenCV are used (pip's OpenCV wheels have no GStreamer, which CSI cameras need); the package and
# its pure-Python dependencies, and a COCO engine for offline evaluation (faster-coco-eval;
# hotcoco too on Python >= 3.10); /etc/detection-agent/agent.yaml and agent.env (0600) unless they
# exist; the units in /etc/systemd/system, enabled (not started: edit the config first).
#
# Environment: DESTDIR (staging root), PYTHON (interpreter for the venv, default python3),
# PIP_ARGS (extra pip arguments, e.g. "--no-index --find-links /media/usb/wheels" offline).

set -euo pipefail

PREFIX=/opt/detection-agent
DRY_RUN=0
UNINSTALL=0
DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
PYTHON="${PYTHON:-python3}"
PIP_ARGS="${PIP_ARGS:-}"

SERVICE_USER=detection-agent
CONF_DIR=/etc/detection-agent
STATE_DIR=/var/lib/detection-agent
UNIT_DIR=/etc/systemd/system
UNITS=(detection-agent.service detection-agent-engine.service jetson-performance.service)
ENABLE_UNITS=(detection-agent.service)
# pyproject.toml's runtime dependencies, except opencv-python-headless (see above); a unit test
# keeps this list in step with pyproject.toml. numpy stays below 1.24 on Python 3.8 (JetPack 5),
# where TensorRT 8.4-8.5's tensorrt.nptype needs np.bool.
PY_DEPS=("numpy>=1.21,<1.24; python_version < '3.9'" "numpy>=1.21; python_version >= '3.9'" "paho-mqtt>=2.0" "pyyaml>=5.4" "pydantic>=2.0" "scipy>=1.7" "prometheus-client>=0.12")
# The COCO engines of pyproject.toml's eval extra, so `eval` and `eval --compare` (FP16/INT8
# accuracy on the device) work on a fresh install; matplotlib and motmetrics stay optional.
EVAL_DEPS=("faster-coco-eval>=1.6" "hotcoco; python_version >= '3.10'")
# JetPack's OpenCV (apt) is built against Ubuntu's numpy 1.x and cannot load under numpy 2,
# which pip would otherwise bring into the venv (hotcoco asks for numpy>=1.22, above 22.04's).
DEVICE_PINS=("numpy<2")

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    echo "Options: --prefix DIR (default /opt/detection-agent), --dry-run, --uninstall, -h/--help"
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
note() { echo "install.sh: $*"; }
warn() { echo "install.sh: warning: $*" >&2; }

# Every change goes through run: printed (shell-quoted) always, executed unless --dry-run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [[ $DRY_RUN == 0 ]]; then
        "$@"
    fi
}

# An action that cannot happen here (no such user in a DESTDIR root, not root): say so.
skip() { echo "- skipped ($1): ${*:2}"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) [[ $# -ge 2 ]] || die "--prefix needs a directory"; PREFIX="$2"; shift 2 ;;
        --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
        --dry-run|-n) DRY_RUN=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ $PREFIX == /* ]] || die "--prefix must be an absolute path, not $PREFIX"
PREFIX="${PREFIX%/}"
[[ -n $PREFIX ]] || die "--prefix / is not allowed"
[[ -z $DESTDIR || $DESTDIR == /* ]] || die "DESTDIR must be an absolute path, not $DESTDIR"
if [[ $EUID -ne 0 && -z $DESTDIR && $DRY_RUN == 0 ]]; then
    die "run as root (sudo $0), or with --dry-run, or into a staging root with DESTDIR=..."
fi

VENV="$PREFIX/venv"
D_VENV="$DESTDIR$VENV"
# systemd as PID 1 on this machine, and the install is for this machine
LIVE=0
if [[ -z $DESTDIR && -d /run/systemd/system ]]; then
    LIVE=1
fi

# chown, except to the service user inside a DESTDIR root (it is not created there) or when not root.
own() {
    local owner="$1" path="$2"
    if [[ -n $DESTDIR && $owner == *"$SERVICE_USER"* ]]; then
        skip "DESTDIR, no user $SERVICE_USER" chown "$owner" "$path"
    elif [[ $EUID -ne 0 ]]; then
        skip "not root" chown "$owner" "$path"
    else
        run chown "$owner" "$path"
    fi
}

# A directory with a mode and an owner, created or corrected.
directory() {
    local mode="$1" owner="$2" path="$3"
    if [[ ! -d $DESTDIR$path ]]; then
        run install -d -m "$mode" "$DESTDIR$path"
    else
        run chmod "$mode" "$DESTDIR$path"
    fi
    own "$owner" "$DESTDIR$path"
}

# ---------------------------------------------------------------- uninstall

uninstall() {
    local unit
    for unit in "${UNITS[@]}"; do
        [[ -e $DESTDIR$UNIT_DIR/$unit ]] || continue
        if [[ $LIVE == 1 ]]; then
            run systemctl disable --now "$unit" || warn "systemctl disable $unit failed; continuing"
        elif [[ -n $DESTDIR ]]; then
            run systemctl --root="$DESTDIR" disable "$unit" || warn "systemctl disable $unit failed; continuing"
        else
            skip "systemd is not running here" systemctl disable "$unit"
        fi
    done
    for unit in "${UNITS[@]}"; do
        if [[ -e $DESTDIR$UNIT_DIR/$unit || -L $DESTDIR$UNIT_DIR/$unit ]]; then
            run rm -f "$DESTDIR$UNIT_DIR/$unit"
        fi
    done
    if [[ $LIVE == 1 ]]; then
        run systemctl daemon-reload
    fi
    # Only what this script put there: PREFIX may be shared (/usr/local).
    if [[ -d $D_VENV ]]; then
        run rm -rf "$D_VENV"
    fi
    if [[ -d $DESTDIR$PREFIX/docs ]]; then
        run rm -rf "$DESTDIR$PREFIX/docs"
    fi
    if [[ -d $DESTDIR$PREFIX ]] && [[ -z $(ls -A "$DESTDIR$PREFIX") ]]; then
        run rmdir "$DESTDIR$PREFIX"
    fi
    note "kept $CONF_DIR (config, secrets), $STATE_DIR (engine, spool) and the user $SERVICE_USER"
    note "remove them by hand if wanted: rm -r $CONF_DIR $STATE_DIR; userdel $SERVICE_USER"
}

# ---------------------------------------------------------------- install steps

create_user() {
    if [[ -n $DESTDIR ]]; then
        skip "DESTDIR" useradd --system --user-group --groups video --home-dir "$STATE_DIR" \
            --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
        return
    fi
    if ! getent group video >/dev/null; then
        run groupadd --system video
    fi
    if getent passwd "$SERVICE_USER" >/dev/null; then
        if id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx video; then
            echo "= user $SERVICE_USER exists, in group video"
        else
            run usermod --append --groups video "$SERVICE_USER"
        fi
    else
        run useradd --system --user-group --groups video --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "detection-agent service" "$SERVICE_USER"
    fi
}

create_venv() {
    local pip_args=()
    if [[ -n $PIP_ARGS ]]; then
        read -r -a pip_args <<<"$PIP_ARGS"
    fi
    if [[ -x $D_VENV/bin/python ]]; then
        echo "= venv $VENV exists"
    else
        command -v "$PYTHON" >/dev/null || die "no $PYTHON; on JetPack: apt install python3-venv python3-pip"
        run "$PYTHON" -m venv --system-site-packages "$D_VENV"
    fi
    # The package itself without its dependency list: pip would add opencv-python-headless,
    # which shadows JetPack's OpenCV (the one built with GStreamer).
    run "$D_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_args[@]}" \
        --no-deps --force-reinstall "$SRC"
    # Already satisfied by the system's site-packages: pip leaves them alone.
    run "$D_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_args[@]}" \
        "${PY_DEPS[@]}" "${DEVICE_PINS[@]}"
    # Not needed to run the agent: a failure (offline, no wheel) is a warning, not the end.
    if ! run "$D_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_args[@]}" \
            "${EVAL_DEPS[@]}" "${DEVICE_PINS[@]}"; then
        warn "no COCO engine installed: detection-agent eval needs one; later: $VENV/bin/pip install faster-coco-eval"
    fi
    check_runtime "${pip_args[@]}"
}

# What the venv sees of OpenCV, TensorRT and pycuda: install what is missing and can be, say the rest.
check_runtime() {
    local py="$D_VENV/bin/python"
    if [[ $DRY_RUN == 1 && ! -x $py ]]; then
        echo "- would check: cv2 with GStreamer, tensorrt, pycuda in $VENV"
        return
    fi
    if "$py" -c 'import cv2' 2>/dev/null; then
        if "$py" -c 'import cv2, re, sys; sys.exit(not re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))'; then
            echo "= OpenCV with GStreamer: CSI cameras and hardware-decoded RTSP available"
        else
            warn "this OpenCV has no GStreamer: CSI cameras (csi://N) will not open; USB, files and RTSP (FFmpeg) will"
        fi
    else
        warn "no OpenCV for $PYTHON; installing pip's opencv-python-headless (no GStreamer: no CSI cameras)."
        warn "on a Jetson, prefer JetPack's: apt install nvidia-opencv (or python3-opencv), then rerun"
        run "$py" -m pip install --quiet --disable-pip-version-check "$@" "opencv-python-headless>=4.5,<5"
    fi
    if "$py" -c 'import tensorrt' 2>/dev/null; then
        echo "= TensorRT $("$py" -c 'import tensorrt; print(tensorrt.__version__)')"
        if "$py" -c 'import pycuda.driver' 2>/dev/null; then
            echo "= pycuda present"
        elif [[ -x /usr/local/cuda/bin/nvcc ]]; then
            note "building pycuda against /usr/local/cuda (several minutes on a Nano)"
            if ! run env PATH="/usr/local/cuda/bin:$PATH" CUDA_ROOT=/usr/local/cuda \
                    "$py" -m pip install --quiet --disable-pip-version-check "$@" pycuda; then
                warn "pycuda did not build; the tensorrt backend needs it: apt install python3-dev, then"
                warn "  sudo env PATH=/usr/local/cuda/bin:\$PATH $VENV/bin/pip install pycuda"
            fi
        else
            warn "no pycuda and no /usr/local/cuda/bin/nvcc to build it: install the CUDA toolkit"
            warn "(apt install nvidia-jetpack, or cuda-toolkit), then: $VENV/bin/pip install pycuda"
        fi
    else
        warn "no TensorRT for $PYTHON: .engine models will not load (on a Jetson: apt install python3-libnvinfer);"
        warn "an .onnx model runs with onnxruntime: $VENV/bin/pip install onnxruntime, model.backend: onnxruntime"
    fi
}

install_files() {
    directory 0755 root:root "$PREFIX"
    directory 0755 root:root "$PREFIX/docs"
    run install -m 0644 "$SRC/docs/deployment.md" "$DESTDIR$PREFIX/docs/deployment.md"

    # Config: readable by the service (group), never overwritten; the shipped version beside it.
    directory 0750 "root:$SERVICE_USER" "$CONF_DIR"
    if [[ -e $DESTDIR$CONF_DIR/agent.yaml ]]; then
        echo "= kept $CONF_DIR/agent.yaml (the shipped one is $CONF_DIR/agent.yaml.example)"
    else
        run install -m 0640 "$SRC/configs/agent.yaml" "$DESTDIR$CONF_DIR/agent.yaml"
    fi
    run chmod 0640 "$DESTDIR$CONF_DIR/agent.yaml"
    own "root:$SERVICE_USER" "$DESTDIR$CONF_DIR/agent.yaml"
    run install -m 0640 "$SRC/configs/agent.yaml" "$DESTDIR$CONF_DIR/agent.yaml.example"
    own "root:$SERVICE_USER" "$DESTDIR$CONF_DIR/agent.yaml.example"

    # Secrets: read by systemd (as root) before it drops privileges; the agent never reads the file.
    if [[ -e $DESTDIR$CONF_DIR/agent.env ]]; then
        echo "= kept $CONF_DIR/agent.env"
    else
        run install -m 0600 "$SRC/systemd/agent.env.example" "$DESTDIR$CONF_DIR/agent.env"
    fi
    run chmod 0600 "$DESTDIR$CONF_DIR/agent.env"
    own root:root "$DESTDIR$CONF_DIR/agent.env"

    # State (engine, spool): systemd's StateDirectory= creates it too; here so a model can be
    # copied in before the first start.
    directory 0750 "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
}

install_units() {
    local unit tmp
    directory 0755 root:root "$UNIT_DIR"
    for unit in "${UNITS[@]}"; do
        if [[ $PREFIX == /opt/detection-agent ]]; then
            run install -m 0644 "$SRC/systemd/$unit" "$DESTDIR$UNIT_DIR/$unit"
        else
            printf '+ sed s#/opt/detection-agent#%q#g %q > %q\n' "$PREFIX" "$SRC/systemd/$unit" \
                "$DESTDIR$UNIT_DIR/$unit"
            if [[ $DRY_RUN == 0 ]]; then
                tmp="$(mktemp)"
                sed "s#/opt/detection-agent#$PREFIX#g" "$SRC/systemd/$unit" >"$tmp"
                install -m 0644 "$tmp" "$DESTDIR$UNIT_DIR/$unit"
                rm -f "$tmp"
            fi
        fi
    done
    if [[ $LIVE == 1 ]]; then
        run systemctl daemon-reload
        run systemctl enable "${ENABLE_UNITS[@]}"
    elif [[ -n $DESTDIR ]]; then
        # The same symlinks as on a live system, made offline inside the staging root.
        run systemctl --root="$DESTDIR" enable "${ENABLE_UNITS[@]}"
    else
        skip "systemd is not running here" systemctl enable "${ENABLE_UNITS[@]}"
    fi
}

main() {
    [[ -f $SRC/pyproject.toml && -f $SRC/systemd/detection-agent.service ]] \
        || die "run me from a detection-agent checkout ($SRC has no pyproject.toml)"
    if [[ $DRY_RUN == 1 ]]; then
        note "dry run: printing every action, changing nothing"
    fi
    if [[ $UNINSTALL == 1 ]]; then
        uninstall
        return
    fi
    create_user
    install_files
    create_venv
    install_units
    note "installed into ${DESTDIR:-/} (prefix $PREFIX)"
    if [[ $LIVE == 1 ]]; then
        note "next: edit $CONF_DIR/agent.yaml (cameras, mqtt.host, model) and $CONF_DIR/agent.env (secrets),"
        note "      copy the ONNX model to $STATE_DIR/model.onnx, then: systemctl start detection-agent"
        note "      logs: journalctl -u detection-agent -u detection-agent-engine -f"
    fi
}

main
