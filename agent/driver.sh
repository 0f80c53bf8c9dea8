#!/bin/sh
# chamlab device-side driver. POSIX sh only (Android mksh/toybox, busybox, dash, bash): no Python here.
#
# The host prepares this run directory and calls `sh driver.sh`:
#   driver.env   shell assignments written by the host (every value quoted):
#                THREADS NUM_EXECUTIONS RUNNER_KIND (shim | executor_runner) ETDUMP (0 | 1)
#                OP_TIMEOUT_S (per-op deadline, 0 = none) COOLDOWN_S (sleep between ops)
#                LOCK_DIR (the device lock, "" = none) NO_WAIT (1: exit 75 at once if it is held)
#                WATCH_STDIN (1: end everything when standard input closes)
#                BATCH (1: one runner process measures every task in turn: the shim and the
#                torch-cuda runner; default 0)
#                WARMUP_RUNS (executor_runner: executions of the throw-away warm-up call, and extra
#                executions at the start of the measured call that the host discards; default 0)
#                CPUFREQ_ROOT THERMAL_ROOT POWER_SUPPLY_ROOT (sysfs roots of the device state)
#                POWER_ROUND (1: the executor_runner power round, below) POWER_READER (battery | rapl)
#                POWER_ROOT POWER_SETTLE_CS POWER_WINDOW_CS (centiseconds)
#                COOL_BELOW_MC THERMAL_ZONE COOL_WAIT_MAX_CS MIN_FREQ_KHZ FREQ_CPUS (heat, below)
#   runner.sh    the runner command (the shim, the torch-cuda runner or an executor_runner binary,
#                with taskset and any runner-specific flags); called with executor_runner-style flags
#   tasks.tsv    one task per line: <digest> TAB <op key> TAB <artifact path relative to this dir>
#                [TAB <executions>: the power round's active call]
#
# Device lock: one driver measures on a device at a time. LOCK_DIR is created with mkdir (atomic) and
# holds "owner" = "<pid> <boot id>"; a lock whose owner is dead or from another boot is stale and
# taken over. A second driver waits (printing "chamlab-driver wait <owner>") or, with NO_WAIT=1,
# prints "chamlab-driver busy <owner>" and exits 75.
#
# Hang-up rule (every transport): with WATCH_STDIN=1 the driver ends itself and its runner when its
# standard input closes (the host's pipe, the ssh channel, adb's shell v2 stream), so a host that dies
# or is interrupted leaves no runner measuring. The per-op deadline is enforced here too (no `timeout`
# binary, whose own process group would outlive us): a runner past it is killed and recorded as rc 124.
#
# For each task not yet done it runs the runner and appends ONE JSON line to results.jsonl as soon
# as the op finishes, so a dropped connection loses at most the op in flight. Each line ENDS with
# "end":"<rc>:<key>"} and a task is done when a line ends with "end":"0:<key>"}: a line cut short
# (power loss, full disk) never counts. Re-running a finished run is a no-op and a failed op is
# retried. Progress goes to stdout, one line per op:
#   chamlab-driver op <i> <total> <rc> <key>     |  chamlab-driver skip <i> <total> <key>
#   chamlab-driver done <total> <failed>
#
# executor_runner (RUNNER_KIND=executor_runner): ExecuTorch's C++ runner has no warm-up, minimum time
# or retries, and prints no timings. Per op the driver makes a throw-away warm-up call (WARMUP_RUNS
# executions, its ETDump deleted), then the measured call with --etdump_path out/<digest>.etdp and
# NUM_EXECUTIONS + WARMUP_RUNS executions; the host reads the samples from the ETDump, drops the first
# WARMUP_RUNS, judges stability and re-queues unstable ops. Without BATCH every result line carries
# "state":{"before":S,"after":S,"fingerprint":F}, S = {"governor":{cpuN:..},"freq_khz":{cpuN:..},
# "temp_mc":{thermal_zoneN:..},"battery_pct":N|null,"charging":true|false|null} read from sysfs just
# before and after the op's calls, F = getprop ro.build.fingerprint (Android), else uname -n -r -m;
# the state also holds "warmup_cs" and "call_cs", the wall durations of the two calls (centiseconds,
# /proc/uptime): their difference over NUM_EXECUTIONS is the op's wall time per execution.
#
# Heat (per-op mode; COOL_BELOW_MC > 0 or MIN_FREQ_KHZ set): before each op (its warm-up call and its
# measured window) the driver waits until the gated zone reads below COOL_BELOW_MC (millidegrees C;
# THERMAL_ZONE = a zone's directory name or its `type`, "" = the hottest zone), polling every 0.1 s,
# for at most COOL_WAIT_MAX_CS centiseconds (then it measures anyway and says so), printing
# "chamlab-driver cool <i> <total> <temp_mc> <key>" once when it has to wait. While the measured call
# runs, a sampler reads the zone and the frequency of the checked CPUs (FREQ_CPUS, "0 2", "" = all)
# every 0.1 s into out/<digest>.heat ("<temp_mc|-> <low 0|1> <lowest kHz|->"); a sample is low when a
# CPU ran under MIN_FREQ_KHZ (kHz, or "max": each CPU's cpuinfo_max_freq, the recorded maximum; ""
# = no check). The state then holds "heat":{"cool_below_mc","cool_wait_cs","cool_timed_out",
# "start_mc" (the zone as the window began),"samples","low_samples","min_freq_khz","temp_min_mc",
# "temp_max_mc"}; the host marks a window with low samples throttled and re-measures it. A zone or
# CPU set that cannot be read makes the op fail (rc 69) with the reason in its log.
#
# Power round (POWER_ROUND=1, executor_runner; the C++ runner has no power hook): per op the driver
# samples the reader for POWER_SETTLE_CS + POWER_WINDOW_CS while idle, then as long again while the
# runner executes the op (<executions>, sized by the host to outlast the window; the driver ends the
# call once the window is full: a runner that exits early leaves a short window), into
# out/<digest>.power: header lines "reader R", "status S" (battery) or "ranges R..." (rapl,
# max_energy_range_uj per package), then "<phase> <t_cs> <values>" (phase idle | active | end; t_cs
# from /proc/uptime in centiseconds; battery: current_now voltage_now; rapl: energy_uj per package).
# Its result line carries "power":"out/<digest>.power"; the host computes the energy above idle.
#
# Batch mode (BATCH=1, RUNNER_KIND=shim or torch-cuda): the shim is started once with the task list
# (`--tasks tasks.tsv`) and itself appends the same result lines and prints the same progress lines,
# enforcing the per-op deadline inside (it records the op as rc 124 and exits 124). While an op runs,
# out/inflight names it ("<i> TAB <digest> TAB <key>"). When the shim dies with an op in flight (a
# crash, the SIGALRM backstop of its deadline), the driver records that op as failed with its log
# and starts the shim again; the shim skips what is done and what this driver run already tried.
# Every restart follows progress (a new result line), so there is no endless restart loop: a shim
# that records nothing (it cannot even start) has every remaining op recorded as failed with its
# exit code and out/shim.log, once.
set -u
cd "$(dirname "$0")" || exit 70
. ./driver.env
LOCK_DIR=${LOCK_DIR:-}
NO_WAIT=${NO_WAIT:-0}
WATCH_STDIN=${WATCH_STDIN:-0}
BATCH=${BATCH:-0}
WARMUP_RUNS=${WARMUP_RUNS:-0}
CPUFREQ_ROOT=${CPUFREQ_ROOT:-/sys/devices/system/cpu}
THERMAL_ROOT=${THERMAL_ROOT:-/sys/class/thermal}
POWER_SUPPLY_ROOT=${POWER_SUPPLY_ROOT:-/sys/class/power_supply}
POWER_ROUND=${POWER_ROUND:-0}
POWER_READER=${POWER_READER:-}
POWER_SETTLE_CS=${POWER_SETTLE_CS:-0}
POWER_WINDOW_CS=${POWER_WINDOW_CS:-100}
COOL_BELOW_MC=${COOL_BELOW_MC:-0}
THERMAL_ZONE=${THERMAL_ZONE:-}
COOL_WAIT_MAX_CS=${COOL_WAIT_MAX_CS:-30000}
MIN_FREQ_KHZ=${MIN_FREQ_KHZ:-}
FREQ_CPUS=${FREQ_CPUS:-}

