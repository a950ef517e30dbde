# Helpers for the CLI test scripts: each check prints a line; finish prints the tally and exits.
passed=0; failed=0
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAIL: $what"; fi
}
expect_ok() { # expect_ok DESCRIPTION COMMAND...
  local what=$1; shift
  local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
  if [ $rc -eq 0 ]; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAIL: $what: exit $rc: $err"; fi
}
expect_fail() { # expect_fail CODE DESCRIPTION EXPECTED_STDERR_SUBSTRING COMMAND...
  local code=$1 what=$2 needle=$3; shift 3
  local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
  if [ $rc -ne "$code" ]; then failed=$((failed+1)); echo "FAIL: $what: exit $rc, expected $code ($err)"; return; fi
  if [ -n "$needle" ] && ! grep -qF -- "$needle" <<<"$err"; then
    failed=$((failed+1)); echo "FAIL: $what: stderr '$err' lacks '$needle'"; return; fi
  if [ "$(printf '%s\n' "$err" | grep -c .)" -gt 3 ]; then
    failed=$((failed+1)); echo "FAIL: $what: error is not short: $err"; return; fi
  passed=$((passed+1))
}
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# ppm FILE W H R G B: a W x H image of one colour with a darker square in the middle
ppm() {
  local f=$1 w=$2 h=$3 r=$4 g=$5 b=$6
  { printf 'P6\n%d %d\n255\n' "$w" "$h"
    for ((y = 0; y < h; y++)); do for ((x = 0; x < w; x++)); do
      if ((x > w / 4 && x < 3 * w / 4 && y > h / 4 && y < 3 * h / 4)); then printf "\\x$(printf %02x $((r / 2)))\\x$(printf %02x $((g / 2)))\\x$(printf %02x $((b / 2)))"
      else printf "\\x$(printf %02x "$r")\\x$(printf %02x "$g")\\x$(printf %02x "$b")"; fi
    done; done; } > "$f"
}
