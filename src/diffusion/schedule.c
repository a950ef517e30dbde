/* schedule.c - beta schedules and every buffer derived from them.
 *
 * Everything is computed in double and stored as float, following the formulas of Ho et al.
 * (2020), Nichol & Dhariwal (2021) and the tutorials in shared/seeds. */
#include "core/internal.h"
#include "core/json.h"
#include "core/names.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>

static const char *const kind_names[DDPM_SCHEDULE_COUNT] = {
    "linear", "linear-course", "cosine", "sigmoid", "sigmoid-2d", "custom"};

DDPM_DEFINE_ENUM_NAMES(ddpm_schedule_kind, ddpm_schedule_kind, "schedule", kind_names)

void ddpm_schedule_config_default(ddpm_schedule_config *c, ddpm_schedule_kind kind, int T) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->timesteps = T;
    c->beta_start = kind == DDPM_SCHEDULE_SIGMOID_2D ? 1e-5 : 1e-4;
    c->beta_end = kind == DDPM_SCHEDULE_SIGMOID_2D ? 5e-3 : 0.02;
    c->cosine_s = 0.008;
    c->sigmoid_start = -3.0;
    c->sigmoid_end = 3.0;
    c->sigmoid_tau = 1.0;
}

/* The table behind `ddpm schedule`: name and where the buffer lives in the struct. */
static const struct {
    const char *name;
    size_t offset;
} buffers[DDPM_SCHEDULE_NUM_BUFFERS] = {
#define B(field) {#field, offsetof(ddpm_schedule, field)}
    B(betas),
    B(alphas),
    B(alphas_cumprod),
    B(alphas_cumprod_prev),
    B(sqrt_alphas_cumprod),
    B(sqrt_one_minus_alphas_cumprod),
    B(log_one_minus_alphas_cumprod),
    B(sqrt_recip_alphas_cumprod),
    B(sqrt_recipm1_alphas_cumprod),
    B(posterior_variance),
    B(posterior_log_variance_clipped),
    B(posterior_mean_coef1),
    B(posterior_mean_coef2),
    B(snr),
#undef B
};

const char *ddpm_schedule_buffer_name(int i) {
    return i >= 0 && i < DDPM_SCHEDULE_NUM_BUFFERS ? buffers[i].name : NULL;
}

static float **buffer_slot(ddpm_schedule *s, int i) {
    return (float **)((char *)s + buffers[i].offset);
}