runner=""   # pid of the runner in flight
dog=""      # pid of its deadline watchdog
watcher=""  # pid of the stdin watcher
sampler=""  # pid of the heat sampler
locked=0

boot_id() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown; }

cleanup() {
  if [ -n "$runner" ]; then kill -KILL "$runner" 2>/dev/null; fi
  if [ -n "$dog" ]; then kill -KILL "$dog" 2>/dev/null; fi
  if [ -n "$watcher" ]; then kill "$watcher" 2>/dev/null; fi
  if [ -n "$sampler" ]; then kill -KILL "$sampler" 2>/dev/null; fi
  if [ "$locked" = 1 ]; then rm -rf "$LOCK_DIR"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM HUP INT
trap '' PIPE  # a vanished reader must not kill us before cleanup: writes just fail

acquire_lock() {
  [ -n "$LOCK_DIR" ] || return 0
  mkdir -p "$(dirname "$LOCK_DIR")" || exit 70
  told=0
  empty=0
  while ! mkdir "$LOCK_DIR" 2>/dev/null; do
    owner=$(cat "$LOCK_DIR/owner" 2>/dev/null)
    if [ -n "$owner" ]; then
      pid=${owner%% *}
      boot=${owner#* }
      if [ "$boot" != "$(boot_id)" ] || ! kill -0 "$pid" 2>/dev/null; then
        # stale: remove it only if nobody replaced it meanwhile
        if [ "$(cat "$LOCK_DIR/owner" 2>/dev/null)" = "$owner" ]; then rm -rf "$LOCK_DIR"; fi
        echo "chamlab-driver stale-lock $owner"
        continue
      fi
    else
      empty=$((empty + 1))  # just created: give its owner a moment to write its name
      if [ "$empty" -gt 30 ]; then rm -rf "$LOCK_DIR"; continue; fi
    fi
    if [ "$NO_WAIT" = 1 ]; then
      echo "chamlab-driver busy $owner"
      exit 75
    fi
    if [ "$told" = 0 ]; then
      echo "chamlab-driver wait $owner"
      told=1
    fi
    sleep 1
  done
  locked=1
  echo "$$ $(boot_id)" > "$LOCK_DIR/owner"
}

if [ "$WATCH_STDIN" = 1 ]; then
  exec 3<&0
  (
    while read -r _ <&3; do :; done
    kill -TERM $$ 2>/dev/null
  ) > /dev/null 2>&1 &
  watcher=$!
  exec 3<&-
fi

acquire_lock
mkdir -p out
[ -f results.jsonl ] || : > results.jsonl
# a crash can leave a last line without its newline: end it, so the next line starts fresh
if [ -s results.jsonl ] && [ -n "$(tail -c 1 results.jsonl)" ]; then echo >> results.jsonl; fi
total=$(wc -l < tasks.tsv | tr -d ' ')
tab=$(printf '\t')
i=0
failed=0

bytes_of() { wc -c < "$1" | tr -d ' '; }

# one result line, as the shim writes it: "end" last, so a line cut short never counts
record() {  # rc key digest log
  printf '{"rc":%d,"op_key":"%s","digest":"%s","log":"%s","etdump":null,"result":null,"end":"%d:%s"}\n' \
    "$1" "$2" "$3" "$4" "$1" "$2" >> results.jsonl
}

# grep pattern (basic regex) of a line ending that records <key> with any rc
any_end() { printf '"end":"[0-9-]*:%s"}$' "$(printf '%s' "$1" | sed 's/[.[\*^$]/\\&/g')"; }

# "n" = the integer in file $1 (sysfs values); false when there is none
num() {
  n=$(tr -cd '0-9-' < "$1" 2>/dev/null)
  case "$n" in -[0-9]*|[0-9]*) return 0;; *) return 1;; esac
}

