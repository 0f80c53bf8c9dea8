#!/bin/sh
# chamlab device-side driver. POSIX sh only (Android toybox/mksh, dash, bash): no Python needed here.
#
# The host prepares this run directory and calls `sh driver.sh`:
#   driver.env   shell assignments written by the host (every value quoted):
#                THREADS NUM_EXECUTIONS RUNNER_KIND (shim | executor_runner) ETDUMP (0 | 1)
#                OP_TIMEOUT_S (per-op deadline, 0 = none) COOLDOWN_S (sleep between ops)
#   runner.sh    the runner command (the shim or an executor_runner binary, with taskset and any
#                runner-specific flags); called with executor_runner-style flags
#   tasks.tsv    one task per line: <digest> TAB <op key> TAB <artifact path relative to this dir>
#
# For each task not yet done it runs the runner and appends ONE JSON line to results.jsonl as soon
# as the op finishes, so a dropped connection loses at most the op in flight. Each line ENDS with
# "end":"<rc>:<key>"} and a task is done when a line ends with "end":"0:<key>"}: a line cut short
# (power loss, full disk) never counts. Re-running a finished run is a no-op and a failed op is
# retried. Progress goes to stdout, one line per op:
#   chamlab-driver op <i> <total> <rc> <key>     |  chamlab-driver skip <i> <total> <key>
#   chamlab-driver done <total> <failed>
set -u
cd "$(dirname "$0")" || exit 70
. ./driver.env
mkdir -p out
[ -f results.jsonl ] || : > results.jsonl
# a crash can leave a last line without its newline: end it, so the next line starts fresh
if [ -s results.jsonl ] && [ -n "$(tail -c 1 results.jsonl)" ]; then echo >> results.jsonl; fi
total=$(wc -l < tasks.tsv | tr -d ' ')
tab=$(printf '\t')
i=0
failed=0
while IFS="$tab" read -r digest key artifact; do
  i=$((i + 1))
  if grep -F -q "\"end\":\"0:$key\"}" results.jsonl; then
    echo "chamlab-driver skip $i $total $key"
    continue
  fi
  res="out/$digest.json"
  etd="out/$digest.etdp"
  log="out/$digest.log"
  rm -f "$res" "$etd"
  set -- --model_path "$artifact" --num_executions "$NUM_EXECUTIONS" --cpu_threads "$THREADS"
  if [ "$ETDUMP" = 1 ]; then set -- "$@" --etdump_path "$etd"; fi
  if [ "$RUNNER_KIND" = shim ]; then set -- "$@" --result_path "$res"; fi
  if [ "$OP_TIMEOUT_S" != 0 ] && command -v timeout > /dev/null 2>&1; then
    timeout "$OP_TIMEOUT_S" sh ./runner.sh "$@" > "$log" 2>&1 < /dev/null
  else
    sh ./runner.sh "$@" > "$log" 2>&1 < /dev/null
  fi
  rc=$?
  # a shim that exits 0 without a result, or an executor_runner without an ETDump, did not measure
  if [ "$rc" = 0 ] && [ "$RUNNER_KIND" = shim ] && [ ! -s "$res" ]; then rc=65; fi
  if [ "$rc" = 0 ] && [ "$RUNNER_KIND" != shim ] && [ ! -s "$etd" ]; then rc=65; fi
  result=null
  if [ -s "$res" ]; then result=$(cat "$res"); fi
  etdump=null
  if [ -s "$etd" ]; then etdump="\"$etd\""; fi
  printf '{"rc":%d,"op_key":"%s","digest":"%s","log":"%s","etdump":%s,"result":%s,"end":"%d:%s"}\n' \
    "$rc" "$key" "$digest" "$log" "$etdump" "$result" "$rc" "$key" >> results.jsonl
  if [ "$rc" != 0 ]; then failed=$((failed + 1)); fi
  echo "chamlab-driver op $i $total $rc $key"
  if [ "$COOLDOWN_S" != 0 ]; then sleep "$COOLDOWN_S"; fi
done < tasks.tsv
echo "chamlab-driver done $total $failed"
