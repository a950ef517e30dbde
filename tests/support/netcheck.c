/* netcheck.c - checks of an image network against its PyTorch fixture (see netcheck.h). */
#include "netcheck.h"

#include "core/test_hooks.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nc_suite *active;

void nc_use_suite(nc_suite *s) {
    active = s;
    tu_use_fixture(s->file, &s->fx);
}

int nc_group_setup(void **state) { return tu_fixture_setup(state); }

int nc_group_teardown(void **state) {
    const nc_suite *s = active;
    tu_fixture_teardown(state);
    printf("[%s] worst error vs PyTorch: max|got-ref| / max|ref| = %.3g (%s); "
           "zero gradients: max|got| / G = %.3g (%s); %.2f of the tolerance used\n",
           s->tag, s->worst.err, s->worst.what, s->worst_zero.err, s->worst_zero.what,
           s->worst_tol);
    return 0;
}

float *nc_tensor(const ddpm_safetensors *fx, const char *prefix, const char *name, size_t n) {
    char key[320];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    return tu_tensor(fx, key, n, NULL);
}

int *nc_tensor_int(const ddpm_safetensors *fx, const char *prefix, const char *name, int n) {
    char key[320];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    return tu_tensor_int(fx, key, n);
}

ddpm_model *nc_create(const char *json, uint64_t seed) {
    ddpm_model *m;
    if (ddpm_model_create(json, seed, &m)) fail_msg("%s: %s", json, ddpm_last_error());
    return m;
}

ddpm_model *nc_load(nc_suite *s, const char *json, const char *prefix) {
    ddpm_model *m = nc_create(json, 7);
    char pre[64];
    snprintf(pre, sizeof pre, "%sw.", prefix);
    if (ddpm_model_load_tensors(m, &s->fx, pre, s->file)) fail_msg("%s", ddpm_last_error());
    return m;
}

ddpm_tape *nc_tape_of(ddpm_model *m) { return ddpm_model_tape(m, 0); }

/* The inputs of case prefix for B items of model m: x, dout, the context c (if m takes one), t. */
typedef struct {
    float *x, *dout, *c;
    int *t;
} case_inputs;

static case_inputs load_inputs(const ddpm_safetensors *fx, const ddpm_model *m, const char *prefix,
                               int B) {
    const size_t n = (size_t)B * m->sample_numel;
    case_inputs k;
    k.x = nc_tensor(fx, prefix, "x", n);
    k.dout = nc_tensor(fx, prefix, "dout", (size_t)B * ddpm_model_out_numel(m));
    k.c = m->cond_dim ? nc_tensor(fx, prefix, "c", (size_t)B * m->cond_dim) : NULL;
    k.t = nc_tensor_int(fx, prefix, "t", B);
    return k;
}

static void free_inputs(case_inputs *k) {
    free(k->x);
    free(k->dout);
    free(k->c);
    free(k->t);
}

/* ---- comparisons ----------------------------------------------------------------------------- */

void nc_cmp_(nc_suite *s, const float *got, const float *ref, size_t n, double floor_abs,
             const char *what, const char *file, int line) {
    const double scale = tu_maxabs(ref, n), atol = NC_ATOL_REL * scale + floor_abs;
    double err = 0, frac = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - ref[i]);
        err = fmax(err, e);
        frac = fmax(frac, e / (NC_RTOL * fabs((double)ref[i]) + atol));
    }
    const double G = floor_abs / NC_FLOOR_REL;
    const int zero = floor_abs > 0 && scale < 1e-6 * G;
    const double norm = zero ? err / G : err / fmax(scale, 1e-30);
    if (getenv("DDPM_TEST_VERBOSE"))
        printf("  %-50s max|ref| %-9.3g err %-9.3g %s %-9.3g tol used %.3f\n", what, scale, err,
               zero ? "/G" : "rel", norm, frac);
    tu_worst_note(zero ? &s->worst_zero : &s->worst, norm, what);
    s->worst_tol = fmax(s->worst_tol, frac);
    tu_assert_close_(got, ref, n, NC_RTOL, atol, what, file, line);
}