const float *ddpm_schedule_buffer(const ddpm_schedule *s, int i) {
    if (i < 0 || i >= DDPM_SCHEDULE_NUM_BUFFERS) return NULL;
    return *(float *const *)((const char *)s + buffers[i].offset);
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* betas[0..T) from a cumulative-product curve abar(x) on T+1 points, as improved DDPM does:
 * beta_t = 1 - abar_{t+1} / abar_t, clipped to [0, 0.999]. */
static void betas_from_abar_curve(const double *ac, int T, double *betas) {
    for (int i = 0; i < T; i++) {
        double b = 1.0 - ac[i + 1] / ac[i];
        betas[i] = b < 0.0 ? 0.0 : b > 0.999 ? 0.999 : b;
    }
}

/* Fills betas (n entries) for the configured kind. */
static int compute_betas(const ddpm_schedule_config *c, int n, double *betas) {
    const int T = c->timesteps;
    switch (c->kind) {
    case DDPM_SCHEDULE_LINEAR:
        for (int i = 0; i < T; i++)
            betas[i] = c->beta_start + (c->beta_end - c->beta_start) * i / (T - 1);
        return DDPM_OK;
    case DDPM_SCHEDULE_LINEAR_COURSE:
        /* b_t = (beta2 - beta1) * linspace(0, 1, T + 1) + beta1 */
        for (int i = 0; i < n; i++)
            betas[i] = (c->beta_end - c->beta_start) * ((double)i / T) + c->beta_start;
        return DDPM_OK;
    case DDPM_SCHEDULE_SIGMOID_2D:
        /* sigmoid(linspace(-6, 6, T)) * (end - start) + start */
        for (int i = 0; i < T; i++)
            betas[i] = sigmoid(-6.0 + 12.0 * i / (T - 1)) * (c->beta_end - c->beta_start) +
                       c->beta_start;
        return DDPM_OK;
    case DDPM_SCHEDULE_COSINE:
    case DDPM_SCHEDULE_SIGMOID: {
        double *ac = malloc(sizeof(double) * (size_t)(T + 1));
        if (!ac) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        for (int i = 0; i <= T; i++) {
            double x = (double)i / T;
            if (c->kind == DDPM_SCHEDULE_COSINE) {
                double v = cos((x + c->cosine_s) / (1.0 + c->cosine_s) * M_PI * 0.5);
                ac[i] = v * v;
            } else {
                double vs = sigmoid(c->sigmoid_start / c->sigmoid_tau);
                double ve = sigmoid(c->sigmoid_end / c->sigmoid_tau);
                double v =
                    sigmoid((x * (c->sigmoid_end - c->sigmoid_start) + c->sigmoid_start) /
                            c->sigmoid_tau);
                ac[i] = (ve - v) / (ve - vs);
            }
        }
        for (int i = T; i >= 0; i--) ac[i] /= ac[0];
        betas_from_abar_curve(ac, T, betas);
        free(ac);
        return DDPM_OK;
    }
    case DDPM_SCHEDULE_CUSTOM:
        if (!c->betas) return ddpm_fail(DDPM_ERR_INVALID, "custom schedule needs a list of betas");
        memcpy(betas, c->betas, sizeof(double) * (size_t)T);
        return DDPM_OK;
    default:
        return ddpm_fail(DDPM_ERR_INVALID, "unknown schedule kind %d", (int)c->kind);
    }
}

/* Lin et al. 2023, Algorithm 1: sqrt(abar) moved to end at 0 with its first value kept, and the
 * betas that give it (the last is 1). In double, from the schedule's own betas. */
static void rescale_zero_terminal_snr(int n, double *beta) {
    double acc = 1.0, a0 = 0.0, aT = 0.0;
    double *r = malloc(sizeof(double) * (size_t)n);
    if (!r) return; /* the caller's check of the last beta reports it */
    for (int i = 0; i < n; i++) {
        acc *= 1.0 - beta[i];
        r[i] = sqrt(acc);
    }
    a0 = r[0];
    aT = r[n - 1];
    double prev = 1.0;
    for (int i = 0; i < n; i++) {
        const double sq = (r[i] - aT) * a0 / (a0 - aT), ab = sq * sq;
        beta[i] = i == 0 ? 1.0 - ab : 1.0 - ab / prev;
        prev = ab;
    }
    beta[n - 1] = 1.0; /* exactly: abar = 0 */
    free(r);
}

static int validate_config(const ddpm_schedule_config *c) {
    if (c->zero_terminal_snr && c->kind == DDPM_SCHEDULE_LINEAR_COURSE)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "zero terminal SNR does not apply to linear-course (its step 0 is the data)");
    if (c->timesteps < 2)
        return ddpm_fail(DDPM_ERR_INVALID, "timesteps must be at least 2 (got %d)", c->timesteps);
    if (c->timesteps > 1000000)
        return ddpm_fail(DDPM_ERR_INVALID, "timesteps must be at most 1000000 (got %d)",
                         c->timesteps);
    switch (c->kind) {
    case DDPM_SCHEDULE_LINEAR:
    case DDPM_SCHEDULE_LINEAR_COURSE:
    case DDPM_SCHEDULE_SIGMOID_2D:
        if (!(c->beta_start > 0.0 && c->beta_start < 1.0))
            return ddpm_fail(DDPM_ERR_INVALID, "beta-start must be in (0, 1) (got %g)",
                             c->beta_start);
        if (!(c->beta_end > 0.0 && c->beta_end < 1.0))
            return ddpm_fail(DDPM_ERR_INVALID, "beta-end must be in (0, 1) (got %g)", c->beta_end);
        if (c->beta_end < c->beta_start)
            return ddpm_fail(DDPM_ERR_INVALID, "beta-end (%g) is smaller than beta-start (%g)",
                             c->beta_end, c->beta_start);
        break;
    case DDPM_SCHEDULE_COSINE:
        if (!(c->cosine_s >= 0.0 && c->cosine_s < 1.0))
            return ddpm_fail(DDPM_ERR_INVALID, "cosine s must be in [0, 1) (got %g)", c->cosine_s);
        break;
    case DDPM_SCHEDULE_SIGMOID:
        if (!(c->sigmoid_tau > 0.0) || !(c->sigmoid_end > c->sigmoid_start))
            return ddpm_fail(DDPM_ERR_INVALID,
                             "sigmoid schedule needs start < end and tau > 0 (got %g, %g, %g)",
                             c->sigmoid_start, c->sigmoid_end, c->sigmoid_tau);
        break;
    case DDPM_SCHEDULE_CUSTOM:
        if (!c->betas) return ddpm_fail(DDPM_ERR_INVALID, "custom schedule needs a list of betas");
        for (int i = 0; i < c->timesteps; i++)
            if (!(c->betas[i] > 0.0 && c->betas[i] < 1.0))
                return ddpm_fail(DDPM_ERR_INVALID, "beta %d is %g, outside (0, 1)", i + 1,
                                 c->betas[i]);
        break;
    default:
        return ddpm_fail(DDPM_ERR_INVALID, "unknown schedule kind %d", (int)c->kind);
    }
    return DDPM_OK;
}