# the device state as one JSON object (see the header); names and words are reduced to safe characters
state_json() {
  gov=""; frq=""; tmp=""; bat=null; chg=null
  for f in "$CPUFREQ_ROOT"/cpu[0-9]*/cpufreq/scaling_governor; do
    [ -r "$f" ] || continue
    c=${f%/cpufreq/*}; c=${c##*/}
    gov="$gov${gov:+,}\"$c\":\"$(tr -cd 'A-Za-z0-9_.-' < "$f")\""
    if num "${f%/*}/scaling_cur_freq"; then frq="$frq${frq:+,}\"$c\":$n"; fi
  done
  for f in "$THERMAL_ROOT"/thermal_zone*/temp; do
    if [ -r "$f" ] && num "$f"; then z=${f%/temp}; tmp="$tmp${tmp:+,}\"${z##*/}\":$n"; fi
  done
  for d in "$POWER_SUPPLY_ROOT"/*; do
    [ "$(cat "$d/type" 2>/dev/null)" = Battery ] || continue
    if num "$d/capacity"; then bat=$n; fi
    case "$(cat "$d/status" 2>/dev/null)" in
      Charging|Full) chg=true;;
      "") ;;
      *) chg=false;;
    esac
    break
  done
  printf '{"governor":{%s},"freq_khz":{%s},"temp_mc":{%s},"battery_pct":%s,"charging":%s}' \
    "$gov" "$frq" "$tmp" "$bat" "$chg"
}

run_batch() {
  from=$(bytes_of results.jsonl)  # lines from here on were written by this driver run
  restarts=0
  while :; do
    if [ -s results.jsonl ] && [ -n "$(tail -c 1 results.jsonl)" ]; then echo >> results.jsonl; fi
    before=$(bytes_of results.jsonl)
    rm -f out/inflight
    set -- --tasks tasks.tsv --results results.jsonl --results_from "$from" --out_dir out \
      --num_executions "$NUM_EXECUTIONS" --cpu_threads "$THREADS" \
      --op_timeout_s "$OP_TIMEOUT_S" --op_cooldown_s "$COOLDOWN_S"
    if [ "$ETDUMP" = 1 ]; then set -- "$@" --etdump; fi
    sh ./runner.sh "$@" 2>> out/shim.log < /dev/null &
    runner=$!
    wait "$runner"
    rc=$?
    runner=""
    if [ -s out/inflight ]; then
      # the shim died measuring this op: record it failed, with its log, and start the shim again
      IFS="$tab" read -r ci cdigest ckey < out/inflight
      crc=$rc
      if [ "$crc" = 0 ]; then crc=70; fi
      if [ "$crc" = 142 ]; then  # SIGALRM: the backstop of the shim's per-op deadline
        crc=124
        echo "driver: killed after the per-op deadline of $OP_TIMEOUT_S s" >> "out/$cdigest.log"
      else
        echo "driver: the runner process died (exit $rc) measuring this op" >> "out/$cdigest.log"
      fi
      if [ -s results.jsonl ] && [ -n "$(tail -c 1 results.jsonl)" ]; then echo >> results.jsonl; fi
      record "$crc" "$ckey" "$cdigest" "out/$cdigest.log"
      echo "chamlab-driver op $ci $total $crc $ckey"
      rm -f out/inflight
    elif [ "$rc" = 0 ]; then
      return 0
    fi
    restarts=$((restarts + 1))
    if [ "$(bytes_of results.jsonl)" = "$before" ] || [ "$restarts" -gt "$total" ]; then
      # no progress: the shim cannot run at all. Record every op it did not reach, once.
      echo "driver: the runner exited $rc without measuring; see out/shim.log" >> out/shim.log
      j=0
      while IFS="$tab" read -r digest key artifact; do
        j=$((j + 1))
        if grep -F -q "\"end\":\"0:$key\"}" results.jsonl; then continue; fi
        if tail -c "+$((from + 1))" results.jsonl | grep -q "$(any_end "$key")"; then continue; fi
        record "$rc" "$key" "$digest" out/shim.log
        echo "chamlab-driver op $j $total $rc $key"
      done < tasks.tsv
      return 0
    fi
  done
}

if [ "$BATCH" = 1 ] && [ "$RUNNER_KIND" != executor_runner ]; then
  run_batch
  while IFS="$tab" read -r digest key artifact; do
    if ! grep -F -q "\"end\":\"0:$key\"}" results.jsonl; then failed=$((failed + 1)); fi
  done < tasks.tsv
  echo "chamlab-driver done $total $failed"
  exit 0
fi

fingerprint=$(getprop ro.build.fingerprint 2>/dev/null)
[ -n "$fingerprint" ] || fingerprint=$(uname -n -r -m 2>/dev/null)
fingerprint=$(printf '%s' "$fingerprint" | tr -d '"\\' | tr -c ' -~' ' ')

# run "sh runner.sh "$@"" with its output appended to $log, under the per-op deadline; sets rc
call_runner() {
  rm -f "$expired"
  sh ./runner.sh "$@" >> "$log" 2>&1 < /dev/null &
  runner=$!
  if [ "$OP_TIMEOUT_S" != 0 ]; then
    # one-second naps, and SIGKILL to end it: a TERM trap around `wait` can lose the signal (dash),
    # which left the driver waiting for a whole deadline; a killed dog leaves at most a 1 s nap
    (
      n=0
      while [ "$n" -lt "$OP_TIMEOUT_S" ]; do sleep 1; n=$((n + 1)); done
      : > "$expired"
      kill -KILL "$runner" 2>/dev/null
    ) > /dev/null 2>&1 &
    dog=$!
  fi
  wait "$runner"
  rc=$?
  runner=""
  if [ -n "$dog" ]; then
    kill -KILL "$dog" 2>/dev/null
    wait "$dog" 2>/dev/null
    dog=""
  fi
  if [ -f "$expired" ]; then
    rc=124
    echo "driver: killed after the per-op deadline of $OP_TIMEOUT_S s" >> "$log"
  fi
}

# power sampling (power round): the reader's folders, and one "<t_cs> <values>" line per call
bat_dir=""
rapl_dirs=""
if [ "$POWER_READER" = battery ]; then
  for d in "${POWER_ROOT:-/sys/class/power_supply}"/*; do
    if [ "$(cat "$d/type" 2>/dev/null)" = Battery ]; then bat_dir=$d; break; fi
  done
elif [ "$POWER_READER" = rapl ]; then
  for d in "${POWER_ROOT:-/sys/class/powercap}"/intel-rapl:*; do
    case "${d##*/}" in intel-rapl:*:*) continue;; esac  # package domains only, not their sub-domains
    if [ -r "$d/energy_uj" ]; then rapl_dirs="$rapl_dirs $d"; fi
  done
