#!/usr/bin/env bash
# Installs edgecam from this repository on Raspberry Pi OS (Bookworm or later) as a systemd service.
# Idempotent: each run checks before it acts, and says "already present" or "kept" for what is there.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: sudo scripts/install-pi.sh [--dry-run] [--prefix DIR] [--skip-packages] [--no-venv] [--python PATH] [--force]

Installs edgecam from this repository on Raspberry Pi OS Bookworm or later, and prints the next steps:
  OS packages    python3-picamera2 python3-venv python3-lgpio mosquitto-clients (apt-get)
  system user    edgecam, in the groups video (the camera) and gpio (a door contact) when they exist
  venv           /opt/edgecam/venv, --system-site-packages so it sees picamera2, with edgecam pip-installed
                 from this repository; the OS numpy is kept (picamera2's compiled modules need it)
  settings       /etc/edgecam/edgecam.toml from edgecam.example.toml (0640), never overwritten;
                 the root-only directory (0700) of the secrets the unit loads (LoadCredential=)
  service        /etc/systemd/system/edgecam.service (not enabled, not started), /var/lib/edgecam (0700)
  udev rule      /etc/udev/rules.d/60-edgecam-dma-heap.rules: the video group may use /dev/dma_heap/*
Each run checks before it acts: what is already there is reported "already present" (or "kept").

Options:
  --dry-run        print every action, one line each, and change nothing
  --prefix DIR     install the files under DIR instead of /, and skip apt-get, the user, systemctl and
                   udevadm (for tests; the venv's scripts point into DIR)
  --skip-packages  do not install OS packages (install them yourself)
  --no-venv        do not create the venv nor install edgecam into it
  --python PATH    the OS Python whose packages the venv sees (default /usr/bin/python3)
  --force          install on a machine that is not a Raspberry Pi with Raspberry Pi OS Bookworm or later
  -h, --help       show this help
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
OS_PACKAGES=(python3-picamera2 python3-venv python3-lgpio mosquitto-clients)
OPT=$PREFIX/opt/edgecam
VENV=$OPT/venv
ETC=$PREFIX/etc/edgecam
CONFIG=$ETC/edgecam.toml
STATE=$PREFIX/var/lib/edgecam
UNIT=$PREFIX/etc/systemd/system/edgecam.service
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

# ---- refuse early, before any output, what cannot work -----------------------------------------------------------

model=""
[[ -r /proc/device-tree/model ]] && model=$(tr -d '\0' </proc/device-tree/model)
os_version=""
[[ -r /etc/os-release ]] && os_version=$(sed -n 's/^VERSION_ID="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)
if ((!DRY_RUN)) && [[ -z $PREFIX ]]; then
  if ((!FORCE)) && [[ $model != *"Raspberry Pi"* ]]; then
    die "this is not a Raspberry Pi (/proc/device-tree/model: ${model:-none}); --dry-run shows the steps," \
      "--prefix DIR installs into a directory, --force installs here anyway"
  fi
  if ((!FORCE)) && ! [[ $os_version =~ ^[0-9]+$ && $os_version -ge 12 ]]; then
    die "needs Raspberry Pi OS Bookworm (12) or later, this is version ${os_version:-unknown} (--force installs anyway)"
  fi
  ((EUID == 0)) || die "installing needs root: sudo $0 ${ARGS[*]}"
fi

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
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    say "already present" "$what"
    return 0
  fi
  # No recommends: python3-picamera2 recommends the Qt and OpenGL preview windows, useless without a screen.
  step run "apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" apt_install "${missing[@]}"
}

apt_install() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

comma_list() {
  local IFS=,
  echo "$*"
}

service_user() {
  local groups=(video) g
  getent group gpio >/dev/null && groups+=(gpio) # Raspberry Pi OS: /dev/gpiochip* for a door contact
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

pip_install() { # pip_install HASH [REQUIREMENT...]
  local hash=$1 src
  shift
  # Build from a copy, so that pip's build/ and *.egg-info are not left in the repository (as root).
  workdir
  src=$WORK/src
  mkdir -p "$src"
  tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md edgecam | tar -C "$src" -xf -
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --no-input "$src" "$@"
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

  local hash version pin requirements=()
  hash=$(source_hash)
  version=$(edgecam_version)
  pin=$(os_numpy_pin)
  [[ -z $pin ]] || requirements+=("$pin")
  what="edgecam $version from $REPO into $VENV (pip${pin:+, keeping the OS $pin})"
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

unit() {
  CHANGED=0
  install_file "$REPO/systemd/edgecam.service" "$UNIT" 0644 root:root "from systemd/edgecam.service"
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