void nc_check_forward_backward(nc_suite *s, const char *json, const char *prefix, int B,
                               size_t n_stats) {
    const ddpm_safetensors *fx = &s->fx;
    ddpm_model *m = nc_load(s, json, prefix);
    const size_t n = (size_t)B * ddpm_model_out_numel(m);
    case_inputs k = load_inputs(fx, m, prefix, B);
    float *out = malloc(sizeof(float) * n);
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    ddpm_model_input in = {.x = k.x, .t = k.t, .cond = k.c, .B = B, .train = 1};
    assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
    float *want = nc_tensor(fx, prefix, "out_train", n);
    char what[200];
    snprintf(what, sizeof what, "%sout_train", prefix);
    nc_cmp(s, out, want, n, 0, what);
    free(want);

    memset(m->grads, 0, sizeof(float) * m->n_params);
    assert_int_equal(m->ops->backward(m, k.dout), DDPM_OK);
    /* G: the largest reference gradient of the case */
    double G = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        if (p->is_buffer) continue;
        snprintf(what, sizeof what, "grad.%s", p->name);
        float *ref = nc_tensor(fx, prefix, what, p->numel);
        G = fmax(G, tu_maxabs(ref, p->numel));
        free(ref);
    }
    size_t n_grads = 0, n_buffers = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        snprintf(what, sizeof what, "%s.%s", p->is_buffer ? "after" : "grad", p->name);
        float *ref = nc_tensor(fx, prefix, what, p->numel);
        const float *got = p->is_buffer ? m->buffers + p->offset : m->grads + p->offset;
        snprintf(what, sizeof what, "%s%s.%s", prefix, p->is_buffer ? "after" : "grad", p->name);
        nc_cmp(s, got, ref, p->numel, p->is_buffer ? 0 : NC_FLOOR_REL * G, what);
        free(ref);
        n_buffers += p->is_buffer;
        n_grads += !p->is_buffer;
    }
    /* every gradient and running statistic of the fixture was compared */
    size_t fx_grads = 0, fx_after = 0, plen = strlen(prefix);
    for (size_t i = 0; i < fx->n_tensors; i++) {
        const char *name = fx->tensors[i].name;
        if (strncmp(name, prefix, plen) != 0) continue;
        fx_grads += strncmp(name + plen, "grad.", 5) == 0;
        fx_after += strncmp(name + plen, "after.", 6) == 0;
    }
    assert_int_equal(fx_grads, n_grads);
    assert_int_equal(fx_after, n_buffers);
    assert_int_equal(n_buffers, n_stats);

    /* eval mode: the running statistics as the training forward left them */
    in.train = 0;
    assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
    want = nc_tensor(fx, prefix, "out_eval", n);
    snprintf(what, sizeof what, "%sout_eval", prefix);
    nc_cmp(s, out, want, n, 0, what);
    free(want);
    /* an eval forward records nothing: backward refuses */
    assert_int_equal(m->ops->backward(m, k.dout), DDPM_ERR_INVALID);
    free_inputs(&k);
    free(out);
    ddpm_model_free(m);
}

/* ---- optimizer steps ------------------------------------------------------------------------- */

void nc_adam_init(nc_adam *a, ddpm_model *m, int B) {
    const size_t n = (size_t)B * ddpm_model_out_numel(m);
    a->m = m;
    ddpm_train_config_default(&a->cfg);
    a->am = calloc(m->n_params, sizeof(float));
    a->av = calloc(m->n_params, sizeof(float));
    a->out = malloc(sizeof(float) * n);
    a->dout = malloc(sizeof(float) * n);
    a->k = 0;
    assert_true(a->am && a->av && a->out && a->dout);
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
}

void nc_adam_free(nc_adam *a) {
    free(a->am);
    free(a->av);
    free(a->out);
    free(a->dout);
}

double nc_adam_step(nc_adam *a, const ddpm_model_input *in, const float *target, float *norm) {
    ddpm_model *m = a->m;
    assert_int_equal(m->ops->forward(m, in, a->out), DDPM_OK);
    const double loss =
        ddpm_loss_and_grad(DDPM_LOSS_L2, a->out, target, NULL, in->B, ddpm_model_out_numel(m), a->dout);
    memset(m->grads, 0, sizeof(float) * m->n_params);
    assert_int_equal(m->ops->backward(m, a->dout), DDPM_OK);
    *norm = ddpm_clip_grad_norm(m->grads, m->n_params, 1.0f);
    ddpm_adam_update(m->params, m->grads, a->am, a->av, m->n_params, &a->cfg, 1e-3f, ++a->k);
    return loss;
}