/* Every buffer must be finite: the samplers and the losses multiply by them, divide by them and
 * take their logs, and a NaN or inf there comes out as NaN samples with exit 0. They are built in
 * double and rounded to float, so a schedule whose abar underflows (many steps or large betas:
 * linear over 40000 steps has abar = 1e-174, and sqrt(1 / abar) is inf in float) or whose 1 - abar
 * rounds to 0 (betas below the double epsilon: the posterior variance is 0 / 0) is refused here,
 * naming the buffer and the step. The one exception is by design: a zero-terminal-SNR schedule
 * has abar = 0 at its last step, where sqrt(1 / abar) and sqrt(1 / abar - 1) are inf (the
 * sampling loops refuse the eps network and the sigma-space samplers that would read them). ac:
 * the double abar the buffers came from. */
static int check_buffers_finite(const ddpm_schedule *s, const double *ac) {
    for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++) {
        const float *v = ddpm_schedule_buffer(s, b);
        const int terminal_inf_ok = s->config.zero_terminal_snr &&
                                    (v == s->sqrt_recip_alphas_cumprod ||
                                     v == s->sqrt_recipm1_alphas_cumprod);
        for (int i = 0; i < s->n; i++) {
            if (isfinite(v[i]) || (terminal_inf_ok && i == s->n - 1)) continue;
            /* the clipped log variance of the first steps is taken from step t0 + 1 */
            const int k = v == s->posterior_log_variance_clipped && i <= s->t0 ? s->t0 + 1 : i;
            char why[160] = "";
            if (ac[k] < 1e-30)
                snprintf(why, sizeof why, ": abar = %.3g there underflows float; use fewer "
                         "timesteps or smaller betas", ac[k]);
            else if (1.0 - ac[k] == 0.0)
                snprintf(why, sizeof why, ": 1 - abar rounds to 0 there, the betas are too small "
                         "(1 - beta is 1 in double below about 1e-16)");
            return ddpm_fail(DDPM_ERR_INVALID, "the %s schedule of %d steps gives %s = %s at t = %d%s",
                             ddpm_schedule_kind_name(s->config.kind), s->config.timesteps,
                             ddpm_schedule_buffer_name(b),
                             isnan(v[i]) ? "NaN" : v[i] > 0 ? "inf" : "-inf", i, why);
        }
    }
    return DDPM_OK;
}