fi
now_cs() { read -r up _ < /proc/uptime; echo "${up%.*}${up#*.}"; }
power_sample() {
  line=$(now_cs)
  if [ "$POWER_READER" = battery ]; then
    line="$line $(cat "$bat_dir/current_now" 2>/dev/null) $(cat "$bat_dir/voltage_now" 2>/dev/null)"
  else
    for d in $rapl_dirs; do line="$line $(cat "$d/energy_uj" 2>/dev/null)"; done
  fi
  echo "$line"
}

# heat: the gated zones and the checked CPUs, resolved once ("" = heat off; see the header)
heat=0
heat_error=""
zones=""       # the zone directories read (the hottest counts)
freq_pairs=""  # "<cpufreq dir>:<threshold kHz>" per checked CPU
if [ "$COOL_BELOW_MC" != 0 ] || [ -n "$MIN_FREQ_KHZ" ]; then
  heat=1
  for d in "$THERMAL_ROOT"/thermal_zone*; do
    [ -r "$d/temp" ] || continue
    if [ -n "$THERMAL_ZONE" ] && [ "${d##*/}" != "$THERMAL_ZONE" ] &&
      [ "$(cat "$d/type" 2>/dev/null)" != "$THERMAL_ZONE" ]; then continue; fi
    zones="$zones $d"
  done
  if [ -z "$zones" ] && [ "$COOL_BELOW_MC" != 0 ]; then
    heat_error="driver: no thermal zone ${THERMAL_ZONE:-thermal_zone*} with a readable temp under $THERMAL_ROOT (cool_below_c needs one)"
  fi
  if [ -n "$MIN_FREQ_KHZ" ]; then
    for d in "$CPUFREQ_ROOT"/cpu[0-9]*/cpufreq; do
      [ -r "$d/scaling_cur_freq" ] || continue
      c=${d%/cpufreq}; c=${c##*/cpu}
      if [ -n "$FREQ_CPUS" ]; then
        case " $FREQ_CPUS " in *" $c "*) ;; *) continue;; esac
      fi
      th=$MIN_FREQ_KHZ
      if [ "$th" = max ]; then
        if num "$d/cpuinfo_max_freq"; then th=$n; else
          heat_error="driver: $d/cpuinfo_max_freq cannot be read (min_freq_khz = \"max\" needs it; give a number)"
        fi
      fi
      freq_pairs="$freq_pairs $d:$th"
    done
    if [ -z "$freq_pairs" ]; then
      heat_error="driver: no readable scaling_cur_freq for CPU(s) ${FREQ_CPUS:-any} under $CPUFREQ_ROOT (min_freq_khz needs them)"
    fi
  fi
