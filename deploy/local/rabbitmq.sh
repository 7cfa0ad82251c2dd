#!/usr/bin/env bash
# A RabbitMQ for development and tests: 127.0.0.1 only, its state under .local/rabbitmq of the
# checkout, run as the invoking user (not through Debian's wrapper, which switches to the
# rabbitmq user and then cannot reach a checkout in a private directory), started and stopped by
# PID. Idempotent: `start` on a running broker and `stop` on a stopped one do nothing.
#
#   deploy/local/rabbitmq.sh start|stop|status|url|tls-url
#   deploy/local/rabbitmq.sh ctl ARGS...     rabbitmqctl on this broker (add_user, set_permissions, …)
#   deploy/local/rabbitmq.sh cluster start [N]|stop|status|urls
#                                            N nodes (3) clustered on 127.0.0.1: AMQP ports from
#                                            KILN_CLUSTER_PORT (5682) up, one shared cookie, each
#                                            node a broker of its own as above (kiln-PORT@localhost,
#                                            state in .local/rabbitmq-PORT); `start` waits until all
#                                            are in and prints their URLs, one per line
#
# Environment: KILN_AMQP_PORT (5672), KILN_RABBITMQ_NODENAME (kiln@localhost on port 5672,
# kiln-PORT@localhost on any other, so that brokers on different ports never share a node name),
# KILN_RABBITMQ_STATE (.local/rabbitmq, or .local/rabbitmq-PORT on a port other than 5672), KILN_RABBITMQ_MANAGEMENT=1 to enable the management
# UI on 127.0.0.1:$((KILN_AMQP_PORT + 10000)); KILN_RABBITMQ_TLS_DIR=DIR adds a TLS listener on
# 127.0.0.1:KILN_AMQPS_PORT (KILN_AMQP_PORT - 1) with the certificates deploy/local/tls-certs.sh
# writes in DIR (the broker verifies the certificates clients present, and needs none).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
port=${KILN_AMQP_PORT:-5672}
if [[ ! $port =~ ^[0-9]+$ ]] || (( port < 1025 || port > 45535 )); then
    echo "rabbitmq: KILN_AMQP_PORT must be a port from 1025 to 45535 (the distribution port is 20000 above it), not '$port'" >&2
    exit 2
fi
if [[ $port == 5672 ]]; then suffix=""; else suffix="-$port"; fi
state=${KILN_RABBITMQ_STATE:-$root/.local/rabbitmq$suffix}
node=${KILN_RABBITMQ_NODENAME:-kiln$suffix@localhost}
management=${KILN_RABBITMQ_MANAGEMENT:-0}
tls_dir=${KILN_RABBITMQ_TLS_DIR:-}
# What a cluster node does when it loses sight of the others: pause_minority for cluster nodes.
partition_handling=${KILN_RABBITMQ_PARTITION_HANDLING:-}
tls_port=${KILN_AMQPS_PORT:-$((port - 1))}
pidfile=$state/rabbit.pid
bin=/usr/lib/rabbitmq/bin
[[ -x $bin/rabbitmq-server ]] || bin=$(dirname "$(command -v rabbitmq-server 2>/dev/null || echo /usr/sbin/rabbitmq-server)")

# The Erlang cookie lives with the state, not in the user's home.
export HOME=$state

export RABBITMQ_NODENAME=$node
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$port
export RABBITMQ_DIST_PORT=$((port + 20000))
export RABBITMQ_MNESIA_BASE=$state/mnesia
export RABBITMQ_LOG_BASE=$state/log
export RABBITMQ_ENABLED_PLUGINS_FILE=$state/enabled_plugins
export RABBITMQ_CONFIG_FILE=$state/rabbitmq.conf
export RABBITMQ_PID_FILE=$pidfile
export ERL_EPMD_ADDRESS=127.0.0.1
# A node that fails writes its crash dump with its state, never into the folder it was started from.
export ERL_CRASH_DUMP=$state/erl_crash.dump
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