int ddpm_schedule_init(ddpm_schedule *s, const ddpm_schedule_config *c) {
    memset(s, 0, sizeof *s);
    int rc = validate_config(c);
    if (rc) return rc;
    const int n = c->kind == DDPM_SCHEDULE_LINEAR_COURSE ? c->timesteps + 1 : c->timesteps;
    const int t0 = c->kind == DDPM_SCHEDULE_LINEAR_COURSE ? 1 : 0;

    /* Double working copies: betas, alphas, abar, abar_prev. */
    double *w = malloc(sizeof(double) * 4 * (size_t)n);
    float *store = ddpm_alloc((size_t)n * DDPM_SCHEDULE_NUM_BUFFERS, sizeof(float));
    if (!w || !store) {
        free(w);
        free(store);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory building a schedule of %d steps", n);
    }
    double *beta = w, *alpha = w + n, *ac = w + 2 * n, *acp = w + 3 * n;
    rc = compute_betas(c, n, beta);
    if (rc) {
        free(w);
        free(store);
        return rc;
    }
    if (c->zero_terminal_snr) rescale_zero_terminal_snr(n, beta);
    for (int i = 0; i < n; i++) {
        const int last_is_one = c->zero_terminal_snr && i == n - 1 && beta[i] == 1.0;
        if (!(beta[i] >= 0.0 && (beta[i] < 1.0 || last_is_one))) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "schedule gives beta %d = %g, outside [0, 1)", i,
                           beta[i]);
            free(w);
            free(store);
            return rc;
        }
        alpha[i] = 1.0 - beta[i];
    }
    if (c->kind == DDPM_SCHEDULE_LINEAR_COURSE) {
        /* The course: ab_t = exp(cumsum(log(a_t))), then ab_t[0] = 1. */
        double acc = 0.0;
        for (int i = 0; i < n; i++) {
            acc += log(alpha[i]);
            ac[i] = exp(acc);
        }
        ac[0] = 1.0;
    } else {
        double acc = 1.0;
        for (int i = 0; i < n; i++) ac[i] = acc *= alpha[i];
    }
    for (int i = 0; i < n; i++) acp[i] = i == 0 ? 1.0 : ac[i - 1];
    s->betas_f64 = malloc(sizeof(double) * (size_t)n);
    if (!s->betas_f64) {
        free(w);
        free(store);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    memcpy(s->betas_f64, beta, sizeof(double) * (size_t)n);

    s->config = *c;
    s->config.betas = NULL;
    s->n = n;
    s->t0 = t0;
    s->storage_ = store;
    for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++) *buffer_slot(s, b) = store + (size_t)b * n;

    for (int i = 0; i < n; i++) {
        const double one_m = 1.0 - ac[i];
        /* Only the course's entry 0 (the clean data, not a step) has abar = 1; keep it finite. */
        const double one_m_safe = one_m > 1e-20 ? one_m : 1e-20;
        s->betas[i] = (float)beta[i];
        s->alphas[i] = (float)alpha[i];
        s->alphas_cumprod[i] = (float)ac[i];
        s->alphas_cumprod_prev[i] = (float)acp[i];
        s->sqrt_alphas_cumprod[i] = (float)sqrt(ac[i]);
        s->sqrt_one_minus_alphas_cumprod[i] = (float)sqrt(one_m);
        s->log_one_minus_alphas_cumprod[i] = (float)log(one_m_safe);
        s->sqrt_recip_alphas_cumprod[i] = (float)sqrt(1.0 / ac[i]);
        s->sqrt_recipm1_alphas_cumprod[i] = (float)sqrt(1.0 / ac[i] - 1.0);
        /* Where abar_{t-1} = 1 (the first step) q(x_{t-1} | x_t, x_0) is x_0 itself, whatever the
         * betas say: beta_t / (1 - abar_t) is 1 only where 1 - abar_t = beta_t, and the course's
         * abar_1 keeps a_0 (1 - abar_1 = 1 - a_0 a_1), which made the formula's mean 0.58 x_0
         * there (grey DDPM samples, and a decoder term of 40 bits/dim in ddpm eval --nll). */
        if (one_m > 0.0 && acp[i] < 1.0) {
            s->posterior_variance[i] = (float)(beta[i] * (1.0 - acp[i]) / one_m);
            s->posterior_mean_coef1[i] = (float)(beta[i] * sqrt(acp[i]) / one_m);
            s->posterior_mean_coef2[i] = (float)((1.0 - acp[i]) * sqrt(alpha[i]) / one_m);
        } else {
            s->posterior_variance[i] = 0.0f;
            s->posterior_mean_coef1[i] = 1.0f;
            s->posterior_mean_coef2[i] = 0.0f;
        }
        s->snr[i] = (float)(ac[i] / one_m_safe);
    }
    /* The posterior variance is 0 at the first step: its log is taken from the next entry, as in
     * Ho et al.'s code (log(append(posterior_variance[1], posterior_variance[1:]))). */
    for (int i = 0; i < n; i++) {
        int j = i <= t0 ? t0 + 1 : i;
        double pv = beta[j] * (1.0 - acp[j]) / (1.0 - ac[j]);
        s->posterior_log_variance_clipped[i] = (float)log(pv);
    }
    rc = check_buffers_finite(s, ac);
    free(w);
    if (rc) ddpm_schedule_free(s);
    return rc;
}