fi

# "t" = the hottest gated zone (millidegrees); false when none reads
zone_temp() {
  t=""
  for z in $zones; do
    { read -r v < "$z/temp"; } 2>/dev/null || continue
    case "$v" in -[0-9]*|[0-9]*) ;; *) continue;; esac
    if [ -z "$t" ] || [ "$v" -gt "$t" ]; then t=$v; fi
  done
  [ -n "$t" ]
}

# low=1 when a checked CPU runs under its threshold; mf = the lowest frequency read ("" = none)
freq_check() {
  low=0; mf=""
  for p in $freq_pairs; do
    { read -r f < "${p%:*}/scaling_cur_freq"; } 2>/dev/null || continue
    case "$f" in [0-9]*) ;; *) continue;; esac
    if [ "$f" -lt "${p##*:}" ]; then low=1; fi
    if [ -z "$mf" ] || [ "$f" -lt "$mf" ]; then mf=$f; fi
  done
}

heat_sampler() {  # every 0.1 s until killed: "<temp_mc|-> <low> <lowest kHz|->"
  while :; do
    if zone_temp; then zt=$t; else zt=-; fi
    freq_check
    echo "$zt $low ${mf:--}"
    sleep 0.1
  done
}

# wait (bounded) until the gated zone reads below COOL_BELOW_MC; sets cool_wait_cs, cool_timed_out
# and start_mc (the zone's last reading, "null" when none)
cool_gate() {  # i total key
  cool_wait_cs=0; cool_timed_out=false; start_mc=null
  t0=$(now_cs)
  told=0
  while zone_temp; do
    start_mc=$t
    [ "$COOL_BELOW_MC" != 0 ] || return 0
    [ "$t" -ge "$COOL_BELOW_MC" ] || break
    cool_wait_cs=$(($(now_cs) - t0))
    if [ "$cool_wait_cs" -ge "$COOL_WAIT_MAX_CS" ]; then cool_timed_out=true; break; fi
    if [ "$told" = 0 ]; then echo "chamlab-driver cool $1 $2 $t $3"; told=1; fi
    sleep 0.1
  done
  cool_wait_cs=$(($(now_cs) - t0))
}

