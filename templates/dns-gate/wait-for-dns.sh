#!/usr/bin/env bash
# DNS gate: wait until every public name resolves, through public resolvers (as Let's Encrypt will
# see it), to the server's Primary IPs; only then are Pingoo and nginx+certbot created, so that
# their first ACME attempts can succeed (Pingoo retries only every 6 hours).
#
# usage: wait-for-dns.sh NAME,TYPE,EXPECTED ...   EXPECTED empty: no record of that type may exist
#        TYPE CAA: EXPECTED is the record the deployment wants; the check passes when the CAA set that
#        applies to NAME (RFC 8659: the first one found climbing towards the root) is empty or lets
#        letsencrypt.org issue with every method EXPECTED names (RFC 8657 validationmethods), so that
#        an edge's ACME client is never refused by a CAA record left from another edge or by hand.
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

# The CAA records that apply to $1 at resolver $2: the name that holds them on the first line, then
# one record per line; returns 1 when no name up to the root has any, 2 when the resolver does not
# answer.
relevant_caa() {
  local name=$1 resolver=$2 output
  while [ -n "$name" ]; do
    if ! output=$(dig +short +time=3 +tries=2 -p "$port" "@$resolver" "$name" CAA 2>&1); then
      return 2
    fi
    output=$(printf '%s\n' "$output" | grep -E '^[0-9]+ (issue|issuewild|iodef) ' || true)
    if [ -n "$output" ]; then
      printf '%s\n%s\n' "$name" "$output"
      return 0
    fi
    case "$name" in
      *.*) name=${name#*.} ;;
      *) name="" ;;
    esac
  done
  return 1
}

# 0 when one of the `issue` records on stdin lets letsencrypt.org issue with every method in $1
# (comma separated); a record without validationmethods allows every method.
caa_permits() {
  local wanted=$1 tag value domain methods method ok
  while read -r _flags tag value; do
    [ "$tag" = "issue" ] || continue
    value=${value#\"}
    value=${value%\"}
    domain=${value%%;*}
    domain=${domain// /}
    [ "$domain" = "letsencrypt.org" ] || continue
    case "$value" in
      *validationmethods=*) methods=${value#*validationmethods=}; methods=${methods%%;*}; methods=${methods// /} ;;
      *) return 0 ;;
    esac
    ok=1
    for method in ${wanted//,/ }; do
      case ",$methods," in
        *",$method,"*) ;;
        *) ok=0 ;;
      esac
    done
    [ "$ok" -eq 1 ] && return 0
  done
  return 1
}

# CAA spec: does the applicable CAA set allow what `expected` (a full CAA record) needs?
check_caa() {
  local name=$1 expected=$2 resolver=$3 records rc wanted at
  wanted=${expected#*validationmethods=}
  wanted=${wanted%%\"*}
  records=$(relevant_caa "$name" "$resolver")
  rc=$?
  if [ "$rc" -eq 2 ]; then
    problems+=("$name CAA: resolver $resolver did not answer")
  elif [ "$rc" -eq 0 ]; then
    at=$(printf '%s\n' "$records" | head -n 1)
    records=$(printf '%s\n' "$records" | tail -n +2)
    if ! printf '%s\n' "$records" | caa_permits "$wanted"; then
      problems+=("$name CAA: resolver $resolver answers, at $at, $(printf '%s' "$records" | paste -sd';' -), which does not let letsencrypt.org issue by $wanted (want $expected)")
    fi
  fi
}

# One round: every record at every resolver. Fills `problems`; returns 0 when there are none.
check_round() {
  problems=()
  local spec name type expected resolver output rc got
  for spec in "$@"; do
    IFS=, read -r name type expected <<<"$spec"
    for resolver in $resolvers; do
      if [ "$type" = "CAA" ]; then
        check_caa "$name" "$expected" "$resolver"
        continue
      fi
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
  echo "Create exactly these records (zone file syntax), remove any other A/AAAA and CAA for these names:"
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