void ddpm_schedule_free(ddpm_schedule *s) {
    if (!s) return;
    free(s->storage_);
    free(s->betas_f64);
    memset(s, 0, sizeof *s);
}

int ddpm_betas_read(const char *path, double **betas, int *count) {
    *betas = NULL;
    *count = 0;
    unsigned char *text;
    size_t size;
    int rc = ddpm_read_file(path, &text, &size);
    if (rc) return rc;
    /* The parse below walks a C string: a NUL byte inside the file would end it there, silently
     * dropping every beta after it (a binary file, or a text file cut and padded with zeros). */
    const unsigned char *nul = memchr(text, 0, size);
    if (nul) {
        int nul_line = 1;
        for (const unsigned char *q = text; q < nul; q++) nul_line += *q == '\n';
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s:%d: a NUL byte at offset %zu: not a text file of betas",
                       path, nul_line, (size_t)(nul - text));
        free(text);
        return rc;
    }
    size_t cap = 256, n = 0;
    double *v = malloc(cap * sizeof *v);
    if (!v) {
        free(text);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    int line = 1;
    char *p = (char *)text;
    while (*p) {
        if (*p == '\n') {
            line++;
            p++;
        } else if (*p == '#') {
            while (*p && *p != '\n') p++;
        } else if (isspace((unsigned char)*p) || *p == ',' || *p == ';') {
            p++;
        } else {
            char *end;
            errno = 0;
            double x = strtod(p, &end);
            if (end == p || errno == ERANGE ||
                (*end && !isspace((unsigned char)*end) && *end != ',' && *end != ';' &&
                 *end != '#')) {
                char tok[32];
                size_t k = 0;
                while (p[k] && !isspace((unsigned char)p[k]) && p[k] != ',' && k < sizeof tok - 1) k++;
                memcpy(tok, p, k);
                tok[k] = 0;
                free(v);
                free(text);
                return ddpm_fail(DDPM_ERR_FORMAT, "%s:%d: '%s' is not a number", path, line, tok);
            }
            if (!(x > 0.0 && x < 1.0)) {
                free(v);
                free(text);
                return ddpm_fail(DDPM_ERR_FORMAT, "%s:%d: beta %zu is %g, outside (0, 1)", path,
                                 line, n + 1, x);
            }
            if (n == cap) {
                cap *= 2;
                double *nv = realloc(v, cap * sizeof *v);
                if (!nv) {
                    free(v);
                    free(text);
                    return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
                }
                v = nv;
            }
            v[n++] = x;
            p = end;
        }
    }
    free(text);
    if (n < 2) {
        free(v);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: found %zu betas, need at least 2", path, n);
    }
    if (n > 1000000) {
        free(v);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: too many betas (%zu)", path, n);
    }
    *betas = v;
    *count = (int)n;
    return DDPM_OK;
}

