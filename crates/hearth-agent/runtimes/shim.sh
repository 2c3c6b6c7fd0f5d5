# Hearth's Bash shim: sources /code/<file>.sh and calls the handler function with the event
# JSON as $1; what it prints on stdout is its JSON result, a non-zero status its error.
#
# Started as `bash shim.sh MODE HANDLER`; see hearth_types::runtime for the protocol. In
# persistent mode the function runs in this shell, so its global variables last across calls.
mode=${1:-process}
spec=${2:-handler.handler}
if [[ $spec == *.* ]]; then file=${spec%.*} fn=${spec##*.}; else file=$spec fn=handler; fi
code=${HEARTH_CODE_DIR:-/code}
out=$(mktemp)
exec 3>&1 1>&2 # fd 3 carries replies; the handler's stray output goes to the logs

fail() { # message [type]
  jq -cn --arg m "$1" --arg t "${2:-Error}" '{error: {message: $m, type: $t}}' >&3
}

load_error=
if ! source "$code/$file.sh"; then
  load_error="$code/$file.sh failed to load (its error is in the logs)"
elif ! declare -F "$fn" >/dev/null; then
  load_error="$code/$file.sh defines no function $fn"
fi

invoke() { # event
  if [[ -n $load_error ]]; then fail "$load_error" LoadError; return; fi
  "$fn" "$1" >"$out"
  local status=$?
  if ((status != 0)); then
    fail "$fn exited with status $status" HandlerError
  elif ! jq -c '{ok: .}' "$out" >&3 2>/dev/null; then
    if [[ ! -s $out ]]; then
      echo '{"ok":null}' >&3
    else
      fail "the handler's output is not JSON: $(head -c 200 "$out")" TypeError
    fi
  fi
}

if [[ $mode == persistent ]]; then
  while IFS= read -r line; do
    [[ -z ${line//[[:space:]]/} ]] && continue
    eval "$(jq -r '.context // {} | @sh "export HEARTH_INVOCATION_ID=\(.invocation_id // "") HEARTH_FUNCTION=\(.function_name // "") HEARTH_VERSION=\(.function_version // "") HEARTH_DEADLINE_MS=\(.deadline_ms // 0)"' <<<"$line")"
    event=$(jq -c '.event' <<<"$line")
    invoke "$event" 3>"$out.reply"
    printf '\036hearth-call-end\n' >&2
    cat "$out.reply" >&3
  done
else
  event=$(cat)
  [[ -z ${event//[[:space:]]/} ]] && event=null
  invoke "$event"
fi