int nc_check_adam_steps(nc_suite *s, const char *json, const char *prefix, int B) {
    const ddpm_safetensors *fx = &s->fx;
    ddpm_model *m = nc_load(s, json, prefix);
    const size_t n = (size_t)B * m->sample_numel;
    nc_adam a;
    nc_adam_init(&a, m, B);
    int clipped = 0;
    for (int k = 1; k <= 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "opt/x%d", k);
        float *x = nc_tensor(fx, prefix, name, n);
        float *c = NULL;
        if (m->cond_dim) {
            snprintf(name, sizeof name, "opt/c%d", k);
            c = nc_tensor(fx, prefix, name, (size_t)B * m->cond_dim);
        }
        snprintf(name, sizeof name, "opt/target%d", k);
        float *target = nc_tensor(fx, prefix, name, (size_t)B * ddpm_model_out_numel(m));
        snprintf(name, sizeof name, "opt/t%d", k);
        int *t = nc_tensor_int(fx, prefix, name, B);
        ddpm_model_input in = {.x = x, .t = t, .cond = c, .B = B, .train = 1};
        float norm;
        const double loss = nc_adam_step(&a, &in, target, &norm);
        snprintf(name, sizeof name, "%sopt/loss%d", prefix, k);
        const double want_loss = tu_scalar(fx, name);
        snprintf(name, sizeof name, "%sopt/norm%d", prefix, k);
        const double want_norm = tu_scalar(fx, name);
        printf("[%s] step %d: loss %.8f (PyTorch %.8f, rel %.2g), grad norm %.6f "
               "(PyTorch %.6f, rel %.2g)\n",
               s->tag, k, loss, want_loss, fabs(loss - want_loss) / want_loss, norm, want_norm,
               fabs(norm - want_norm) / want_norm);
        assert_true(fabs(loss - want_loss) <= 1e-5 * want_loss);
        assert_true(fabs(norm - want_norm) <= 1e-5 * want_norm);
        clipped += want_norm > 1.0;
        free(x);
        free(c);
        free(target);
        free(t);
    }
    nc_adam_free(&a);
    ddpm_model_free(m);
    return clipped;
}

/* ---- threads --------------------------------------------------------------------------------- */

void nc_check_threads(nc_suite *s, const char *json, const char *prefix, int B) {
    const ddpm_safetensors *fx = &s->fx;
    float *res[2][3];
    size_t n = 0, np = 0;
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r + 1);
        ddpm_model *m = nc_load(s, json, prefix);
        n = (size_t)B * ddpm_model_out_numel(m);
        np = m->n_params;
        case_inputs k = load_inputs(fx, m, prefix, B);
        for (int j = 0; j < 2; j++) res[r][j] = malloc(sizeof(float) * n);
        res[r][2] = malloc(sizeof(float) * np);
        assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
        ddpm_model_input in = {.x = k.x, .t = k.t, .cond = k.c, .B = B, .train = 1};
        assert_int_equal(m->ops->forward(m, &in, res[r][0]), DDPM_OK);
        memset(m->grads, 0, sizeof(float) * np);
        assert_int_equal(m->ops->backward(m, k.dout), DDPM_OK);
        memcpy(res[r][2], m->grads, sizeof(float) * np);
        in.train = 0;
        assert_int_equal(m->ops->forward(m, &in, res[r][1]), DDPM_OK);
        free_inputs(&k);
        ddpm_model_free(m);
    }
    omp_set_num_threads(2);
    const char *what[3] = {"train forward, 1 vs 2 threads", "eval forward, 1 vs 2 threads",
                           "gradients, 1 vs 2 threads"};
    for (int k = 0; k < 3; k++) {
        const size_t len = k == 2 ? np : n;
        const double scale = tu_maxabs(res[0][k], len);
        double err = 0;
        for (size_t i = 0; i < len; i++) err = fmax(err, fabs((double)res[0][k][i] - res[1][k][i]));
        printf("[%s] %s: max difference %.3g (max |value| %.3g)\n", s->tag, what[k], err, scale);
        tu_assert_close(res[1][k], res[0][k], len, 1e-5, 1e-5 * scale, what[k]);
        for (int r = 0; r < 2; r++) free(res[r][k]);
    }
}

