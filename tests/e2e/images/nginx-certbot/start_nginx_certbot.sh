#!/bin/bash
# Minimal entry with the jonasal/nginx-certbot contract our config relies on, written for this tier
# (not a copy). Source of the contract: JonasAlfredsson/docker-nginx-certbot src/scripts/
# start_nginx_certbot.sh (nginx in the foreground + a certbot loop, exit when either exits),
# util.sh (user_conf.d/*.conf linked into conf.d; a config whose certificate files are missing is
# disabled as *.nokey until certbot produced them), run_certbot.sh (webroot /var/www/letsencrypt,
# cert name from `ssl_certificate_key /etc/letsencrypt/live/<name>/privkey.pem`, domains from
# server_name, STAGING=1 -> CERTBOT_STAGING_URL, USE_ECDSA=1 -> ecdsa key, then `nginx -s reload`).
set -uo pipefail

link_user_configs() {
    for conf in /etc/nginx/user_conf.d/*.conf; do
        [ -e "$conf" ] && ln -sf "$conf" "/etc/nginx/conf.d/$(basename "$conf")"
    done
}

# Directive lines only, as util.sh's parse_keyfiles/parse_fullchains/parse_chains (`^\s*ssl_...\s+(.*);`):
# a comment that names a directive is not one.
cert_files() { grep -E '^\s*ssl_(certificate|certificate_key|trusted_certificate)\s+[^;]+;' "$1" | awk '{print $2}' | tr -d ';'; }

auto_enable_configs() {
    for conf in /etc/nginx/conf.d/*.conf /etc/nginx/conf.d/*.conf.nokey; do
        [ -e "$conf" ] || continue
        ok=1
        for file in $(cert_files "$conf"); do [ -s "$file" ] || ok=0; done
        if [ "$ok" = 1 ] && [ "${conf%.nokey}" != "$conf" ]; then
            mv "$conf" "${conf%.nokey}"; echo "enabling ${conf%.nokey}"
        elif [ "$ok" = 0 ] && [ "${conf%.nokey}" = "$conf" ]; then
            mv "$conf" "$conf.nokey"; echo "certificate files of $conf missing, disabling"
        fi
    done
}

run_certbot() {
    local url="${CERTBOT_PRODUCTION_URL:-https://acme-v02.api.letsencrypt.org/directory}"
    [ "${STAGING:-0}" = 1 ] && url="${CERTBOT_STAGING_URL:-https://acme-staging-v02.api.letsencrypt.org/directory}"
    local key_type=rsa
    [ "${USE_ECDSA:-1}" = 1 ] && key_type=ecdsa
    for conf in /etc/nginx/conf.d/*.conf /etc/nginx/conf.d/*.conf.nokey; do
        [ -e "$conf" ] || continue
        # shellcheck disable=SC2013  # names and domains never contain spaces
        for name in $(grep -E '^\s*ssl_certificate_key\s+/etc/letsencrypt/live/[^/]+/privkey.pem;' "$conf" | sed -E 's|.*/live/([^/]+)/.*|\1|' | sort -u); do
            domains=$(grep -oE '^\s*server_name\s+[^;]+' "$conf" | sed -E 's/^\s*server_name\s+//' | tr ' ' '\n' | grep -v '^_$' | sort -u | sed 's/^/-d /' | tr '\n' ' ')
            echo "requesting certificate '$name' for $domains from $url"
            # shellcheck disable=SC2086
            certbot certonly --agree-tos --keep -n --text --preferred-challenges http \
                --authenticator webroot --webroot-path /var/www/letsencrypt \
                --email "${CERTBOT_EMAIL}" --server "$url" --key-type "$key_type" \
                --elliptic-curve "${ELLIPTIC_CURVE:-secp256r1}" --cert-name "$name" $domains
        done
    done
    auto_enable_configs
    nginx -t && nginx -s reload
}

trap 'kill -TERM $NGINX_PID $LOOP_PID 2>/dev/null; wait' TERM INT QUIT
link_user_configs
auto_enable_configs
nginx -g "daemon off;" &
NGINX_PID=$!
( while true; do run_certbot; sleep "${RENEWAL_INTERVAL:-8d}"; done ) &
LOOP_PID=$!
wait -n $NGINX_PID $LOOP_PID
exit $?
