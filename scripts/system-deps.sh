#!/bin/sh
# Debian packages Warmline's speech features need; idempotent, quiet, safe to run from `make`.
#   espeak-ng + libespeak-ng1   pyttsx3's text-to-speech engine (voice/speech.py, Pyttsx3Synthesizer)
#   flite                       natural-enough voices for speech-recognition tests and bench/speech_routing.py
#                               (PocketSphinx cannot recognise espeak's voice)
#   sox + libsox-fmt-base       telephone-band conversion (8 kHz µ-law, 300-3400 Hz) in the tests and the bench
#   graphviz                    `warmline flows graph`
#   chromium                    the rep console's browser tests (tests/browser: Playwright drives it)
# Installs only what is missing (dpkg -s), runs `apt-get update` at most once, and exits non-zero with a message
# saying what to do when it cannot (not root and no sudo, no apt-get, a failed install).
set -eu

PACKAGES="espeak-ng libespeak-ng1 flite sox libsox-fmt-base graphviz chromium"

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done
[ -z "$missing" ] && exit 0

fail() {
    echo "scripts/system-deps.sh: $1" >&2
    echo "scripts/system-deps.sh: install these Debian packages yourself:$missing" >&2
    exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found (not a Debian/Ubuntu system)"
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
else
    fail "need root (or password-less sudo) to install:$missing"
fi

echo "scripts/system-deps.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086  # $as_root and $missing are word lists on purpose
if ! $as_root apt-get install -y -qq --no-install-recommends $missing >"$log" 2>&1; then
    # Usually a stale or empty package index (fresh container): refresh it once and try again.
    $as_root apt-get update -qq >>"$log" 2>&1 || { cat "$log" >&2; fail "apt-get update failed"; }
    $as_root apt-get install -y -qq --no-install-recommends $missing >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; fail "apt-get install failed"; }
fi

for package in $missing; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || fail "$package is still not installed"
done