/* ---- the schedule config as JSON (checkpoint metadata) ---------------------------------------- */

char *ddpm_schedule_config_json(const ddpm_schedule *s) {
    const ddpm_schedule_config *c = &s->config;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "kind", ddpm_schedule_kind_name(c->kind));
    cJSON_AddNumberToObject(o, "timesteps", c->timesteps);
    cJSON_AddNumberToObject(o, "beta_start", c->beta_start);
    cJSON_AddNumberToObject(o, "beta_end", c->beta_end);
    cJSON_AddNumberToObject(o, "cosine_s", c->cosine_s);
    cJSON_AddNumberToObject(o, "sigmoid_start", c->sigmoid_start);
    cJSON_AddNumberToObject(o, "sigmoid_end", c->sigmoid_end);
    cJSON_AddNumberToObject(o, "sigmoid_tau", c->sigmoid_tau);
    if (c->zero_terminal_snr) cJSON_AddBoolToObject(o, "zero_terminal_snr", 1);
    if (c->kind == DDPM_SCHEDULE_CUSTOM) {
        /* cJSON prints numbers with 17 significant digits: the doubles round-trip exactly. */
        cJSON *a = cJSON_AddArrayToObject(o, "betas");
        for (int i = 0; i < s->n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(s->betas_f64[i]));
    }
    return ddpm_json_print_and_free(o);
}

int ddpm_schedule_from_json(const char *json, ddpm_schedule *s) {
    memset(s, 0, sizeof *s);
    cJSON *o = cJSON_Parse(json);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return ddpm_fail(DDPM_ERR_FORMAT, "schedule config is not a JSON object");
    }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    ddpm_schedule_kind k;
    int rc = cJSON_IsString(kind) ? ddpm_schedule_kind_parse(kind->valuestring, &k)
                                  : ddpm_fail(DDPM_ERR_FORMAT, "schedule config has no kind");
    if (rc) {
        cJSON_Delete(o);
        return rc;
    }
    int64_t T = 0;
    if ((rc = ddpm_json_integer_or(o, "timesteps", 0, 2, 1000000, "schedule config", &T))) {
        cJSON_Delete(o);
        return rc;
    }
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, k, (int)T);
    c.beta_start = ddpm_json_number_or(o, "beta_start", c.beta_start);
    c.beta_end = ddpm_json_number_or(o, "beta_end", c.beta_end);
    c.cosine_s = ddpm_json_number_or(o, "cosine_s", c.cosine_s);
    c.sigmoid_start = ddpm_json_number_or(o, "sigmoid_start", c.sigmoid_start);
    c.sigmoid_end = ddpm_json_number_or(o, "sigmoid_end", c.sigmoid_end);
    c.sigmoid_tau = ddpm_json_number_or(o, "sigmoid_tau", c.sigmoid_tau);
    c.zero_terminal_snr = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "zero_terminal_snr"));
    double *betas = NULL;
    if (k == DDPM_SCHEDULE_CUSTOM) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "betas");
        int n = cJSON_GetArraySize(a);
        if (!cJSON_IsArray(a) || n != c.timesteps) {
            cJSON_Delete(o);
            return ddpm_fail(DDPM_ERR_FORMAT, "custom schedule config needs %d betas", c.timesteps);
        }
        betas = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
        if (!betas) {
            cJSON_Delete(o);
            return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        }
        /* walked as a list: cJSON_GetArrayItem(a, i) in the loop is quadratic in n */
        int i = 0;
        for (const cJSON *e = a->child; e && i < n; e = e->next) betas[i++] = e->valuedouble;
        c.betas = betas;
    }
    rc = ddpm_schedule_init(s, &c);
    free(betas);
    cJSON_Delete(o);
    return rc;
}
