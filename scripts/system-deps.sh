#!/usr/bin/env bash
# Debian packages the test suite drives for real: Chromium (the web page test), Prometheus
# (scraping the app's metrics), PostgreSQL and MariaDB (the registry's other backends), Redis
# (the store of a highly available head: `make run-ha`, `make test-ha`).
# Idempotent: installs only what is missing. Needs root (CI and the dev machines run as root).
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v prometheus >/dev/null || missing+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v mariadbd >/dev/null || missing+=(mariadb-server)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: need root to install: ${missing[*]} (or install them yourself)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
