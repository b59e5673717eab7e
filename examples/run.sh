#!/usr/bin/env bash
# Starts the example voice back end, the control plane and Envoy in the
# foreground on loopback. Ctrl-C (or SIGTERM) stops everything it started.
# Called by `make run`, which passes the ports and paths.
set -euo pipefail

: "${ENVOY_BIN:?}" "${BIN:?}" "${POLICY:?}"
: "${LISTEN_PORT:=10000}" "${ADMIN_PORT:=9901}" "${XDS_PORT:=18000}" "${ADMIN_API_PORT:=18001}"
: "${METRICS_PORT:=18002}" "${VOICE_PORT:=8081}" "${REST_PORT:=8082}" "${TCP_PORT:=10001}" "${MODULES_PORT:=18003}"
# FILTER=native runs the handshake filter as an Envoy dynamic module, on
# the HTTP listener and the tcp mode listener alike.
: "${FILTER:=wasm}"
case "$FILTER" in
  wasm) native=() ;;
  native) native=(-native "$BIN/libdirectpipe_native.so") ;;
  *) echo "FILTER=$FILTER: want wasm or native" >&2; exit 2 ;;
esac

run_dir=.run
mkdir -p "$run_dir"
# The admin API rewrites the policy it serves; keep the committed example
# untouched and serve a copy, rewritten for the chosen ports. The copy is
# kept from one run to the next, so that what was applied survives a
# restart; `make reset` starts over from the example.
# It holds the demo HMAC key: only this user may read it.
ports="listen=${LISTEN_PORT} tcp=${TCP_PORT} voice=${VOICE_PORT} rest=${REST_PORT}"
if [ -f "$run_dir/policy.yaml" ]; then
  echo ">> serving $run_dir/policy.yaml as kept from the last run (make reset starts over from $POLICY)"
  if [ "$(cat "$run_dir/policy.ports" 2>/dev/null)" != "$ports" ]; then
    echo ">> warning: it was made for other ports ($(cat "$run_dir/policy.ports" 2>/dev/null || echo unknown)); make reset makes it for $ports"
  fi
else
  (umask 077; sed -e "s/127.0.0.1:10000/127.0.0.1:${LISTEN_PORT}/" -e "s/127.0.0.1:10001/127.0.0.1:${TCP_PORT}/" \
      -e "s/127.0.0.1:8081/127.0.0.1:${VOICE_PORT}/g" -e "s/localhost:8081/localhost:${VOICE_PORT}/g" \
      -e "s/127.0.0.1:8082/127.0.0.1:${REST_PORT}/" "$POLICY" > "$run_dir/policy.yaml")
  echo "$ports" > "$run_dir/policy.ports"
fi
# xDS and the modules go over mutual TLS, as to a remote Envoy: a CA, the
# control plane's certificate and envoy-local's, made once.
certs="$(pwd)/$run_dir/certs"
[ -f "$certs/nodes/envoy-local.crt" ] || "$BIN/dpctl" certs -dir "$certs" -hosts 127.0.0.1,localhost -nodes envoy-local >/dev/null
"$BIN/envoy-bootstrap" -admin-port "$ADMIN_PORT" -node envoy-local -filter "$FILTER" \
  -xds-addr "127.0.0.1:${XDS_PORT}" -modules-port "$MODULES_PORT" \
  -tls-ca "$certs/ca.crt" -tls-cert "$certs/nodes/envoy-local.crt" -tls-key "$certs/nodes/envoy-local.key" > "$run_dir/envoy.yaml"
mkdir -p "$run_dir/envoy"

pids=()
stop() {
  # A second Ctrl-C must not cut the shutdown short (or make this script
  # die of it): stopping takes a moment and ends on its own.
  trap '' INT TERM
  trap - EXIT
  echo ">> stopping"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
# Ctrl-C and SIGTERM are how this is meant to end: a clean exit, not
# make's "Error 130". Whatever ends first (the signal or a process it
# also reached), the script stops everything and exits 0 when signalled.
interrupted=
trap 'interrupted=1' INT TERM
trap stop EXIT

"$BIN/voice-backend" -addr "127.0.0.1:${VOICE_PORT}" -rest-addr "127.0.0.1:${REST_PORT}" &
pids+=($!)
"$BIN/directpipe" -policy "$run_dir/policy.yaml" -wasm "$BIN/handshake.wasm" "${native[@]}" \
  -xds-addr "127.0.0.1:${XDS_PORT}" -admin-addr "127.0.0.1:${ADMIN_API_PORT}" \
  -metrics-addr "127.0.0.1:${METRICS_PORT}" -modules-addr "127.0.0.1:${MODULES_PORT}" \
  -xds-tls-cert "$certs/server.crt" -xds-tls-key "$certs/server.key" -xds-client-ca "$certs/ca.crt" &
pids+=($!)
# Envoy runs in a directory of its own: its modules come from the control
# plane, by sha256, over HTTPS.
(cd "$run_dir/envoy" && exec "$ENVOY_BIN" -c ../envoy.yaml --use-dynamic-base-id -l warning --drain-time-s 10) &
pids+=($!)

echo ">> directpipe is starting (handshake filter: $FILTER): ws://127.0.0.1:${LISTEN_PORT}/v1/voice  ws://127.0.0.1:${TCP_PORT}/v1/voice (tcp mode)  http://127.0.0.1:${LISTEN_PORT}/api/health"
echo ">> Envoy admin http://127.0.0.1:${ADMIN_PORT}  xDS (mTLS) 127.0.0.1:${XDS_PORT}  modules (mTLS) 127.0.0.1:${MODULES_PORT}  admin API 127.0.0.1:${ADMIN_API_PORT}"
echo ">> token: make -s token    status: bin/dpctl status    Ctrl-C stops everything"
# Stop everything as soon as any one of them dies.
status=0
wait -n || status=$?
stop
[ -n "$interrupted" ] && exit 0
exit "$status"
