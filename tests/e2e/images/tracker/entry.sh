#!/bin/sh
# Entry contract of the official torrust/tracker image, written for this tier (not a copy).
# Source of the contract: torrust/torrust-tracker v3.0.0 `share/container/entry_script_sh` and
# `Containerfile` (runtime stage): create user `torrust` with uid $USER_ID (>= 1000), create and
# chown -R $USER_ID /var/lib/torrust /var/log/torrust /etc/torrust (chmod 2770), require
# TORRUST_TRACKER_CONFIG_OVERRIDE_CORE__DATABASE__DRIVER to be sqlite3 or mysql, require RUNTIME,
# then drop to `torrust` (upstream: su-exec; here util-linux setpriv, same setgroups/setgid/setuid).
# These are exactly the steps that need CHOWN, FOWNER, DAC_OVERRIDE, SETGID and SETUID.
set -eu
if [ -z "${USER_ID:-}" ] || [ "$USER_ID" -lt 1000 ]; then
    echo "ERROR: USER_ID is not set, or less than 1000"; exit 1
fi
id torrust >/dev/null 2>&1 || useradd --uid "$USER_ID" --user-group --create-home --shell /bin/sh torrust
mkdir -p /var/lib/torrust/tracker/database/ /etc/torrust/tracker/
chown -R "$USER_ID:$USER_ID" /var/lib/torrust /var/log/torrust /etc/torrust
chmod -R 2770 /var/lib/torrust /var/log/torrust /etc/torrust
driver="$(echo "${TORRUST_TRACKER_CONFIG_OVERRIDE_CORE__DATABASE__DRIVER:-}" | tr '[:upper:]' '[:lower:]')"
case "$driver" in
    sqlite3|mysql) ;;
    *) echo "Error: Unsupported Database Type: \"$driver\"."; exit 1 ;;
esac
case "${RUNTIME:-}" in
    runtime|debug|release) ;;
    *) echo "ERROR: running in unknown mode: \"${RUNTIME:-}\""; exit 1 ;;
esac
cd /home/torrust
exec setpriv --reuid=torrust --regid=torrust --init-groups "$@"
