#!/usr/bin/env bash
# Set up everything streamrnn needs on a fresh machine, then run the demo or the tests.
#
#   bash deploy/quickstart.sh demo [streamrnn demo options]
#   bash deploy/quickstart.sh test [pytest options]
#   bash deploy/quickstart.sh setup
#
# Needs Python >= 3.11. Installs Java 17 and Maven (and systemd-analyze, for the unit-file
# test) from Debian packages when they are missing and this runs as root; creates .venv and installs streamrnn with its dev
# dependencies into it (torch is large: the first install takes a few minutes, pip's cache
# makes later ones fast); resolves the Kafka broker's jars from Maven Central once.
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:-}
case "$action" in
  demo|test|setup) shift ;;
  *) echo "usage: bash deploy/quickstart.sh demo|test|setup [args...]" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "streamrnn needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Java 17 and Maven (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  else
    echo "the local Kafka broker needs Java >= 17 and Maven (mvn) on PATH" >&2
    exit 1
  fi
fi

# systemd-analyze checks deploy/systemd/streamrnn.service in the tests (skipped without it).
if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing systemd-analyze (Debian package systemd)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
say "installing streamrnn and its dependencies into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

say "resolving the Kafka broker's jars (Maven Central, first run only)"
.venv/bin/python -c 'from streamrnn.local_broker import ensure_jars; print(ensure_jars())'

case "$action" in
  demo) say "running the demo"; exec .venv/bin/streamrnn demo "$@" ;;
  test) say "running the tests"; exec .venv/bin/python -m pytest "$@" ;;
  setup) say "ready: activate with 'source .venv/bin/activate'" ;;
esac