# the heat record of the window just sampled into $1
heat_json() {
  hs=0; hl=0; hf=""; tmin=""; tmax=""
  while read -r zt l f; do
    hs=$((hs + 1))
    if [ "$l" = 1 ]; then hl=$((hl + 1)); fi
    case "$f" in [0-9]*) if [ -z "$hf" ] || [ "$f" -lt "$hf" ]; then hf=$f; fi;; esac
    case "$zt" in
      -[0-9]*|[0-9]*)
        if [ -z "$tmin" ] || [ "$zt" -lt "$tmin" ]; then tmin=$zt; fi
        if [ -z "$tmax" ] || [ "$zt" -gt "$tmax" ]; then tmax=$zt; fi;;
    esac
  done < "$1"
  printf '{"cool_below_mc":%d,"cool_wait_cs":%d,"cool_timed_out":%s,"start_mc":%s,"samples":%d,"low_samples":%d,"min_freq_khz":%s,"temp_min_mc":%s,"temp_max_mc":%s}' \
    "$COOL_BELOW_MC" "$cool_wait_cs" "$cool_timed_out" "$start_mc" "$hs" "$hl" "${hf:-null}" \
    "${tmin:-null}" "${tmax:-null}"
}

while IFS="$tab" read -r digest key artifact execs; do
  i=$((i + 1))
  if grep -F -q "\"end\":\"0:$key\"}" results.jsonl; then
    echo "chamlab-driver skip $i $total $key"
    continue
  fi
  if [ "$POWER_ROUND" = 1 ]; then
    log="out/$digest.log"
    expired="out/$digest.expired"
    pw="out/$digest.power"
    : > "$log"
    rc=0
    echo "reader $POWER_READER" > "$pw"
    if [ "$POWER_READER" = battery ] && [ -n "$bat_dir" ]; then
      echo "status $(tr -cd 'A-Za-z' < "$bat_dir/status" 2>/dev/null)" >> "$pw"
    elif [ "$POWER_READER" = rapl ] && [ -n "$rapl_dirs" ]; then
      ranges=""
      for d in $rapl_dirs; do ranges="$ranges $(cat "$d/max_energy_range_uj" 2>/dev/null)"; done
      echo "ranges$ranges" >> "$pw"
    else
      echo "driver: no $POWER_READER reader under ${POWER_ROOT:-its default root}" >> "$log"
      rc=69
    fi
    if [ "$rc" = 0 ]; then
      end=$(($(now_cs) + POWER_SETTLE_CS + POWER_WINDOW_CS))
      while :; do
        s=$(power_sample)
        echo "idle $s" >> "$pw"
        if [ "${s%% *}" -ge "$end" ]; then break; fi
        sleep 0.1
      done
      # the active call: sampled until the window is full, then ended (the host sizes <executions>
      # generously: an op slower than its estimate cannot overrun the window)
      sh ./runner.sh --model_path "$artifact" --num_executions "$execs" --cpu_threads "$THREADS" \
        --etdump_path "out/$digest.power.etdp" >> "$log" 2>&1 < /dev/null &
      runner=$!
      end=$(($(now_cs) + POWER_SETTLE_CS + POWER_WINDOW_CS))
      while kill -0 "$runner" 2>/dev/null; do
        s=$(power_sample)
        echo "active $s" >> "$pw"
        if [ "${s%% *}" -ge "$end" ]; then kill -KILL "$runner" 2>/dev/null; break; fi
        sleep 0.1
      done
      wait "$runner"
      rc=$?
      runner=""
      if [ "$rc" = 137 ]; then rc=0; fi  # ended by us: the window is full
      echo "end $(power_sample)" >> "$pw"
      rm -f "out/$digest.power.etdp"
    fi
    printf '{"rc":%d,"op_key":"%s","digest":"%s","log":"%s","etdump":null,"result":null,"power":"%s","end":"%d:%s"}\n' \
      "$rc" "$key" "$digest" "$log" "$pw" "$rc" "$key" >> results.jsonl
    if [ "$rc" != 0 ]; then failed=$((failed + 1)); fi
    echo "chamlab-driver op $i $total $rc $key"
    continue
  fi
  res="out/$digest.json"
  etd="out/$digest.etdp"
  log="out/$digest.log"
  expired="out/$digest.expired"
  rm -f "$res" "$etd"
  call_cs=""
  : > "$log"
  rc=0
  heat_rec=""
  if [ "$heat" = 1 ]; then
    if [ -n "$heat_error" ]; then
      echo "$heat_error" >> "$log"
      rc=69
    else
      cool_gate "$i" "$total" "$key"
      if [ "$cool_timed_out" = true ]; then
        echo "driver: the zone still read $start_mc mC after $cool_wait_cs cs (cool_below_c $COOL_BELOW_MC mC); measuring anyway" >> "$log"
      fi
    fi
  fi
  before=$(state_json)
  runs=$NUM_EXECUTIONS
  warm_cs=null
  if [ "$rc" = 0 ] && [ "$RUNNER_KIND" = executor_runner ] && [ "$WARMUP_RUNS" -gt 0 ]; then
    # the C++ runner has no warm-up: a throw-away call first (its own ETDump path, deleted)
    echo "driver: warm-up call, $WARMUP_RUNS execution(s)" >> "$log"
    t0=$(now_cs)
    call_runner --model_path "$artifact" --num_executions "$WARMUP_RUNS" --cpu_threads "$THREADS" \
      --etdump_path "out/$digest.warmup.etdp"
    warm_cs=$(($(now_cs) - t0))
    rm -f "out/$digest.warmup.etdp"
    runs=$((NUM_EXECUTIONS + WARMUP_RUNS))
  fi
  if [ "$rc" = 0 ]; then
    set -- --model_path "$artifact" --num_executions "$runs" --cpu_threads "$THREADS"
    if [ "$ETDUMP" = 1 ]; then set -- "$@" --etdump_path "$etd"; fi
    if [ "$RUNNER_KIND" != executor_runner ]; then set -- "$@" --result_path "$res"; fi
    if [ "$heat" = 1 ]; then
      heat_sampler > "out/$digest.heat" 2>/dev/null &
      sampler=$!
    fi
    t0=$(now_cs)
    call_runner "$@"
    call_cs=$(($(now_cs) - t0))
    if [ -n "$sampler" ]; then
      kill -KILL "$sampler" 2>/dev/null
      wait "$sampler" 2>/dev/null
      sampler=""
      heat_rec=$(heat_json "out/$digest.heat")
    fi
  fi
  after=$(state_json)
  # a python runner that exits 0 without a result, or an executor_runner without an ETDump, did not measure
  if [ "$rc" = 0 ] && [ "$RUNNER_KIND" != executor_runner ] && [ ! -s "$res" ]; then rc=65; fi
  if [ "$rc" = 0 ] && [ "$RUNNER_KIND" = executor_runner ] && [ ! -s "$etd" ]; then rc=65; fi
  result=null
  if [ -s "$res" ]; then result=$(cat "$res"); fi
  etdump=null
  if [ -s "$etd" ]; then etdump="\"$etd\""; fi
  state="{\"before\":$before,\"after\":$after,\"fingerprint\":\"$fingerprint\",\"warmup_cs\":$warm_cs,\"call_cs\":${call_cs:-null},\"heat\":${heat_rec:-null}}"
  printf '{"rc":%d,"op_key":"%s","digest":"%s","log":"%s","etdump":%s,"result":%s,"state":%s,"end":"%d:%s"}\n' \
    "$rc" "$key" "$digest" "$log" "$etdump" "$result" "$state" "$rc" "$key" >> results.jsonl
  if [ "$rc" != 0 ]; then failed=$((failed + 1)); fi
  echo "chamlab-driver op $i $total $rc $key"
  if [ "$COOLDOWN_S" != 0 ]; then sleep "$COOLDOWN_S"; fi
done < tasks.tsv
echo "chamlab-driver done $total $failed"
