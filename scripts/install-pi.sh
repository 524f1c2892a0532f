#!/usr/bin/env bash
# Installs edgecam from this repository on Raspberry Pi OS (Bookworm or later, 32- or 64-bit) as a systemd service.
# Idempotent: each run checks before it acts, and says "already present" or "kept" for what is there.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: sudo scripts/install-pi.sh [--dry-run] [--prefix DIR] [--skip-packages] [--no-venv] [--python PATH] [--force]

Installs edgecam from this repository on Raspberry Pi OS Bookworm or later, and prints the next steps:
  checks         one line each: the board, the OS, the architecture (and where OpenCV comes from), the picamera2
                 version (0.3.20 or later) and the camera memory (CMA); it refuses what cannot work
  OS packages    python3-picamera2 python3-venv python3-lgpio mosquitto-clients fonts-dejavu-core (apt-get; the
                 font is the notice's), and python3-opencv where PyPI has no OpenCV wheel for the architecture
                 (armhf: 32-bit Raspberry Pi OS)
  system user    edgecam, in the groups video (the camera) and gpio (a door contact) when they exist
  venv           /opt/edgecam/venv, --system-site-packages so it sees picamera2, with edgecam pip-installed
                 from this repository; the OS numpy is kept (picamera2 and python3-opencv are built on it)
  settings       /etc/edgecam/edgecam.toml from edgecam.example.toml (0640), never overwritten;
                 the root-only directory (0700) of the secrets the unit loads (LoadCredential=)
  service        /etc/systemd/system/edgecam.service (not enabled, not started), /var/lib/edgecam (0700), and
                 where a gpio group exists the drop-in edgecam.service.d/gpio.conf that adds it to the service
  udev rule      /etc/udev/rules.d/60-edgecam-dma-heap.rules: the video group may use /dev/dma_heap/*
Each run checks before it acts: what is already there is reported "already present" (or "kept").

Options:
  --dry-run        print every check and action, one line each, and change nothing
  --prefix DIR     install the files under DIR instead of /, and skip apt-get, the user, systemctl and
                   udevadm (for tests; the venv's scripts point into DIR)
  --skip-packages  do not install OS packages (install them yourself)
  --no-venv        do not create the venv nor install edgecam into it
  --python PATH    the OS Python whose packages the venv sees (default /usr/bin/python3)
  --force          install where a check refuses: not a Raspberry Pi, another OS, picamera2 older than 0.3.20
  -h, --help       show this help

For tests, INSTALL_PI_* environment variables stand in for what the checks read from this machine: see the
section "what this machine is" in this script.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ME=install-pi.sh
ARGS=("$@")
DRY_RUN=0
PREFIX=""
PACKAGES=1
VENV_STEP=1
FORCE=0
PYTHON=/usr/bin/python3

die() {
  echo "$ME: $*" >&2
  exit 1
}

bad_usage() {
  echo "$ME: $*" >&2
  echo "Usage: sudo scripts/install-pi.sh [--dry-run] [--prefix DIR] [--skip-packages] [--no-venv]" \
    "[--python PATH] [--force]; --help says more" >&2
  exit 2
}

while (($#)); do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --prefix)
      [[ -n ${2:-} ]] || bad_usage "--prefix needs a directory"
      PREFIX=$2
      shift
      ;;
    --prefix=?*) PREFIX=${1#--prefix=} ;;
    --skip-packages) PACKAGES=0 ;;
    --no-venv) VENV_STEP=0 ;;
    --python)
      [[ -n ${2:-} ]] || bad_usage "--python needs a path"
      PYTHON=$2
      shift
      ;;
    --python=?*) PYTHON=${1#--python=} ;;
    --force) FORCE=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) bad_usage "unknown option: $1" ;;
  esac
  shift
done

if [[ -n $PREFIX ]]; then
  PREFIX=$(realpath -m -- "$PREFIX")
  [[ $PREFIX != / ]] || bad_usage "--prefix / is a real install: leave --prefix out"
fi

# ---- where things go (under --prefix, the same tree inside DIR) -------------------------------------------------

SERVICE_USER=edgecam
OS_PACKAGES=(python3-picamera2 python3-venv python3-lgpio mosquitto-clients fonts-dejavu-core)
OPT=$PREFIX/opt/edgecam
VENV=$OPT/venv
ETC=$PREFIX/etc/edgecam
CONFIG=$ETC/edgecam.toml
STATE=$PREFIX/var/lib/edgecam
UNIT=$PREFIX/etc/systemd/system/edgecam.service
GPIO_DROPIN=$UNIT.d/gpio.conf
UDEV_RULE=$PREFIX/etc/udev/rules.d/60-edgecam-dma-heap.rules
STAMP=$VENV/.edgecam-source # the hash of the sources last installed into the venv

# Owners are set only on a real install; under --prefix the files belong to whoever runs the script.
OWN=1
[[ -z $PREFIX ]] || OWN=0

# The secrets the unit passes to the agent, one "ID PATH" line each, from its LoadCredential=ID:PATH lines;
# a PATH that is not absolute is a name systemd looks up in /etc/credstore/ (and /run/credstore/, ...).
unit_credentials() {
  local id path
  sed -n -e 's/^LoadCredential=\([^:]*\):\(.*\)$/\1 \2/p' -e 's/^LoadCredential=\([^:]*\)$/\1 \1/p' \
    "$REPO/systemd/edgecam.service" | while read -r id path; do
    [[ $path == /* ]] || path=/etc/credstore/$path
    echo "$id $path"
  done
}

credential_path() { # credential_path ID: where the unit loads that secret from, or nothing
  unit_credentials | sed -n "s|^$1 ||p"
}

# ---- what this machine is -------------------------------------------------------------------------------------------

# Each fact the checks need is read once, by read_facts. For tests, INSTALL_PI_* variables (read by this script only)
# stand in for this machine:
#   INSTALL_PI_MODEL           the board, as /proc/device-tree/model names it ("" = not a Raspberry Pi)
#   INSTALL_PI_OS_RELEASE      a file read instead of /etc/os-release
#   INSTALL_PI_MEMINFO         a file read instead of /proc/meminfo
#   INSTALL_PI_ARCH            the OS's architecture, as `dpkg --print-architecture` says (armhf, arm64, amd64)
#   INSTALL_PI_MACHINE         the kernel's, as `uname -m` says (armv7l, aarch64)
#   INSTALL_PI_GROUPS          the groups that exist, space-separated, instead of asking getent
#   INSTALL_PI_APT_CANDIDATES  "PACKAGE=VERSION ..." that apt-get would install, instead of asking apt-cache
# What the OS Python (--python) has installed, picamera2 and numpy, is asked of that Python.

PICAMERA2_MIN=0.3.20 # added Picamera2.cancel_all_and_flush() and made capture_request(wait=seconds) time out
CMA_MIN_MB=64
# Debian architectures with an opencv-python-headless wheel on PyPI (manylinux x86_64 and aarch64). None is built
# for armhf (32-bit ARM): there pip would compile OpenCV for hours, so OpenCV comes from the OS (python3-opencv).
PYPI_OPENCV_ARCHES=" amd64 arm64 "

os_release() { # os_release KEY: its value in /etc/os-release (or INSTALL_PI_OS_RELEASE), without quotes
  local file=${INSTALL_PI_OS_RELEASE:-/etc/os-release}
  [[ -r $file ]] || return 0
  sed -n -e "s/^$1=\"\\(.*\\)\"\$/\\1/p" -e "s/^$1='\\(.*\\)'\$/\\1/p" -e "s/^$1=\\([^\"']*\\)\$/\\1/p" "$file" |
    head -n 1
}

group_exists() {
  if [[ -n ${INSTALL_PI_GROUPS+set} ]]; then
    [[ " $INSTALL_PI_GROUPS " == *" $1 "* ]]
  else
    getent group "$1" >/dev/null
  fi
}

apt_candidate() { # apt_candidate PACKAGE: the version apt-get would install, or nothing
  local entry version
  if [[ -n ${INSTALL_PI_APT_CANDIDATES+set} ]]; then
    for entry in $INSTALL_PI_APT_CANDIDATES; do
      if [[ ${entry%%=*} == "$1" ]]; then
        echo "${entry#*=}"
        return 0
      fi
    done
    return 0
  fi
  version=$(LC_ALL=C apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p') || true
  [[ -z $version || $version == "(none)" ]] || echo "$version"
}

upstream_version() { # upstream_version DEBIAN_VERSION: 1:0.3.31-1+rpt1 -> 0.3.31
  local version=${1#*:}
  echo "${version%%[-+~]*}"
}

at_least() { # at_least VERSION MINIMUM
  [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1) == "$2" ]]
}

# What the OS Python knows of picamera2, one line: "version V" (its package metadata), "attribute yes|no" (no
# metadata; whether Picamera2 has cancel_all_and_flush), "unimportable ERROR" (no metadata and the import fails,
# usually for want of libcamera), "absent", or nothing when that Python does not run.
picamera2_probe() {
  local code
  code='
import importlib.metadata
import importlib.util


def say(*words):
    print("picamera2-probe", *words)


try:
    say("version", importlib.metadata.version("picamera2"))
except importlib.metadata.PackageNotFoundError:
    if importlib.util.find_spec("picamera2") is None:
        say("absent")
    else:
        try:
            import picamera2
        except Exception as err:
            say("unimportable", (f"{type(err).__name__}: {err}".splitlines() or [""])[0])
        else:
            say("attribute", "yes" if hasattr(picamera2.Picamera2, "cancel_all_and_flush") else "no")
'
  { timeout 120 "$PYTHON" -c "$code" 2>/dev/null || true; } | sed -n 's/^picamera2-probe //p' | tail -n 1
}

REFUSALS=() # what a real install refuses, one sentence each; --force goes on
refuse() { REFUSALS+=("$*"); }

PICAMERA2_LINE=""
PICAMERA2_AVAILABLE=1 # 0: neither installed nor in this OS's apt sources (Ubuntu)
picamera2_check() {   # sets PICAMERA2_LINE, and refuses a picamera2 older than PICAMERA2_MIN
  local probe kind detail candidate needs="edgecam needs $PICAMERA2_MIN or later"
  local upgrade="sudo apt-get update && sudo apt-get install python3-picamera2"
  local unknown="version unknown (no package metadata)"
  probe=$(picamera2_probe)
  kind=${probe%% *}
  detail=${probe#* }
  case $kind in
    version)
      if at_least "$detail" "$PICAMERA2_MIN"; then
        PICAMERA2_LINE="$detail ($needs)"
      else
        PICAMERA2_LINE="$detail, too old ($needs)"
        refuse "picamera2 $detail is older than $PICAMERA2_MIN, which edgecam needs" \
          "(Picamera2.cancel_all_and_flush, capture_request(wait=seconds)): $upgrade"
      fi
      ;;
    attribute)
      if [[ $detail == yes ]]; then
        PICAMERA2_LINE="$unknown, with Picamera2.cancel_all_and_flush: $PICAMERA2_MIN or later"
      else
        PICAMERA2_LINE="$unknown, without Picamera2.cancel_all_and_flush: too old ($needs)"
        refuse "picamera2 is older than $PICAMERA2_MIN (no Picamera2.cancel_all_and_flush), which edgecam needs:" \
          "$upgrade"
      fi
      ;;
    unimportable)
      PICAMERA2_LINE="$unknown, and import picamera2 fails ($detail): it needs libcamera's Python bindings"
      PICAMERA2_LINE+=" (python3-libcamera)"
      ;;
    absent)
      candidate=$(apt_candidate python3-picamera2)
      if [[ -n $candidate ]] && at_least "$(upstream_version "$candidate")" "$PICAMERA2_MIN"; then
        PICAMERA2_LINE="not installed; apt offers python3-picamera2 $candidate ($needs)"
      elif [[ -n $candidate ]]; then
        PICAMERA2_LINE="not installed; apt offers python3-picamera2 $candidate, too old ($needs)"
        refuse "apt offers python3-picamera2 $candidate, older than $PICAMERA2_MIN, which edgecam needs:" \
          "update Raspberry Pi OS (sudo apt-get update)"
      elif [[ $os_id == ubuntu ]]; then
        PICAMERA2_AVAILABLE=0
        PICAMERA2_LINE="not installed, and Ubuntu's archive has no python3-picamera2: camera.source 'picamera2'"
        PICAMERA2_LINE+=" needs Raspberry Pi OS; a USB or RTSP camera works without it"
      else
        PICAMERA2_LINE="not installed; apt knows no python3-picamera2 yet (apt-get update comes first; Raspberry Pi"
        PICAMERA2_LINE+=" OS's archive has it)"
      fi
      ;;
    *)
      PICAMERA2_LINE="not checked: $PYTHON does not run"
      ;;
  esac
}

read_facts() {
  if [[ -n ${INSTALL_PI_MODEL+set} ]]; then
    model=$INSTALL_PI_MODEL
  elif [[ -r /proc/device-tree/model ]]; then
    model=$(tr -d '\0' </proc/device-tree/model)
  else
    model=""
  fi
  os_id=$(os_release ID)
  os_version=$(os_release VERSION_ID)
  os_name=$(os_release PRETTY_NAME)
  os_name=${os_name:-${os_id:-unknown}}
  arch=${INSTALL_PI_ARCH:-$(dpkg --print-architecture 2>/dev/null || echo unknown)}
  machine=${INSTALL_PI_MACHINE:-$(uname -m)}
  cma_kb=$(sed -n 's/^CmaTotal: *\([0-9][0-9]*\) kB$/\1/p' "${INSTALL_PI_MEMINFO:-/proc/meminfo}" 2>/dev/null |
    head -n 1) || true
}

# The check lines, "<what>: <finding>" each, printed after the heading; the refusals are decided here.
CHECK_LINES=()
WARNINGS=()
OPENCV_FROM_APT=0
run_checks() {
  local line
  if [[ $model == *"Raspberry Pi"* ]]; then
    CHECK_LINES+=("board: $model")
  else
    CHECK_LINES+=("board: not a Raspberry Pi (/proc/device-tree/model: ${model:-none})")
    refuse "this is not a Raspberry Pi (/proc/device-tree/model: ${model:-none}); --dry-run shows the steps," \
      "--prefix DIR installs into a directory, --force installs here anyway"
  fi

  case $os_id in
    raspbian | debian)
      if [[ $os_version =~ ^[0-9]+$ ]] && ((os_version >= 12)); then
        CHECK_LINES+=("OS: $os_name: Bookworm (12) or later, supported")
      else
        CHECK_LINES+=("OS: $os_name: older than Bookworm (12)")
        refuse "needs Raspberry Pi OS Bookworm (12) or later, this is $os_name (--force installs anyway)"
      fi
      ;;
    ubuntu)
      CHECK_LINES+=("OS: $os_name: not Raspberry Pi OS; Ubuntu's archive has no python3-picamera2")
      refuse "needs Raspberry Pi OS Bookworm (12) or later, this is $os_name, whose archive has no" \
        "python3-picamera2 for the Pi camera (--force installs for a USB or RTSP camera)"
      ;;
    *)
      CHECK_LINES+=("OS: $os_name: not Raspberry Pi OS")
      refuse "needs Raspberry Pi OS Bookworm (12) or later, this is $os_name (--force installs anyway)"
      ;;
  esac

  if [[ $PYPI_OPENCV_ARCHES == *" $arch "* ]]; then
    CHECK_LINES+=("architecture: $arch (kernel $machine): OpenCV from PyPI (opencv-python-headless)")
  else
    OPENCV_FROM_APT=1
    line="architecture: $arch (kernel $machine): OpenCV from apt (python3-opencv); PyPI has no"
    CHECK_LINES+=("$line opencv-python-headless wheel for $arch")
  fi

  picamera2_check
  CHECK_LINES+=("picamera2: $PICAMERA2_LINE")

  if [[ -z $cma_kb ]]; then
    line="camera memory: no CmaTotal in ${INSTALL_PI_MEMINFO:-/proc/meminfo}: the agent plans for 64 MB"
  else
    line="camera memory: CMA $((cma_kb / 1024)) MB (CmaTotal in ${INSTALL_PI_MEMINFO:-/proc/meminfo})"
    [[ $model != *"Raspberry Pi 5"* ]] || line+="; a Pi 5 takes picamera2's buffers from the system heap"
  fi
  CHECK_LINES+=("$line")
  if [[ $model == *"Raspberry Pi"* && -n $cma_kb ]] && ((cma_kb < CMA_MIN_MB * 1024)); then
    line="only $((cma_kb / 1024)) MB of CMA, under $CMA_MIN_MB MB: libcamera may fail to allocate its frame"
    line+=" buffers (Cannot allocate memory); raise it in /boot/firmware/config.txt"
    WARNINGS+=("$line (dtoverlay=vc4-kms-v3d,cma-128) and reboot")
  fi
}

read_facts
run_checks
if ((!DRY_RUN)) && [[ -z $PREFIX ]]; then
  ((FORCE || ${#REFUSALS[@]} == 0)) || die "${REFUSALS[0]}"
  ((EUID == 0)) || die "installing needs root: sudo $0 ${ARGS[*]}"
fi

((!OPENCV_FROM_APT)) || OS_PACKAGES+=(python3-opencv)
if ((!PICAMERA2_AVAILABLE)); then # with --force: a USB or RTSP camera only
  kept=()
  for package in "${OS_PACKAGES[@]}"; do
    [[ $package == python3-picamera2 ]] || kept+=("$package")
  done
  OS_PACKAGES=("${kept[@]}")
fi

# After the check lines: each refusal that --force, --dry-run or --prefix goes past, and each warning.
report_refusals() {
  local refusal
  for refusal in "${REFUSALS[@]}"; do
    if ((FORCE)); then
      echo "$ME: going on (--force): $refusal" >&2
    elif ((DRY_RUN)) || [[ -n $PREFIX ]]; then
      echo "$ME: a real install stops here: $refusal" >&2
    else
      die "$refusal"
    fi
  done
}

# ---- how each action is done and reported -----------------------------------------------------------------------

# One line per action: "<verb>: <what>". Under --dry-run the verb is "would <verb>" and nothing runs.
step() {
  local verb=$1 what=$2
  shift 2
  if ((DRY_RUN)); then
    echo "would $verb: $what"
    return 0
  fi
  "$@"
  case $verb in
    run) verb=ran ;;
    write) verb=wrote ;;
    add) verb=added ;;
    *) verb=${verb%e}ed ;;
  esac
  echo "$verb: $what"
}

say() { echo "$1: $2"; }

# Steps that change the running system rather than files: under --prefix they are reported and skipped.
system_step() {
  local verb=$1 what=$2
  if [[ -n $PREFIX ]]; then
    say skipped "$what (--prefix)"
    return 0
  fi
  step "$@"
}

WORK=""
cleanup() { [[ -z $WORK ]] || rm -rf "$WORK"; }
trap cleanup EXIT
workdir() {
  [[ -n $WORK ]] || WORK=$(mktemp -d)
}

same_mode() { [[ $(stat -c %a "$1") == "$(printf %o "$((8#$2))")" ]]; }
same_owner() { ((!OWN)) || [[ $(stat -c %U:%G "$1") == "$2" ]]; }
describe() { # describe MODE OWNER: "0640 root:edgecam", the owner left out under --prefix
  if ((OWN)); then echo "$1 $2"; else echo "$1"; fi
}

set_attrs() { # set_attrs PATH MODE OWNER
  chmod "$2" "$1"
  ((!OWN)) || chown "$3" "$1"
}

make_dir() { # make_dir DIR MODE OWNER
  mkdir -p -- "$1"
  set_attrs "$@"
}

declare -A PLANNED=() # directories a --dry-run has said it would create

# Our own directories: created with their mode and owner, which a later run puts back if they changed.
ensure_dir() { # ensure_dir DIR MODE OWNER
  local dir=$1 mode=$2 owner=$3 show
  show="$dir ($(describe "$mode" "$owner"))"
  if [[ ! -d $dir ]]; then
    step create "$show" make_dir "$dir" "$mode" "$owner"
    PLANNED[$dir]=1
  elif same_mode "$dir" "$mode" && same_owner "$dir" "$owner"; then
    say "already present" "$show"
  else
    step fix "$show" set_attrs "$dir" "$mode" "$owner"
  fi
}

# A system directory we put a file in (/etc/systemd/system, ...): created if missing, otherwise left alone.
ensure_parent() {
  [[ -d $1 || -n ${PLANNED[$1]:-} ]] || step create "$1" mkdir -p -- "$1"
  PLANNED[$1]=1
}

put_file() { # put_file SRC DEST MODE OWNER
  if ((OWN)); then
    install -m "$3" -o "${4%%:*}" -g "${4#*:}" -- "$1" "$2"
  else
    install -m "$3" -- "$1" "$2"
  fi
}

# Installs SRC as DEST, or updates DEST when its content, mode or owner differ; sets CHANGED=1 when it would act.
CHANGED=0
install_file() { # install_file SRC DEST MODE OWNER LABEL
  local src=$1 dest=$2 mode=$3 owner=$4 label=$5 show
  show="$dest ($(describe "$mode" "$owner"), $label)"
  ensure_parent "$(dirname -- "$dest")"
  if [[ ! -e $dest ]]; then
    CHANGED=1
    step install "$show" put_file "$src" "$dest" "$mode" "$owner"
  elif cmp -s -- "$src" "$dest" && same_mode "$dest" "$mode" && same_owner "$dest" "$owner"; then
    say "already present" "$show"
  else
    CHANGED=1
    step update "$show" put_file "$src" "$dest" "$mode" "$owner"
  fi
}

# ---- the steps ------------------------------------------------------------------------------------------------------

packages() {
  local what="OS packages ${OS_PACKAGES[*]}" missing=() p
  if [[ -n $PREFIX ]]; then
    say skipped "$what (--prefix)"
    return 0
  fi
  if ((!PACKAGES)); then
    say skipped "$what (--skip-packages)"
    return 0
  fi
  for p in "${OS_PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    say "already present" "$what"
    return 0
  fi
  # No recommends: python3-picamera2 recommends the Qt and OpenGL preview windows, useless without a screen.
  step run "apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" apt_install "${missing[@]}"
  if ((!DRY_RUN)) && [[ " ${missing[*]} " == *" python3-picamera2 "* ]] && installed python3-picamera2; then
    # Checked before from apt's offer, which can be stale or empty (images ship without apt's lists).
    REFUSALS=()
    picamera2_check
    say picamera2 "$PICAMERA2_LINE"
    report_refusals
  fi
}

installed() { # installed PACKAGE: whether dpkg has it installed
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q ' installed$'
}

apt_install() {
  local package wanted=()
  apt-get update -qq
  for package in "$@"; do
    if [[ $package == python3-picamera2 && -z $(apt_candidate python3-picamera2) ]]; then
      ((FORCE)) || die "python3-picamera2 is not in this OS's apt sources (Raspberry Pi OS's archive has it);" \
        "--force installs without it, for a USB or RTSP camera"
      echo "$ME: going on (--force) without python3-picamera2: it is not in this OS's apt sources" >&2
    else
      wanted+=("$package")
    fi
  done
  ((${#wanted[@]} == 0)) ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
}

comma_list() {
  local IFS=,
  echo "$*"
}

service_user() {
  local groups=(video) g
  ! group_exists gpio || groups+=(gpio) # Raspberry Pi OS: /dev/gpiochip* for a door contact
  if [[ -n $PREFIX ]]; then
    say skipped "create system user $SERVICE_USER in groups ${groups[*]} (--prefix)"
    return 0
  fi
  if ! getent passwd "$SERVICE_USER" >/dev/null; then
    step run "useradd --system $SERVICE_USER (groups ${groups[*]}, no login, home /var/lib/edgecam)" \
      useradd --system --user-group --no-create-home --home-dir /var/lib/edgecam --shell /usr/sbin/nologin \
      --groups "$(comma_list "${groups[@]}")" "$SERVICE_USER"
    return 0
  fi
  local have missing=()
  have=" $(id -nG "$SERVICE_USER") "
  for g in "${groups[@]}"; do
    [[ $have == *" $g "* ]] || missing+=("$g")
  done
  if ((${#missing[@]} == 0)); then
    say "already present" "system user $SERVICE_USER in groups ${groups[*]}"
  else
    step add "$SERVICE_USER to groups ${missing[*]}" usermod -a -G "$(comma_list "${missing[@]}")" "$SERVICE_USER"
  fi
}

# What pip installs: the package's sources and pyproject.toml; a change in any of them means reinstalling.
source_hash() {
  (
    cd "$REPO"
    { echo pyproject.toml && find edgecam -type f ! -name '*.pyc' ! -path '*/__pycache__/*'; } | LC_ALL=C sort |
      xargs -d '\n' sha256sum | sha256sum | cut -d ' ' -f 1
  )
}

edgecam_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml"
}

# picamera2's compiled helpers from apt (simplejpeg, ...) are built against the OS numpy: the venv must keep it,
# or pip brings in a numpy they cannot load. Prints "numpy==X" when the OS Python has numpy, else nothing.
os_numpy_pin() {
  local version
  version=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("numpy"))' 2>/dev/null) || return 0
  echo "numpy==$version"
}

make_venv() { # make_venv [--clear]
  "$PYTHON" -m venv --system-site-packages "$@" "$VENV"
}

remake_venv() {
  rm -f "$STAMP"
  make_venv --clear
}

pip_run() { # pip_run PIP_INSTALL_ARGUMENT...
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --no-input "$@"
}

# The dependencies pyproject.toml declares, one a line, less opencv-python-headless.
pip_requirements_without_opencv() {
  "$VENV/bin/python" - "$REPO/pyproject.toml" <<'EOF'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as pyproject:
    for requirement in tomllib.load(pyproject)["project"]["dependencies"]:
        if not re.match(r"opencv[-_.]python[-_.]headless(?![-_.a-z0-9])", requirement, re.IGNORECASE):
            print(requirement)
EOF
}

pip_install() { # pip_install HASH [REQUIREMENT...]
  local hash=$1 src
  shift
  # Build from a copy, so that pip's build/ and *.egg-info are not left in the repository (as root).
  workdir
  src=$WORK/src
  mkdir -p "$src"
  tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md edgecam | tar -C "$src" -xf -
  if ((OPENCV_FROM_APT)); then
    # pip would build opencv-python-headless from source here: edgecam alone, without its dependencies, then the
    # dependencies pyproject.toml declares less that one; the OS's cv2 (python3-opencv) is seen through the
    # system site-packages.
    local requirements
    mapfile -t requirements < <(pip_requirements_without_opencv)
    pip_run "${requirements[@]}" "$@"
    pip_run --no-deps "$src"
    "$VENV/bin/python" -c 'import cv2' 2>/dev/null ||
      die "the venv cannot import cv2: install python3-opencv (sudo apt-get install python3-opencv)"
  else
    pip_run "$src" "$@"
  fi
  "$VENV/bin/edgecam" --version >/dev/null
  echo "$hash" >"$STAMP"
}

venv() {
  if ((!VENV_STEP)); then
    say skipped "venv $VENV and edgecam in it (--no-venv)"
    return 0
  fi
  local cfg=$VENV/pyvenv.cfg what="venv $VENV (--system-site-packages, $PYTHON)"
  [[ -x $PYTHON ]] || ((DRY_RUN)) || die "$PYTHON not found: install python3 (or name another with --python)"
  if [[ -x $PYTHON ]] && ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); edgecam needs 3.11" \
      "or later (Raspberry Pi OS Bookworm has it)"
  fi
  if [[ ! -f $cfg ]]; then
    step create "$what" make_venv
  elif ! "$VENV/bin/python" -c '' 2>/dev/null; then # its Python is gone, e.g. after an OS upgrade
    step "re-create" "$what, its Python no longer runs" remake_venv
  elif ! grep -qx 'include-system-site-packages = true' "$cfg"; then
    step update "$what, so that it sees the OS packages" make_venv
  else
    say "already present" "$what"
  fi

  local hash version pin how requirements=()
  hash=$(source_hash)
  version=$(edgecam_version)
  pin=$(os_numpy_pin)
  [[ -z $pin ]] || requirements+=("$pin")
  how=pip
  ((!OPENCV_FROM_APT)) || how="pip, OpenCV from python3-opencv"
  what="edgecam $version from $REPO into $VENV ($how${pin:+, keeping the OS $pin})"
  if [[ -f $STAMP && $(<"$STAMP") == "$hash" && -x $VENV/bin/edgecam ]]; then
    say "already present" "edgecam $version in $VENV"
  elif [[ -x $VENV/bin/edgecam ]]; then
    step update "$what" pip_install "$hash" "${requirements[@]}"
  else
    step install "$what" pip_install "$hash" "${requirements[@]}"
  fi
}

config() {
  local show
  show="$CONFIG ($(describe 0640 "root:$SERVICE_USER"), from edgecam.example.toml)"
  if [[ -e $CONFIG ]]; then
    say kept "$CONFIG (exists; never overwritten)"
  else
    step write "$show" put_file "$REPO/edgecam.example.toml" "$CONFIG" 0640 "root:$SERVICE_USER"
  fi
}

udev_rule_text() {
  cat <<'EOF'
# Installed by edgecam's scripts/install-pi.sh.
# libcamera (picamera2) allocates its frame buffers from the kernel's DMA heaps, /dev/dma_heap/*, which are
# root-only unless a rule says otherwise; the edgecam service runs in the video group.
SUBSYSTEM=="dma_heap", GROUP="video", MODE="0660"
EOF
}

udev_reload() {
  udevadm control --reload
  udevadm trigger --subsystem-match=dma_heap --action=change
}

udev() {
  workdir
  udev_rule_text >"$WORK/dma-heap.rules"
  CHANGED=0
  install_file "$WORK/dma-heap.rules" "$UDEV_RULE" 0644 root:root "the video group may use /dev/dma_heap/*"
  ((CHANGED)) || return 0
  if [[ -z $PREFIX && ! -S /run/udev/control ]]; then
    say skipped "udevadm control --reload (udev is not running)"
  else
    system_step run "udevadm control --reload && udevadm trigger --subsystem-match=dma_heap" udev_reload
  fi
}

remove_gpio_dropin() {
  rm -f -- "$GPIO_DROPIN"
  rmdir --ignore-fail-on-non-empty -- "$(dirname -- "$GPIO_DROPIN")"
}

# The unit names only the video group, which Debian's base-passwd makes everywhere: systemd refuses to start a unit
# whose SupplementaryGroups= names a group that does not exist (status 216/GROUP). The gpio group, for a door
# contact, exists on Raspberry Pi OS but not on Debian or Ubuntu: a drop-in adds it where it exists.
gpio_dropin() {
  if group_exists gpio; then
    install_file "$REPO/systemd/edgecam.service.d/gpio.conf" "$GPIO_DROPIN" 0644 root:root \
      "the service joins the gpio group"
  elif [[ -e $GPIO_DROPIN ]]; then
    CHANGED=1
    step remove "$GPIO_DROPIN (there is no gpio group: systemd would not start the service)" remove_gpio_dropin
  else
    say skipped "$GPIO_DROPIN (there is no gpio group)"
  fi
}

unit() {
  CHANGED=0
  install_file "$REPO/systemd/edgecam.service" "$UNIT" 0644 root:root "from systemd/edgecam.service"
  gpio_dropin
  ((CHANGED)) || return 0
  if [[ -z $PREFIX && ! -d /run/systemd/system ]]; then
    say skipped "systemctl daemon-reload (systemd is not running)"
  else
    system_step run "systemctl daemon-reload" systemctl daemon-reload
  fi
}

next_steps() {
  local password key secrets
  password=$(credential_path mqtt-password)
  key=$(credential_path mqtt-client-key)
  if [[ -n $password ]]; then
    secrets="  2. If the broker wants a password (mqtt.username), put it where the unit loads it from, then Ctrl-D:
       sudo sh -c 'umask 077 && cat > $password'
     (mode 0600, root only${key:+; a TLS client key goes to $key the same way})"
  else
    secrets="  2. If the broker wants a password (mqtt.username), put it in a file of mode 0600 owned by $SERVICE_USER
     and name it in mqtt.password_file"
  fi
  cat <<EOF

Next steps (the service is neither enabled nor started):
  1. Set the broker, the camera and the door zone:
       sudo nano /etc/edgecam/edgecam.toml
$secrets
  3. Check the settings:
       sudo /opt/edgecam/venv/bin/edgecam check-config --config /etc/edgecam/edgecam.toml
  4. With the door shut and nobody in the doorway, teach it the closed door:
       sudo -u $SERVICE_USER env STATE_DIRECTORY=/var/lib/edgecam /opt/edgecam/venv/bin/edgecam calibrate --config /etc/edgecam/edgecam.toml
  5. Start it, now and at every boot:
       sudo systemctl enable --now edgecam
  6. Watch it:
       journalctl -u edgecam -f
EOF
}

# ---- run -------------------------------------------------------------------------------------------------------------

target=${PREFIX:-/}
if ((DRY_RUN)); then
  echo "$ME: installing edgecam from $REPO into $target (dry run: nothing is changed)"
else
  echo "$ME: installing edgecam from $REPO into $target"
fi
printf '%s\n' "${CHECK_LINES[@]}"
report_refusals
for warning in "${WARNINGS[@]}"; do
  echo "$ME: warning: $warning" >&2
done

packages
service_user
ensure_dir "$OPT" 0755 root:root
venv
install_file "$REPO/README.md" "$OPT/README.md" 0644 root:root "the unit's Documentation="
ensure_dir "$ETC" 0755 root:root
config
while read -r dir; do
  ensure_dir "$PREFIX$dir" 0700 root:root
done < <(unit_credentials | while read -r _ path; do dirname -- "$path"; done | sort -u)
ensure_dir "$STATE" 0700 "$SERVICE_USER:$SERVICE_USER"
unit
udev
next_steps
