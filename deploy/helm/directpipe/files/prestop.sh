#!/bin/sh
# preStop hook of an Envoy pod: stop taking new streams, then wait for the
# live ones to end, so that a rollout cuts no call.
#
#   ENVOY_ADMIN             Envoy's admin: unix:/path/to/socket or http://host:port
#                           (default unix:/var/run/envoy/admin.sock)
#   DRAIN_DEADLINE_SECONDS  give up waiting after this long (default 55); keep
#                           it below the pod's terminationGracePeriodSeconds
#   DRAIN_POLL_SECONDS      how often the live streams are counted (default 1)
#
# Exit 0: no stream is left. Exit 3: the deadline came first (the kubelet
# records the message in a FailedPreStopHook event); Envoy's exit then cuts
# the streams still live. Exit 2: Envoy's admin did not answer.
#
# Needs sh and curl in the Envoy container.
set -u

admin=${ENVOY_ADMIN:-unix:/var/run/envoy/admin.sock}
deadline=${DRAIN_DEADLINE_SECONDS:-55}
poll=${DRAIN_POLL_SECONDS:-1}

case $admin in
unix:*)
	sock=${admin#unix:}
	base=http://envoy-admin
	call() { curl -fsS --max-time 5 --unix-socket "$sock" "$@"; }
	;;
*)
	base=${admin%/}
	call() { curl -fsS --max-time 5 "$@"; }
	;;
esac

# Readiness fails at once: /ready and the health check listener answer 503,
# so the Service takes the pod out of its endpoints. The graceful drain then
# discourages requests on every listener for Envoy's drain time and closes
# the listeners at its end: connections that still arrive are refused. (Not
# inboundonly: that needs traffic_direction on the listeners, which directpipe
# leaves unset, and the admin listener is never drained.)
# Upgraded connections (WebSockets) and tcp_proxy connections are not cut by
# either; they go on until a peer ends them.
if ! call -X POST -o /dev/null "$base/healthcheck/fail"; then
	echo "prestop: Envoy's admin at $admin did not answer" >&2
	exit 2
fi
call -X POST -o /dev/null "$base/drain_listeners?graceful" ||
	echo "prestop: drain_listeners failed; waiting for the streams anyway" >&2

# live prints the streams Envoy holds: requests in progress on HTTP
# connection managers (a WebSocket is one for its whole life, an idle
# keep-alive connection none) plus connections on listeners that run no
# connection manager (tcp mode). Envoy's own admin and health check
# listeners are left out, and so are the per-worker copies of each gauge.
live() {
	call --get --data-urlencode 'filter=^(listener|http)\..*\.downstream_(cx|rq)_active$' "$base/stats" |
		awk -F': ' '
		$1 ~ /^(listener|http)\.(admin|directpipe_ready)\./ { next }
		$1 ~ /\.worker_[0-9]+\./ { next }
		$1 ~ /^listener\..*\.downstream_cx_active$/ { n += $2; next }
		$1 ~ /^http\..*\.downstream_cx_active$/ { n -= $2; next }
		$1 ~ /^http\..*\.downstream_rq_active$/ { n += $2; next }
		END { print n + 0 }'
}

start=$(date +%s)
while :; do
	if ! n=$(live); then
		echo "prestop: cannot read Envoy's stats" >&2
		n=unknown
	elif [ "$n" -le 0 ]; then
		echo "prestop: no live streams after $(($(date +%s) - start))s"
		exit 0
	fi
	if [ $(($(date +%s) - start)) -ge "$deadline" ]; then
		echo "prestop: deadline of ${deadline}s reached with $n live streams"
		exit 3
	fi
	echo "prestop: $n live streams"
	sleep "$poll"
done