say() { echo "rabbitmq: $*" >&2; }

broker_pid() {
    local pid=""
    [[ -s $pidfile ]] && pid=$(cat "$pidfile")
    # A node that failed half-way may not have written its pid file: find it by its state path.
    [[ -n $pid ]] || pid=$(pgrep -f -- "$RABBITMQ_MNESIA_BASE" | head -1 || true)
    [[ -n $pid ]] && alive "$pid" && echo "$pid"
}

# Whether a process exists and is not a zombie (a killed broker stays one until reaped).
alive() {
    local status
    status=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $status && $status != Z* ]]
}

# Who listens on a TCP port of 127.0.0.1, as "pid/name", or nothing.
port_owner() {
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -oE 'pid=[0-9]+' | head -1 | cut -d= -f2
}

start() {
    if pid=$(broker_pid); then
        say "already running (pid $pid) on amqp://127.0.0.1:$port"
        return 0
    fi
    rm -f "$pidfile" "$ERL_CRASH_DUMP"
    ports=("$port" "$((port + 20000))")
    [[ -n $tls_dir ]] && ports+=("$tls_port")
    for p in "${ports[@]}"; do
        if owner=$(port_owner "$p") && [[ -n $owner ]]; then
            say "port $p is taken by pid $owner ($(ps -o comm= -p "$owner" 2>/dev/null || echo '?')); set KILN_AMQP_PORT (and KILN_AMQPS_PORT) to other ports"
            return 1
        fi
    done
    [[ -x $bin/rabbitmq-server ]] || { say "rabbitmq-server is not installed (deploy/local/install-deps.sh)"; return 1; }
    # Another node of the same name on this host (another checkout's broker on the same port
    # number, or one with KILN_RABBITMQ_NODENAME set alike) makes the new one fail at boot.
    if epmd -names 2>/dev/null | grep -qx "name ${node%@*} at port [0-9]*"; then
        say "a node named ${node%@*} is already running on this host (not this checkout's: its state is elsewhere); set KILN_RABBITMQ_NODENAME to another name, or KILN_AMQP_PORT to another port (which names the node)"
        return 1
    fi
    if [[ -n $tls_dir && ! -s $tls_dir/server.pem ]]; then
        say "no certificates in $tls_dir: run deploy/local/tls-certs.sh $tls_dir"
        return 1
    fi

    mkdir -p "$state/mnesia" "$state/log"
    {
        echo "listeners.tcp.default = 127.0.0.1:$port"
        echo "log.console = false"
        echo "log.file.level = warning"
        if [[ -n $tls_dir ]]; then
            echo "listeners.ssl.default = 127.0.0.1:$tls_port"
            echo "ssl_options.cacertfile = $tls_dir/ca.pem"
            echo "ssl_options.certfile = $tls_dir/server.pem"
            echo "ssl_options.keyfile = $tls_dir/server-key.pem"
            echo "ssl_options.verify = verify_peer"
            echo "ssl_options.fail_if_no_peer_cert = false"
        fi
        if [[ -n $partition_handling ]]; then
            echo "cluster_partition_handling = $partition_handling"
        fi
        if [[ $management == 1 ]]; then
            echo "management.tcp.ip = 127.0.0.1"
            echo "management.tcp.port = $((port + 10000))"
        fi
    } >"$state/rabbitmq.conf"
    # The consistent-hash exchange carries cross-host affinity (affinity.cross_host).
    if [[ $management == 1 ]]; then
        echo "[rabbitmq_consistent_hash_exchange,rabbitmq_management]." >"$state/enabled_plugins"
    else
        echo "[rabbitmq_consistent_hash_exchange]." >"$state/enabled_plugins"
    fi
    # Remember whether epmd was already running: `stop` ends it only if this start began it.
    pgrep -x epmd >/dev/null || echo started >"$state/epmd.ours"

    say "starting $node on amqp://127.0.0.1:$port${tls_dir:+ and amqps://127.0.0.1:$tls_port} (state in $state)"
    (cd "$state" && "$bin/rabbitmq-server" -detached)
    if ! "$bin/rabbitmqctl" -n "$node" wait --timeout 90 "$pidfile" >/dev/null 2>&1; then
        say "did not come up within 90 s; see $state/log"
        if [[ -s $ERL_CRASH_DUMP ]]; then
            say "it crashed: $(grep -m1 '^Slogan:' "$ERL_CRASH_DUMP" | cut -c1-300) (dump: $ERL_CRASH_DUMP)"
        fi
        tail -n 5 "$state/log"/*.log 2>/dev/null | sed 's/^/rabbitmq:   /' >&2 || true
        stop || true
        return 1
    fi
    pgrep -x epmd >"$state/epmd.pid" 2>/dev/null || true
    say "ready (pid $(cat "$pidfile"))"
}

stop() {
    local pid
    if pid=$(broker_pid); then
        say "stopping $node (pid $pid)"
        "$bin/rabbitmqctl" -n "$node" stop >/dev/null 2>&1 || true
        for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.2; done
        if alive "$pid"; then
            say "pid $pid did not stop within 30 s: killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
    if [[ -f $state/epmd.ours && -s $state/epmd.pid ]]; then
        kill "$(cat "$state/epmd.pid")" 2>/dev/null || true
    fi
    rm -f "$state/epmd.ours" "$state/epmd.pid"
}

status() {
    if pid=$(broker_pid); then
        echo "running (pid $pid) on amqp://127.0.0.1:$port"
    else
        echo "stopped"
        return 3
    fi
}

# The cluster: single nodes started by this script on consecutive ports, then joined to the first.
cluster_base=${KILN_CLUSTER_PORT:-5682}
cluster_state=$root/.local/rabbitmq-cluster-$cluster_base

cluster_ports() {
    local count
    count=$(cat "$cluster_state/size" 2>/dev/null || echo "${1:-3}")
    seq "$cluster_base" $((cluster_base + count - 1))
}

cluster_node() {
    KILN_AMQP_PORT=$1 KILN_RABBITMQ_NODENAME=kiln-$1@localhost KILN_RABBITMQ_STATE=$root/.local/rabbitmq-$1 \
        KILN_RABBITMQ_TLS_DIR="" KILN_RABBITMQ_PARTITION_HANDLING=pause_minority "$0" "${@:2}"
}

cluster_start() {
    local count=${1:-3} first="" p
    if [[ ! $count =~ ^[0-9]+$ ]] || (( count < 1 || count > 9 )); then
        say "a cluster has 1 to 9 nodes, not '$count'"
        return 2
    fi
    if [[ ! $cluster_base =~ ^[0-9]+$ ]] || (( cluster_base < 1025 || cluster_base + count - 1 > 45535 )); then
        say "KILN_CLUSTER_PORT must leave room for $count ports from 1025 to 45535, not '$cluster_base'"
        return 2
    fi
    mkdir -p "$cluster_state"
    echo "$count" >"$cluster_state/size"
    # One cookie for every node (each node's HOME is its state folder, where Erlang reads it).
    [[ -s $cluster_state/cookie ]] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cluster_state/cookie")
    for p in $(cluster_ports); do
        mkdir -p "$root/.local/rabbitmq-$p"
        install -m 400 "$cluster_state/cookie" "$root/.local/rabbitmq-$p/.erlang.cookie"
        cluster_node "$p" start || return 1
        if [[ -z $first ]]; then
            first=kiln-$p@localhost
        elif ! cluster_node "$p" ctl cluster_status 2>/dev/null | grep -q "$first"; then
            say "joining kiln-$p@localhost to $first"
            cluster_node "$p" ctl stop_app >/dev/null
            cluster_node "$p" ctl join_cluster "$first" >/dev/null || { say "kiln-$p@localhost could not join $first"; return 1; }
            cluster_node "$p" ctl start_app >/dev/null
        fi
    done
    # Every node running and in: what the first node's status lists.
    for _ in $(seq 1 300); do
        running=$(cluster_node "$cluster_base" ctl cluster_status --formatter json 2>/dev/null \
            | grep -o '"running_nodes":\[[^]]*\]' | grep -o 'kiln-[0-9]*@localhost' | wc -l)
        (( running == count )) && break
        sleep 0.2
    done
    if (( running != count )); then
        say "only $running of $count nodes are running in the cluster"
        return 1
    fi
    say "cluster of $count nodes ready"
    cluster_urls
}

cluster_stop() {
    local p
    # The last joined first: the first node stops knowing the others left.
    for p in $(cluster_ports | sort -rn); do cluster_node "$p" stop || true; done
    rm -f "$cluster_state/size"
}

# A network partition on one host: node PORT stops trusting the others' Erlang cookie and drops
# its links to them, so neither side can reach the other (the CLI, which uses the node's own
# cookie, still can); with pause_minority the node, alone against two, pauses. `heal` restores
# the cookie and reconnects; the paused node then starts again.
cluster_peers() {
    local p list=""
    for p in $(cluster_ports); do [[ $p == "$1" ]] || list+="${list:+,}'kiln-$p@localhost'"; done
    echo "[$list]"
}

cluster_partition() {
    [[ -n ${1:-} ]] && cluster_ports | grep -qx "$1" || { say "cluster partition PORT: PORT is one of $(cluster_ports | tr '\n' ' ')"; return 2; }
    cluster_node "$1" ctl eval "Peers = $(cluster_peers "$1"), [erlang:set_cookie(N, kiln_partitioned) || N <- Peers], [erlang:disconnect_node(N) || N <- Peers], ok." >/dev/null
    say "kiln-$1@localhost is cut off from the other nodes"
}

cluster_heal() {
    [[ -n ${1:-} ]] && cluster_ports | grep -qx "$1" || { say "cluster heal PORT: PORT is one of $(cluster_ports | tr '\n' ' ')"; return 2; }
    cluster_node "$1" ctl eval "Peers = $(cluster_peers "$1"), [erlang:set_cookie(N, erlang:get_cookie()) || N <- Peers], [net_adm:ping(N) || N <- Peers], ok." >/dev/null
    say "kiln-$1@localhost reaches the other nodes again"
}

cluster_urls() {
    local p
    for p in $(cluster_ports); do echo "amqp://guest:guest@127.0.0.1:$p/%2f"; done
}

case ${1:-status} in
    cluster)
        case ${2:-status} in
            start) cluster_start "${3:-3}" ;;
            stop) cluster_stop ;;
            urls) cluster_urls ;;
            partition) cluster_partition "${3:-}" ;;
            heal) cluster_heal "${3:-}" ;;
            status) for p in $(cluster_ports); do echo "kiln-$p@localhost: $(cluster_node "$p" status || true)"; done ;;
            *) echo "usage: $0 cluster start [N]|stop|status|urls|partition PORT|heal PORT" >&2; exit 2 ;;
        esac
        exit
        ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) echo "amqp://guest:guest@127.0.0.1:$port/%2f" ;;
    tls-url)
        [[ -n $tls_dir ]] || { say "set KILN_RABBITMQ_TLS_DIR"; exit 2; }
        echo "amqps://guest:guest@localhost:$tls_port/%2f?cacertfile=$tls_dir/ca.pem&certfile=$tls_dir/client.pem&keyfile=$tls_dir/client-key.pem"
        ;;
    ctl) shift; exec "$bin/rabbitmqctl" -n "$node" "$@" ;;
    *) echo "usage: $0 start|stop|status|url|tls-url|ctl ARGS...|cluster start [N]|stop|status|urls" >&2; exit 2 ;;
esac
