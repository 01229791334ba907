# Sourced by deps.sh and build.sh: `... | show_progress LABEL PATTERN` shows the latest line that
# matches PATTERN (an ERE) on one line of stderr, rewritten in place, so a first run (apt, then a
# few minutes of compiling) is never silent. Not a terminal: one line per 10% of a ninja build, or
# every matching line for apt, so logs stay short.
show_progress() {
  local label=$1 pattern=$2 line shown=-1 step total pct
  local tty=0
  [[ -t 2 ]] && tty=1
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"${PROGRESS_LOG:-/dev/null}"
    [[ "$line" =~ $pattern ]] || continue
    if [[ "$line" =~ ^\[([0-9]+)/([0-9]+)\] ]]; then  # ninja: [12/133] Building CXX object ...
      step=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
      pct=$((100 * step / total))
      if ((tty)); then
        printf '\r\033[K%s: %d/%d (%d%%) %s' "$label" "$step" "$total" "$pct" "${line##*/}" >&2
      elif ((pct / 10 != shown)); then
        shown=$((pct / 10))
        printf '%s: %d/%d (%d%%)\n' "$label" "$step" "$total" "$pct" >&2
      fi
    elif ((tty)); then
      printf '\r\033[K%s: %.100s' "$label" "$line" >&2
    else
      printf '%s: %s\n' "$label" "$line" >&2
    fi
  done
  ((tty)) && printf '\r\033[K' >&2
  return 0
}
