# Sourced by the device-call scripts in tools/device/: builds the standalone GPU targets (stale
# binaries never run: a failed build stops the call), loads .devdeps, prints the GPU, and defines
#   step LABEL SECONDS COMMAND...   run COMMAND with a time limit, its output in $LOGS/LABEL.log
#                                   (and $LOGS tarred into $TAR_TO after it, when TAR_TO is set);
#                                   returns COMMAND's status (124 when it ran out of time)
#   lim SECONDS                     SECONDS, or less so that the call ends 8 s before $DEADLINE
#                                   seconds from its start (when DEADLINE is set); at least 1
LOGS=${LOGS:-$OUT}
mkdir -p "$LOGS"
T0=$(date +%s)
bash src/cuda/standalone/device_run.sh build 2>&1 | tail -3; [[ ${PIPESTATUS[0]} -eq 0 ]] || exit 1
source tools/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
step() {
  local label=$1 lim=$2 t; shift 2; t=$(date +%s)
  timeout "$lim" "$@" > "$LOGS/$label.log" 2>&1
  local rc=$?
  echo "[$label] rc=$rc $(( $(date +%s) - t )) s"
  [[ -z ${TAR_TO:-} ]] || tar czf "$TAR_TO" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
  return $rc
}
lim() { local l=$1; if [[ -n ${DEADLINE:-} ]]; then local r=$(( DEADLINE - ($(date +%s) - T0) - 8 )); (( r < l )) && l=$r; fi; echo $(( l > 1 ? l : 1 )); }
