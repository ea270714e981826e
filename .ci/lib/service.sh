# Starts the debug books-api (under CARGO_TARGET_DIR, or target/) on a loopback port with an embedded cluster of its own in a
# temporary folder, and waits until it is ready (webhooks to loopback receivers only when the caller
# sets WEBHOOKS_ALLOW_PRIVATE=true). Sets BASE_URL, WRITE_KEY and WORK; stops the
# service and removes the folder when the calling script exits. Source it; needs python3.

WORK="$(mktemp -d)"
# As root the embedded cluster runs as an unprivileged user, who must be able to enter the folder.
chmod 755 "$WORK"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE_URL="http://127.0.0.1:$port"
DATA_DIR="$WORK/postgres" RATE_LIMIT=0 BIND="127.0.0.1:$port" \
    WEBHOOKS_ALLOW_PRIVATE="${WEBHOOKS_ALLOW_PRIVATE:-false}" "${CARGO_TARGET_DIR:-target}/debug/books-api" \
    >"$WORK/stdout" 2>"$WORK/stderr" &
service_pid=$!
stop_service() {
    kill -TERM "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
    rm -rf "$WORK"
}
trap stop_service EXIT

python3 - "$BASE_URL" "$service_pid" <<'PY' || { cat "$WORK/stderr" >&2; exit 1; }
import os, sys, time, urllib.request
for _ in range(120):
    if not os.path.exists(f"/proc/{sys.argv[2]}"):
        sys.exit("the service exited before it was ready")
    try:
        urllib.request.urlopen(f"{sys.argv[1]}/readyz", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit("the service did not become ready")
PY
# The embedded default prints its first write key alone on the last line of standard output.
WRITE_KEY="$(tail -n 1 "$WORK/stdout")"
export BASE_URL WRITE_KEY WORK
