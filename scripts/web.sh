#!/usr/bin/env bash
# The web page's build: `install` (npm ci in web/; Debian's chromium and chromium-driver
# for the browser test, as root, when missing) and `build` (vite → web/dist, with .gz and,
# when the brotli tool is there, .br copies the daemon serves to clients that accept them).
#   bash scripts/web.sh install | install-page | build | test
# `install-page` is `install` without the browser (what the demo needs to build the page).
# `test` runs the browser test (tests/it/browser.rs) alone; it skips, saying why, without
# chromium or web/node_modules. The daemon serves web/dist at / (see --web-dir).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/web"

apt_install() {
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

page_deps() {
    if ! command -v npm >/dev/null; then
        echo "==> installing Node.js and npm (Debian)"
        apt_install nodejs npm
    fi
    echo "==> npm ci (web/)"
    npm ci --no-audit --no-fund
}

case "${1:-}" in
install-page)
    page_deps
    ;;
install)
    page_deps
    missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
    command -v brotli >/dev/null || missing+=(brotli)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing ${missing[*]} (Debian)"
        apt_install "${missing[@]}"
    fi
    ;;
build)
    [ -d node_modules ] || { echo "error: run 'bash scripts/web.sh install' first" >&2; exit 1; }
    echo "==> vite build (web/dist)"
    npx vite build --logLevel warn
    # Precompressed copies: the daemon sends them as they are (no compression at request time).
    find dist -type f \( -name '*.js' -o -name '*.css' -o -name '*.html' -o -name '*.svg' -o -name '*.json' \) |
        while read -r f; do
            gzip -9 -k -f "$f"
            if command -v brotli >/dev/null; then brotli -q 11 -k -f "$f"; fi
        done
    ls -l dist/assets | tail -n +2
    ;;
test)
    cd "$root"
    cargo test -p christmas-tests --test it -- browser:: --nocapture
    ;;
*)
    echo "usage: $0 install | install-page | build | test" >&2
    exit 2
    ;;
esac
