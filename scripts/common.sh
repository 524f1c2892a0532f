# Shared by scripts/demo and scripts/test: make the venv, install Mosquitto, find a free port. Source it; don't run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
# Home Assistant's virtual environments (scripts/install-homeassistant), outside the clone so a new clone reuses them.
HOMEASSISTANT_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/edgecam-test

as_root() {
  if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  echo "installing $* with apt-get" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_mosquitto() {
  command -v mosquitto 2>/dev/null || { [[ -x /usr/sbin/mosquitto ]] && echo /usr/sbin/mosquitto; } || true
}

ensure_mosquitto() {
  [[ -n $(find_mosquitto) ]] || apt_install mosquitto
  MOSQUITTO=$(find_mosquitto)
  [[ -n $MOSQUITTO ]] || { echo "Mosquitto could not be installed; install the Debian package 'mosquitto'" >&2; exit 1; }
}

# Tools the tests compare against: adjtimex (the kernel's clock status, for time_synced), systemd-analyze
# (package systemd), which checks systemd/edgecam.service and scores its sandbox, and nats-server, a broker that
# speaks only MQTT 3.1.1 (tests/integration/test_broker_faults.py), and mkfs.ext4 (e2fsprogs) for the SD card that
# turns read-only (tests/integration/test_storage_faults.py).
ensure_test_tools() {
  command -v adjtimex >/dev/null 2>&1 || [[ -x /usr/sbin/adjtimex ]] || apt_install adjtimex
  command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]] || apt_install nats-server
  command -v mkfs.ext4 >/dev/null 2>&1 || [[ -x /usr/sbin/mkfs.ext4 ]] || apt_install e2fsprogs
  command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
  command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze is missing; install the package 'systemd'" >&2; exit 1; }
  # The typeface of the notice's PNG (edgecam.notice.FONT), with the letters of European names.
  [[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || apt_install fonts-dejavu-core
  # A real headless browser for the HTML pages' tests (tests/browser.py drives it over its DevTools pipe). Ubuntu
  # has no such package (its chromium is a snap, which does not run in containers): there those tests skip.
  [[ -x /usr/lib/chromium/chromium ]] || apt_install chromium ||
    echo "no Debian package chromium here: the tests of the HTML pages will skip" >&2
}

# Creates .venv and installs edgecam with its dev tools; reinstalls only when pyproject.toml changed.
ensure_venv() {
  if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
  fi
  local stamp="$VENV/.edgecam-installed"
  if [[ ! -f $stamp || $ROOT/pyproject.toml -nt $stamp ]]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
    touch "$stamp"
  fi
}

free_port() {
  "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
  local port=$1
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing is listening on 127.0.0.1:$port" >&2
  return 1
}