void nc_check_eval_chunks(ddpm_model *m, const ddpm_model_input *in, int chunk, float *whole,
                          float *chunked) {
    char env[16], what[64];
    snprintf(env, sizeof env, "%d", chunk);
    snprintf(what, sizeof what, "eval forward in chunks of %d item%s", chunk, chunk == 1 ? "" : "s");
    assert_int_equal(m->ops->forward(m, in, whole), DDPM_OK);
    setenv("DDPM_EVAL_CHUNK", env, 1);
    assert_int_equal(m->ops->forward(m, in, chunked), DDPM_OK);
    unsetenv("DDPM_EVAL_CHUNK");
    tu_assert_close(chunked, whole, (size_t)in->B * ddpm_model_out_numel(m), 1e-6, 1e-6, what);
}

void nc_check_steady_state(nc_suite *s, const char *json, const char *prefix, int B, int b_small,
                           int eval_chunk, size_t min_nodes) {
    ddpm_model *m = nc_load(s, json, prefix);
    case_inputs k = load_inputs(&s->fx, m, prefix, B);
    float *out = malloc(sizeof(float) * (size_t)B * ddpm_model_out_numel(m));
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    ddpm_model_input in = {.x = k.x, .t = k.t, .cond = k.c, .B = B, .train = 1};
    char chunk[16];
    snprintf(chunk, sizeof chunk, "%d", eval_chunk);
    ddpm_tape_stats s0, s1;
    for (int it = 0; it < 3; it++) {
        in.train = 1;
        in.B = B;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        assert_int_equal(m->ops->backward(m, k.dout), DDPM_OK);
        in.train = 0;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        in.B = b_small; /* a smaller batch reuses the same memory */
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        if (eval_chunk > 0) { /* so does an eval forward in chunks */
            in.B = B;
            setenv("DDPM_EVAL_CHUNK", chunk, 1);
            assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
            unsetenv("DDPM_EVAL_CHUNK");
            in.B = b_small;
        }
        in.train = 1;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        assert_int_equal(m->ops->backward(m, k.dout), DDPM_OK);
        ddpm_tape_get_stats(nc_tape_of(m), it == 0 ? &s0 : &s1);
    }
    printf("[%s] tape: %zu allocations, %zu arena bytes (%zu used by the last step), %zu nodes\n",
           s->tag, s1.n_allocs, s1.arena_bytes, s1.arena_used, s1.n_nodes);
    assert_int_equal(s1.n_allocs, s0.n_allocs);
    assert_int_equal(s1.arena_bytes, s0.arena_bytes);
    assert_true(s1.n_nodes > min_nodes);
    free_inputs(&k);
    free(out);
    ddpm_model_free(m);
}

/* ---- configuration and initialisation ---------------------------------------------------------- */

void nc_check_shape(const ddpm_model *m, const char *kind, int channels, int height, int cond_dim,
                    int num_timesteps) {
    assert_int_equal(m->channels, channels);
    assert_int_equal(m->height, height);
    assert_int_equal(m->width, height);
    assert_int_equal(m->sample_numel, (size_t)channels * height * height);
    assert_int_equal(m->cond_dim, cond_dim);
    assert_int_equal(m->num_timesteps, num_timesteps);
    assert_int_equal(m->self_cond, 0);
    assert_string_equal(m->ops->kind, kind);
}

size_t nc_count_weights(const ddpm_model *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].is_buffer) n += m->tensors[i].numel;
    return n;
}

void nc_check_init_bounds(ddpm_model *m, const nc_bound *b, size_t n, double lo) {
    for (size_t i = 0; i < n; i++) {
        const ddpm_param_info *p = ddpm_model_find(m, b[i].name);
        assert_non_null(p);
        const double got = tu_maxabs(ddpm_model_tensor_data(m, p), p->numel);
        if (!(got <= b[i].bound && got > lo * b[i].bound))
            fail_msg("%s: max |w| %g, bound %g", b[i].name, got, b[i].bound);
    }
}

