#!/usr/bin/env bash
# CLI checks for `ddpm schedule` and the tool's argument handling: output shape, exit codes and
# one-line errors that name the problem.
set -u
DDPM=${1:?usage: cli_schedule.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"

expect_ok "help" "$DDPM" help
expect_ok "schedule --help" "$DDPM" schedule --help
check "no command prints usage and exits 2" bash -c "\"\$1\" 2>&1 | grep -q usage && { \"\$1\" 2>/dev/null; test \$? -eq 2; }" _ "$DDPM"
expect_fail 2 "unknown command" "unknown command 'frobnicate'" "$DDPM" frobnicate

out=$("$DDPM" schedule --schedule cosine --timesteps 50 --csv)
rows=$(printf '%s\n' "$out" | wc -l)
check "csv has a header and 50 rows" test "$rows" -eq 51
check "csv header names every buffer" grep -q '^t,betas,alphas,alphas_cumprod,alphas_cumprod_prev,sqrt_alphas_cumprod,sqrt_one_minus_alphas_cumprod,log_one_minus_alphas_cumprod,sqrt_recip_alphas_cumprod,sqrt_recipm1_alphas_cumprod,posterior_variance,posterior_log_variance_clipped,posterior_mean_coef1,posterior_mean_coef2,snr$' <<<"$out"
check "no nan or inf" bash -c "! grep -qiE 'nan|inf' <<<\"\$1\"" _ "$out"
out=$("$DDPM" schedule --schedule linear-course --timesteps 500 --csv)
check "course schedule has T+1 rows" test "$(printf '%s\n' "$out" | wc -l)" -eq 502
out=$("$DDPM" schedule --schedule linear --timesteps 10 --beta-start 0.001 --beta-end 0.2 --csv)
check "beta-end is the last beta" grep -q '^9,0.200000003,' <<<"$out"

expect_fail 2 "T < 2" "timesteps must be at least 2" "$DDPM" schedule --timesteps 1
expect_fail 2 "unknown flag" "unknown option '--bogus'" "$DDPM" schedule --bogus 3
expect_fail 2 "bad int" "--timesteps expects an integer, got 'ten'" "$DDPM" schedule --timesteps ten
expect_fail 2 "missing value" "--timesteps needs a value" "$DDPM" schedule --timesteps
expect_fail 2 "unknown schedule" "unknown schedule 'quadratic'" "$DDPM" schedule --schedule quadratic
expect_fail 2 "beta out of range" "beta-end must be in (0, 1)" "$DDPM" schedule --beta-end 1.5
expect_fail 2 "custom without file" "needs --betas" "$DDPM" schedule --schedule custom
expect_fail 2 "missing betas file" "no-such-betas.txt: cannot open" "$DDPM" schedule --betas no-such-betas.txt
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '0.1\n0.2\noops\n' > "$tmp/b.txt"
expect_fail 2 "malformed betas file" "b.txt:3: 'oops' is not a number" "$DDPM" schedule --betas "$tmp/b.txt"
printf '0.1\n0.2\n0.3\n' > "$tmp/b.txt"
expect_ok "custom betas" "$DDPM" schedule --betas "$tmp/b.txt" --csv
expect_fail 2 "betas count vs T" "does not match the 3 betas" "$DDPM" schedule --betas "$tmp/b.txt" --timesteps 4
printf '0.1\n0.2\0000.3\n0.4\n' > "$tmp/nul.txt"
expect_fail 2 "NUL byte in a betas file" "nul.txt:2: a NUL byte at offset 7" "$DDPM" schedule --betas "$tmp/nul.txt"
# schedules whose float buffers would be inf or NaN (issue 11, finding 10: printed and exit 0)
expect_fail 2 "abar underflowing float" "the linear schedule of 40000 steps gives sqrt_recip_alphas_cumprod = inf at t =" \
  "$DDPM" schedule --schedule linear --timesteps 40000
printf '1e-20 1e-20 1e-20\n' > "$tmp/tiny.txt"
expect_fail 2 "betas too small for double" "the custom schedule of 3 steps gives posterior_log_variance_clipped = NaN at t = 0: 1 - abar rounds to 0 there" \
  "$DDPM" schedule --betas "$tmp/tiny.txt"
"$DDPM" schedule --schedule linear --timesteps 17000 --csv > "$tmp/long.csv"
check "17000 linear steps still print" test "$(wc -l < "$tmp/long.csv")" -eq 17001
check "17000 linear steps: no nan or inf" bash -c "! grep -qiE 'nan|inf' \"\$1\"" _ "$tmp/long.csv"
finish
