#!/usr/bin/env bash
# DNS gate: wait until every public name resolves, through public resolvers (as Let's Encrypt will
# see it), to the server's Primary IPs; only then are Pingoo and nginx+certbot created, so that
# their first ACME attempts can succeed (Pingoo retries only every 6 hours).
#
# usage: wait-for-dns.sh NAME,TYPE,EXPECTED ...   EXPECTED empty: no record of that type may exist
# env:   DNS_GATE_TIMEOUT (seconds, default 1800)   DNS_GATE_RESOLVERS ("1.1.1.1 8.8.8.8 9.9.9.9")
#        DNS_GATE_PORT (53)   DNS_GATE_INTERVAL (seconds between rounds, 15)   DNS_GATE_TTL (300)
# exit:  0 when every record is right at every resolver; 1 on timeout, with what is missing or
#        wrong and the exact records to create; 2 on bad usage.
set -u

timeout=${DNS_GATE_TIMEOUT:-1800}
resolvers=${DNS_GATE_RESOLVERS:-1.1.1.1 8.8.8.8 9.9.9.9}
port=${DNS_GATE_PORT:-53}
interval=${DNS_GATE_INTERVAL:-15}
ttl=${DNS_GATE_TTL:-300}

if [ "$#" -eq 0 ]; then
  echo "usage: $0 NAME,TYPE,EXPECTED ..." >&2
  exit 2
fi
if ! command -v dig >/dev/null 2>&1; then
  echo "dns gate: dig is not installed (package bind9-dnsutils)" >&2
  exit 2
fi

problems=()

# One round: every record at every resolver. Fills `problems`; returns 0 when there are none.
check_round() {
  problems=()
  local spec name type expected resolver output rc got
  for spec in "$@"; do
    IFS=, read -r name type expected <<<"$spec"
    for resolver in $resolvers; do
      output=$(dig +short +time=3 +tries=2 -p "$port" "@$resolver" "$name" "$type" 2>&1)
      rc=$?
      if [ "$rc" -ne 0 ]; then
        problems+=("$name $type: resolver $resolver did not answer (dig exit $rc)")
        continue
      fi
      # +short also prints CNAME targets; keep the addresses only, sorted, comma separated.
      got=$(printf '%s\n' "$output" | grep -E '^[0-9a-fA-F.:]+$' | grep -E '[.:]' | sort | paste -sd, -)
      if [ "$got" != "$expected" ]; then
        if [ -z "$expected" ]; then
          problems+=("$name $type: resolver $resolver answers $got, but no $type record may exist (remove it)")
        elif [ -z "$got" ]; then
          problems+=("$name $type: missing at resolver $resolver (want $expected)")
        else
          problems+=("$name $type: resolver $resolver answers $got, want $expected")
        fi
      fi
    done
  done
  [ "${#problems[@]}" -eq 0 ]
}

start=$(date +%s)
round=0
while :; do
  round=$((round + 1))
  if check_round "$@"; then
    echo "dns gate: all $# records correct at: $resolvers (round $round, $(($(date +%s) - start)) s)"
    exit 0
  fi
  elapsed=$(($(date +%s) - start))
  if [ "$elapsed" -ge "$timeout" ]; then
    break
  fi
  echo "dns gate: ${#problems[@]} problem(s) after $elapsed s, e.g. ${problems[0]}; retrying in $interval s"
  sleep "$interval"
done

{
  echo "dns gate: DNS is not right after $timeout s; the edges (Pingoo, nginx+certbot) were not started."
  echo "Missing or wrong:"
  printf '  - %s\n' "${problems[@]}"
  echo "Create exactly these records (zone file syntax), remove any other A/AAAA for these names:"
  for spec in "$@"; do
    IFS=, read -r name type expected <<<"$spec"
    if [ -n "$expected" ]; then
      echo "  $name. $ttl IN $type $expected"
    fi
  done
  echo "Then run 'pulumi up' again (or skip the gate: pulumi config set --path 'dns.skipGate' true)."
  echo "Note: resolvers cache a missing name for the zone's negative TTL (SOA minimum) before retrying."
} >&2
exit 1
