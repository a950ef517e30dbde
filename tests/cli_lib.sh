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
