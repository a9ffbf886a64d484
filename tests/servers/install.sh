#!/bin/sh
# Install the XMPP servers the integration tests run (Debian packages).
# Idempotent: installs only what is missing, runs `apt-get update` at most once and
# only when something is missing. Quiet unless it fails (then the apt log is printed).
set -eu

# postgresql-client: psql, to create libervia-pubsub's database on the running PostgreSQL
PACKAGES="ejabberd prosody lua-dbi-sqlite3 libervia-pubsub postgresql-client openssl"

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d: the packages' maintainer scripts must not start system-wide instances
# (the tests run private ones).
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
fi
status=0
{
    $SUDO apt-get update -q &&
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing
} >"$log" 2>&1 || status=$?
[ -n "$created_policy" ] && $SUDO rm -f "$policy"
if [ "$status" -ne 0 ]; then
    echo "install.sh: failed to install:$missing" >&2
    cat "$log" >&2
    exit "$status"
fi
exit 0
