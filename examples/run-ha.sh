#!/usr/bin/env bash
# Starts the high-availability example in the foreground on loopback: a
# three-member etcd, three control-plane replicas sharing the policy in it,
# the voice back end, and one Envoy whose bootstrap lists all three
# replicas. Envoy and the back end use the ports of `make run`. Ctrl-C (or
# SIGTERM) stops everything it started. Called by `make run-ha`.
set -euo pipefail

: "${ENVOY_BIN:?}" "${ETCD_BIN:?}" "${BIN:?}" "${POLICY:?}"
: "${LISTEN_PORT:=10000}" "${ADMIN_PORT:=9901}" "${VOICE_PORT:=8081}" "${REST_PORT:=8082}" "${TCP_PORT:=10001}"
# Replica N (1..3) listens on 180N0 + 0 xDS, 1 admin API, 2 metrics, 3 modules;
# etcd member N on 2N379 (clients) and 2N380 (peers).
: "${HA_LEASE_TTL:=5s}"

run_dir=.run-ha
mkdir -p "$run_dir"
# It holds the demo HMAC key: only this user may read it.
(umask 077; rm -f "$run_dir/policy.yaml"; sed -e "s/127.0.0.1:10000/127.0.0.1:${LISTEN_PORT}/" -e "s/127.0.0.1:10001/127.0.0.1:${TCP_PORT}/" \
    -e "s/127.0.0.1:8081/127.0.0.1:${VOICE_PORT}/g" -e "s/localhost:8081/localhost:${VOICE_PORT}/g" \
    -e "s/127.0.0.1:8082/127.0.0.1:${REST_PORT}/" "$POLICY" > "$run_dir/policy.yaml")
certs="$(pwd)/$run_dir/certs"
[ -f "$certs/nodes/envoy-local.crt" ] || "$BIN/dpctl" certs -dir "$certs" -hosts 127.0.0.1,localhost -nodes envoy-local >/dev/null

xds=() modules=() cluster=() endpoints=()
for n in 1 2 3; do
  xds+=("127.0.0.1:180$((n - 1))0") modules+=("127.0.0.1:180$((n - 1))3")
  cluster+=("etcd$n=http://127.0.0.1:2${n}380") endpoints+=("127.0.0.1:2${n}379")
done
join() { local IFS=,; echo "$*"; }
"$BIN/envoy-bootstrap" -admin-port "$ADMIN_PORT" -node envoy-local \
  -xds-addr "$(join "${xds[@]}")" -modules-addr "$(join "${modules[@]}")" \
  -tls-ca "$certs/ca.crt" -tls-cert "$certs/nodes/envoy-local.crt" -tls-key "$certs/nodes/envoy-local.key" > "$run_dir/envoy.yaml"
mkdir -p "$run_dir/envoy"

pids=() etcd_pids=()
stop() {
  # A second Ctrl-C must not cut the shutdown short (or make this script
  # die of it): stopping takes a moment and ends on its own.
  trap '' INT TERM
  trap - EXIT
  echo ">> stopping"
  kill "${pids[@]}" 2>/dev/null || true
  # etcd last, once the replicas are gone: a replica that loses it while
  # shutting down logs every retry.
  gone "${pids[@]}"
  kill "${etcd_pids[@]}" 2>/dev/null || true
  gone "${etcd_pids[@]}"
}
# gone waits until none of the processes is left, for at most 15 s.
gone() {
  local p
  for _ in $(seq 150); do
    for p in "$@"; do kill -0 "$p" 2>/dev/null && break; p=; done
    [ -z "$p" ] && return 0
    sleep 0.1
  done
}
# Ctrl-C and SIGTERM are how this is meant to end: a clean exit, not
# make's "Error 130". Whatever ends first (the signal or a process it
# also reached), the script stops everything and exits 0 when signalled.
interrupted=
trap 'interrupted=1' INT TERM
trap stop EXIT

# A fresh etcd every run: the seed policy below is the one served.
rm -rf "$run_dir"/etcd?
# etcd reads every ETCD_* variable as a flag and warns about ETCD_BIN,
# which make exports; setsid keeps Ctrl-C from reaching it before the
# replicas have stopped. Its log, and the gRPC warnings it prints when its
# peers go, are in .run-ha/etcdN.log.
for n in 1 2 3; do
  env -u ETCD_BIN setsid "$ETCD_BIN" --name "etcd$n" --data-dir "$run_dir/etcd$n" --log-level warn --logger zap --log-outputs "$run_dir/etcd$n.log" \
    --listen-client-urls "http://127.0.0.1:2${n}379" --advertise-client-urls "http://127.0.0.1:2${n}379" \
    --listen-peer-urls "http://127.0.0.1:2${n}380" --initial-advertise-peer-urls "http://127.0.0.1:2${n}380" \
    --initial-cluster "$(join "${cluster[@]}")" --initial-cluster-state new --initial-cluster-token directpipe-run-ha \
    2>>"$run_dir/etcd$n.log" &
  etcd_pids+=($!)
done

"$BIN/voice-backend" -addr "127.0.0.1:${VOICE_PORT}" -rest-addr "127.0.0.1:${REST_PORT}" &
backend=$!
pids+=($backend)
for n in 1 2 3; do
  p="180$((n - 1))"
  "$BIN/directpipe" -store "etcd://$(join "${endpoints[@]}")" -replica "cp$n" -lease-ttl "$HA_LEASE_TTL" \
    -policy "$run_dir/policy.yaml" -wasm "$BIN/handshake.wasm" \
    -xds-addr "127.0.0.1:${p}0" -admin-addr "127.0.0.1:${p}1" -metrics-addr "127.0.0.1:${p}2" -modules-addr "127.0.0.1:${p}3" \
    -xds-tls-cert "$certs/server.crt" -xds-tls-key "$certs/server.key" -xds-client-ca "$certs/ca.crt" &
  pids+=($!)
  # The first replica writes the admin token the others then read.
  [ "$n" = 1 ] && sleep 1
done
(cd "$run_dir/envoy" && exec "$ENVOY_BIN" -c ../envoy.yaml --use-dynamic-base-id -l warning --drain-time-s 10) &
envoy=$!
pids+=($envoy)

echo ">> directpipe HA is starting: ws://127.0.0.1:${LISTEN_PORT}/v1/voice  http://127.0.0.1:${LISTEN_PORT}/api/health"
echo ">> replicas cp1 cp2 cp3: xDS ${xds[*]}; admin API 127.0.0.1:18001 / 18011 / 18021; /readyz on 18002 / 18012 / 18022"
echo ">> etcd $(join "${endpoints[@]}")   Envoy admin http://127.0.0.1:${ADMIN_PORT}"
echo ">> token: make -s token   status: bin/dpctl status (any replica: --addr 127.0.0.1:18011)   Ctrl-C stops everything"
# Replicas may die (that is the point: kill one and watch Envoy move);
# stop everything when Envoy or the back end does.
status=0
wait -n "$envoy" "$backend" || status=$?
stop
[ -n "$interrupted" ] && exit 0
exit "$status"
