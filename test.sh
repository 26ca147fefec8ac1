#!/usr/bin/env bash
# Runs every test of llmgw, after setting up what the tests need:
#   - etcd (Debian's etcd-server, 3.4) for the control-plane store tests, and etcd 3.5 (Debian
#     trixie's etcd-server, unpacked into .cache, not installed) to run the etcd tests again,
#   - a Python venv in .venv with the official openai and anthropic SDKs,
# then formatting and lint checks, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '\n== %s\n' "$*" >&2; }

if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
  log "installing etcd-server (Debian)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
fi

ETCD35="$PWD/.cache/etcd-3.5/usr/bin/etcd"
if [ ! -x "$ETCD35" ]; then
  log "fetching etcd 3.5 (Debian trixie's etcd-server package, unpacked into .cache)"
  apt_dir="$PWD/.cache/apt-trixie"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1 -qq)
  apt-get "${apt_opts[@]}" update
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" download etcd-server 2>/dev/null)
  dpkg-deb -x "$(ls "$apt_dir"/etcd-server_3.5*.deb | tail -n 1)" "$PWD/.cache/etcd-3.5"
fi

if ! .venv/bin/python -c 'import openai, anthropic' >/dev/null 2>&1; then
  log "creating .venv with the official SDKs"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
fi
export LLMGW_TEST_PYTHON="$PWD/.venv/bin/python"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci "$@"
  log "the etcd tests again, on $("$ETCD35" --version | head -n 1)"
  LLMGW_ETCD_BIN="$ETCD35" cargo nextest run --workspace --locked --profile ci -E 'test(/etcd|cluster::/)'
else
  cargo test --workspace --locked "$@"
  log "the etcd tests again, on $("$ETCD35" --version | head -n 1)"
  LLMGW_ETCD_BIN="$ETCD35" cargo test --workspace --locked etcd
fi
