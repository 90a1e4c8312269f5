#!/usr/bin/env bash
# Debian/Ubuntu packages the tests use, installed when missing: mariadb-server (the tests start a
# throw-away MariaDB to run ML Metadata on MySQL, as a team's shared store does), chromium and
# chromium-driver (the run browser's tests drive a real headless browser; nothing downloads one),
# prometheus for its promtool (the alert rules are checked and unit-tested with Prometheus's own
# tool; the Prometheus service the package sets up is stopped and disabled again where systemd runs).
# As root, or with sudo; on another system it says what to install and fails.
set -euo pipefail

need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: install ${need[*]} with your package manager (the tests start a local MariaDB and" \
       "drive a headless Chromium through chromedriver, both found on PATH)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "system-deps: installing ${need[*]}"
if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}" >/dev/null 2>&1; then
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}" >/dev/null
fi
if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1 \
    && systemctl is-active --quiet prometheus 2>/dev/null; then
  echo "system-deps: stopping and disabling the prometheus service the package started (only promtool is needed)"
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