void nc_check_ones(ddpm_model *m, const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const ddpm_param_info *p = ddpm_model_find(m, names[i]);
        assert_non_null(p);
        for (size_t k = 0; k < p->numel; k++) assert_true(ddpm_model_tensor_data(m, p)[k] == 1.0f);
    }
}

/* ---- loading weights by name ------------------------------------------------------------------ */

void nc_write_weights(nc_suite *s, const char *path, const char *prefix, const char *skip,
                      const char *extra, const char *extra_src) {
    const ddpm_safetensors *fx = &s->fx;
    char pre[64];
    snprintf(pre, sizeof pre, "%sw.", prefix);
    const size_t plen = strlen(pre);
    ddpm_tensor *ts = calloc(fx->n_tensors + 1, sizeof *ts);
    assert_non_null(ts);
    size_t k = 0;
    for (size_t i = 0; i < fx->n_tensors; i++) {
        const char *name = fx->tensors[i].name;
        if (strncmp(name, pre, plen) != 0) continue;
        if (skip && strncmp(name + plen, skip, strlen(skip)) == 0) continue;
        ts[k] = fx->tensors[i];
        ts[k++].name = (char *)name + plen;
    }
    if (extra) {
        char key[320];
        snprintf(key, sizeof key, "%s%s", pre, extra_src);
        const ddpm_tensor *src = ddpm_safetensors_find(fx, key);
        if (!src) fail_msg("fixture tensor %s missing", key);
        ts[k] = *src;
        ts[k++].name = (char *)extra;
    }
    if (ddpm_safetensors_write(path, ts, k, NULL, NULL, 0)) fail_msg("%s", ddpm_last_error());
    free(ts);
}

int nc_load_file(ddpm_model *m, const char *path) {
    ddpm_safetensors st;
    if (ddpm_safetensors_read(path, &st)) fail_msg("%s", ddpm_last_error());
    int rc = ddpm_model_load_tensors(m, &st, NULL, path);
    ddpm_safetensors_free(&st);
    return rc;
}

void nc_expect_load_error(ddpm_model *m, const char *path, const char *needle) {
    const int rc = nc_load_file(m, path);
    if (rc != DDPM_ERR_FORMAT || !strstr(ddpm_last_error(), needle))
        fail_msg("loading %s: status %d, message '%s' (expected '%s')", path, rc,
                 ddpm_last_error(), needle);
}

void nc_expect_error(const char *needle) {
    if (!strstr(ddpm_last_error(), needle))
        fail_msg("expected '%s' in the error, got: %s", needle, ddpm_last_error());
}

void nc_expect_bad_config(const char *json, const char *needle) {
    ddpm_model *m = (ddpm_model *)&m;
    const int rc = ddpm_model_create(json, 1, &m);
    if (rc != DDPM_ERR_INVALID || !strstr(ddpm_last_error(), needle))
        fail_msg("%s: status %d, message '%s' (expected '%s')", json, rc, ddpm_last_error(),
                 needle);
    assert_null(m);
}

/* ---- training and checkpoints ----------------------------------------------------------------- */

void nc_train(ddpm_trainer *tr, ddpm_model *m, const ddpm_schedule *s, const ddpm_train_config *tc,
              const ddpm_train_data *td, int steps) {
    if (ddpm_trainer_init(tr, m, s, tc, td)) fail_msg("%s", ddpm_last_error());
    for (int i = 0; i < steps; i++) assert_int_equal(ddpm_trainer_step(tr), DDPM_OK);
    assert_true(isfinite(tr->last_loss) && tr->last_loss > 0);
}

void nc_checkpoint_roundtrip(ddpm_trainer *tr, const char *file, ddpm_checkpoint *ck) {
    const ddpm_model *m = tr->model;
    const char *path = tu_tmp(file);
    assert_int_equal(ddpm_checkpoint_save(path, tr, NULL, NULL, NULL, 0), DDPM_OK);
    if (ddpm_checkpoint_load(path, ck)) fail_msg("%s", ddpm_last_error());
    assert_string_equal(ck->model->config_json, m->config_json);
    assert_memory_equal(ck->model->params, m->params, m->n_params * sizeof(float));
    if (m->n_buffers)
        assert_memory_equal(ck->model->buffers, m->buffers, m->n_buffers * sizeof(float));
}
