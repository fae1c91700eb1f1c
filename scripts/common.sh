# Helpers shared by scripts/services.sh and scripts/citus.sh (sourced, not run). They expect
# svc_user, the system user the servers run as when the scripts run as root.

say() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# The directory of PostgreSQL's programs (pg_config's, else the newest Debian one).
pg_bindir() {
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# Runs a command as the service user when root, else as ourselves.
as_svc() {
    # From /, so a working directory the service user cannot enter does not matter.
    if is_root; then (cd / && runuser -u "$svc_user" -- "$@"); else "$@"; fi
}
