#!/usr/bin/env bash
# The web UI's render bench at scale: `gpuctl dev` (TLS, tokens; its own node
# cordoned) plus NODES hollow nodes of 8 H100s (`gpu-node --simulate`), then
# JOBS one-GPU jobs that "run" for an hour, applied by CLIENTS `gpuctl apply -f`
# at once (one YAML file of many documents each; proposals that arrive together
# share one Raft append), then benches/web_ui/first_render.py.
#
#   benches/web_ui/scale.sh [BIN_DIR] [NODES] [JOBS] [CLIENTS] [RUNS]
#
# BIN_DIR holds gpuctl, gpu-scheduler, gpu-node, gpu-gateway (default
# target/release); $PYTHON (default python3) has selenium. Prints the table
# RESULTS.md quotes; leaves nothing running.
set -euo pipefail
bin=${1:-target/release}
nodes=${2:-1000}
jobs=${3:-10000}
clients=${4:-10}
runs=${5:-3}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
state=$work/state
export GPUCTL_CONFIG_DIR=$work/config
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/gpuctl" dev --state-dir "$state" --gpus 1xA100-80GB --task-isolation off >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do [ -f "$state/cluster.json" ] && grep -q '"ui"' "$state/cluster.json" && break; sleep 0.5; done
server=https://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["schedulers"][0]["grpc"])' "$state/cluster.json")
ui=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["schedulers"][0]["ui"])' "$state/cluster.json")
tls=(--tls-cert "$state/tls/cluster.pem" --tls-key "$state/tls/cluster-key.pem" --tls-ca "$state/tls/ca.pem")
"$bin/gpuctl" cordon dev-node-1 --reason "bench: only hollow nodes take jobs" >/dev/null
"$bin/gpu-node" "${tls[@]}" --server "$server" --join-token-file "$state/join.token" \
  --simulate "$nodes" --gpus 8xH100-80GB --work-dir "$work/hollow" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  >"$work/hollow.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
  n=$("$bin/gpuctl" get nodes 2>/dev/null | grep -c ' Ready' || true)
  [ "$n" -ge "$nodes" ] && break
  sleep 1
done
echo "nodes ready: $n" >&2

# JOBS documents in CLIENTS files, applied at once.
per=$(( (jobs + clients - 1) / clients ))
for c in $(seq 0 $((clients - 1))); do
  f=$work/jobs-$c.yaml
  : >"$f"
  for i in $(seq $((c * per)) $(( (c + 1) * per - 1 ))); do
    [ "$i" -ge "$jobs" ] && break
    printf -- '---\napiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: bench-%05d}\nspec:\n  tasks:\n  - command: [sleep, "3600"]\n    env: {GPUCTL_SIM_DURATION: 60m}\n    resources: {gpus: 1}\n' "$i" >>"$f"
  done
done
start=$(date +%s.%N)
apply_pids=()
for c in $(seq 0 $((clients - 1))); do
  "$bin/gpuctl" apply -f "$work/jobs-$c.yaml" >"$work/apply-$c.log" 2>&1 &
  apply_pids+=($!)
done
failed=0
for p in "${apply_pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
took=$(python3 -c "import time,sys; print('%.0f' % (time.time() - float(sys.argv[1])))" "$start")
total=$(cat "$work"/apply-*.log | grep -c 'bench-' || true)
echo "jobs applied: $total in ${took}s by $clients clients ($failed client(s) failed)" >&2
# Until every GPU the jobs can fill holds one (or 15 minutes).
want=$(( jobs < 8 * nodes ? jobs : 8 * nodes ))
counts() {
  curl -s --cacert "$state/tls/ca.pem" -H "Authorization: Bearer $(cat "$state/admin.token")" "${ui}api/cluster" \
    | python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print(c["jobsRunning"], c["jobsPending"])'
}
start=$(date +%s)
for _ in $(seq 900); do
  read -r running pending < <(counts)
  [ "$running" -ge "$want" ] && break
  sleep 1
done
echo "jobs running: $running, pending: $pending, $(( $(date +%s) - start ))s after the last apply" >&2
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# The Cluster answer's bytes, plain and gzipped, and the time to make it.
for enc in identity gzip; do
  curl -s -o /dev/null --cacert "$state/tls/ca.pem" -H "Authorization: Bearer $(cat "$state/admin.token")" \
    -H "Accept-Encoding: $enc" -w "GET /api/cluster ($enc): %{size_download} bytes in %{time_total} s\n" "${ui}api/cluster" >&2
done
${PYTHON:-python3} "$here/first_render.py" --url "$ui" --token-file "$state/admin.token" --runs "$runs"
