/* test_unet2d.c - diffusers' UNet2DModel (models/unet2d.c) and diffusers folders (io/diffusers.c)
 * against the PyTorch re-write of diffusers in scripts/fixtures/gen_diffusers.py:
 *   - g/: a small network with every option ddpm supports: forward (training and eval mode, 1
 *     and 2 threads) and every parameter gradient of sum(out * dout);
 *   - the ddpm-cifar10-32 layout at reduced width (a pipeline folder) and the 256-pixel family's
 *     layout at 32x32 (a flat folder with the older attention names), loaded with
 *     ddpm_diffusers_load: the forward;
 *   - a 10-step DDIM sample (eta 0) from a given x_T by DDIMScheduler's rules, and single
 *     DDPMScheduler steps (fixed_small, fixed_large, clipping) with given noise;
 *   - configuration errors named by key, writing a folder and reading it back, `ddpm export`,
 *     ddpm's unet converted (the same function), training steps and micro-batches.
 *
 * Tolerance against the float64 references: |got - ref| <= 1e-4 |ref| + 1e-5 max|ref| (the
 * networks, one step), 1e-4 |ref| + 1e-4 max|ref| for the 10-step sample (ten float32 network
 * evaluations and float32 alphas_cumprod in diffusers vs ddpm's double-computed schedule). */
#include "netcheck.h"

#include "core/test_hooks.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RTOL 1e-4
#define ATOL_REL 1e-5

static ddpm_safetensors FX;
static tu_worst worst;

static int setup(void **state) {
    tu_fixture_setup(state);
    omp_set_num_threads(1);
    return 0;
}

static int teardown(void **state) {
    tu_worst_print("unet2d", &worst);
    return tu_fixture_teardown(state);
}

static void cmp_ref(const char *key, const float *got, size_t n, double atol_rel) {
    float *ref = tu_tensor(&FX, key, n, NULL);
    tu_cmp_torch(&worst, key, got, ref, n, RTOL, atol_rel);
    free(ref);
}

static const char *meta(const char *key) {
    const char *v = ddpm_safetensors_meta(&FX, key);
    if (!v) fail_msg("fixture has no metadata '%s'", key);
    return v;
}

static const char *folder(const char *name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s", tu_fixture_path("diffusers"));
    snprintf(path + strlen(path), sizeof path - strlen(path), "/%s", name);
    return path;
}

/* ---- the small network with every option, forward and backward ------------------------------- */

static void test_vs_pytorch_g(void **s) {
    (void)s;
    ddpm_model *m = nc_create(meta("g/config"), 1);
    nc_check_shape(m, "unet2d", 2, 8, 3, 1000);
    if (ddpm_model_load_tensors(m, &FX, "g/w.", "reference.safetensors")) fail_msg("%s", ddpm_last_error());
    /* the same tensors as PyTorch's state_dict (ddpm declares to_q, to_k, to_v weights and then
     * their biases, so the order differs there) */
    const char *names = meta("g/names");
    size_t count = 1;
    for (const char *p = names; *p; p++) count += *p == ',';
    assert_int_equal(count, m->n_tensors);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const char *at = strstr(names, m->tensors[i].name);
        const size_t len = strlen(m->tensors[i].name);
        while (at && ((at != names && at[-1] != ',') || (at[len] != ',' && at[len])))
            at = strstr(at + 1, m->tensors[i].name);
        if (!at) fail_msg("tensor '%s' is not in PyTorch's state_dict", m->tensors[i].name);
    }
    const int B = 3;
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    const size_t n = (size_t)B * m->sample_numel;
    float *x = nc_tensor(&FX, "g/", "x", n), *dout = nc_tensor(&FX, "g/", "dout", n);
    float *cond = nc_tensor(&FX, "g/", "cond", (size_t)B * 3), *out = malloc(sizeof(float) * n);
    int *t = nc_tensor_int(&FX, "g/", "t", B);
    ddpm_model_input in = {.x = x, .t = t, .cond = cond, .B = B, .train = 1, .seed = 1, .step = 2};
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        cmp_ref("g/out", out, n, ATOL_REL);
        memset(m->grads, 0, sizeof(float) * m->n_params);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        /* G: the largest reference gradient. The key biases' true gradient is 0 (softmax does
         * not change when a row of scores moves by q . b_k); those are held to the floor
         * NC_FLOOR_REL G instead (float32 rounding leaves ~1e-7 there). */
        double G = 0;
        for (size_t i = 0; i < m->n_tensors; i++) {
            char key[200];
            snprintf(key, sizeof key, "g/grad.%s", m->tensors[i].name);
            float *ref = tu_tensor(&FX, key, m->tensors[i].numel, NULL);
            G = fmax(G, tu_maxabs(ref, m->tensors[i].numel));
            free(ref);
        }
        for (size_t i = 0; i < m->n_tensors; i++) {
            char key[200];
            snprintf(key, sizeof key, "g/grad.%s", m->tensors[i].name);
            const float *got = m->grads + m->tensors[i].offset;
            const size_t k = m->tensors[i].numel;
            float *ref = tu_tensor(&FX, key, k, NULL);
            if (tu_maxabs(ref, k) < 1e-6 * G) {
                assert_true(strstr(key, ".to_k.bias") != NULL); /* the only zero gradients */
                if (tu_maxabs(got, k) > NC_FLOOR_REL * G)
                    fail_msg("%s: |got| %.3g above the floor %.3g", key, tu_maxabs(got, k), NC_FLOOR_REL * G);
            } else {
                cmp_ref(key, got, k, ATOL_REL);
            }
            free(ref);
        }
    }
    omp_set_num_threads(1);
    in.train = 0;
    memset(out, 0, sizeof(float) * n);
    assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
    cmp_ref("g/out", out, n, ATOL_REL);
    free(x);
    free(dout);
    free(cond);
    free(out);
    free(t);
    ddpm_model_free(m);
}

/* ---- the two checkpoint layouts, as folders -------------------------------------------------- */

static void check_folder_forward(const char *name, const ddpm_checkpoint *ck) {
    ddpm_model *m = ck->model;
    const int B = 2;
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    char key[64];
    snprintf(key, sizeof key, "%s/", name);
    const size_t n = (size_t)B * m->sample_numel;
    float *x = nc_tensor(&FX, key, "x", n), *out = malloc(sizeof(float) * n);
    int *t = nc_tensor_int(&FX, key, "t", B);
    ddpm_model_input in = {.x = x, .t = t, .B = B};
    assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
    snprintf(key, sizeof key, "%s/out", name);
    cmp_ref(key, out, n, ATOL_REL);
    snprintf(key, sizeof key, "%s/params", name);
    assert_int_equal(ddpm_model_weight_count(m), strtoull(meta(key), NULL, 10));
    free(x);
    free(out);
    free(t);
}

static void test_cifar_folder(void **s) {
    (void)s;
    ddpm_checkpoint ck;
    ddpm_diffusers_sampling smp;
    if (ddpm_diffusers_load(folder("cifar"), &ck, &smp)) fail_msg("%s", ddpm_last_error());
    /* ddpm-cifar10-32's scheduler: DDPMScheduler, linear 1e-4..0.02, T 1000, fixed_large, clip */
    assert_string_equal(smp.scheduler, "DDPMScheduler");
    assert_int_equal(smp.sampler, DDPM_SAMPLER_DDPM);
    assert_int_equal(smp.variance, DDPM_VAR_LARGE);
    assert_int_equal(smp.clip_x0, 1);
    assert_int_equal(ck.schedule.n, 1000);
    assert_int_equal(ck.schedule.config.kind, DDPM_SCHEDULE_LINEAR);
    assert_int_equal(ck.train.prediction, DDPM_PRED_EPS);
    assert_true(fabs(ck.schedule.betas[999] - 0.02) < 1e-9);
    check_folder_forward("cifar", &ck);
    ddpm_checkpoint_free(&ck);
}

static void test_church_folder_legacy_names(void **s) {
    (void)s;
    ddpm_checkpoint ck;
    ddpm_diffusers_sampling smp;
    if (ddpm_diffusers_load(folder("church"), &ck, &smp)) fail_msg("%s", ddpm_last_error());
    assert_string_equal(smp.scheduler, "DDIMScheduler");
    assert_int_equal(smp.sampler, DDPM_SAMPLER_DDIM);
    assert_int_equal(smp.clip_x0, 0);
    assert_int_equal(smp.spacing, DDPM_SPACING_LEADING);
    /* the file's query / key / value / proj_attn came in as to_q / to_k / to_v / to_out.0 */
    assert_non_null(ddpm_model_find(ck.model, "down_blocks.4.attentions.1.to_out.0.weight"));
    assert_non_null(ddpm_safetensors_find(&ck.st, "mid_block.attentions.0.to_q.weight"));
    check_folder_forward("church", &ck);
    ddpm_checkpoint_free(&ck);
}

/* ---- samplers: DDIMScheduler's loop, DDPMScheduler's step -------------------------------------- */

static void test_ddim_sample_matches_ddimscheduler(void **s) {
    (void)s;
    ddpm_checkpoint ck;
    ddpm_diffusers_sampling smp;
    if (ddpm_diffusers_load(folder("church"), &ck, &smp)) fail_msg("%s", ddpm_last_error());
    const int B = 2, K = 10;
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.sampler = smp.sampler;
    o.steps = K;
    o.spacing = smp.spacing;
    o.eta = 0.0f;
    o.step.prediction = ck.train.prediction;
    o.step.clip_x0 = smp.clip_x0;
    o.x_is_init = 1;
    int ts[10];
    assert_int_equal(ddpm_sample_timesteps(&ck.schedule, &o, ts, NULL), DDPM_OK);
    char got[128] = "";
    for (int k = 0; k < K; k++) snprintf(got + strlen(got), sizeof got - strlen(got), k ? ",%d" : "%d", ts[k]);
    assert_string_equal(got, meta("ddim/timesteps"));
    const size_t n = (size_t)B * ck.model->sample_numel;
    float *x = nc_tensor(&FX, "ddim/", "x_T", n);
    ddpm_model_sampler ms;
    assert_int_equal(ddpm_model_sampler_init(&ms, ck.model, B), DDPM_OK);
    assert_int_equal(ddpm_sample_loop(&ck.schedule, &o, ddpm_model_denoise, &ms, B, ck.model->sample_numel, x),
                     DDPM_OK);
    cmp_ref("ddim/sample", x, n, 1e-4);
    ddpm_model_sampler_free(&ms);
    free(x);
    ddpm_checkpoint_free(&ck);
}

/* DDIMScheduler's options, each a 1-item sample from x_T by gen_diffusers.py's
 * ddim_scheduler_sample: clip_sample (x_0 clipped, the network's eps kept), clip_sample_range 0.5
 * with steps_offset 1 and set_alpha_to_one false, rescale_betas_zero_snr with v prediction and
 * trailing spacing over 7 steps (K does not divide T: the previous timestep is t - T // K, not the
 * next listed one), thresholding with x_0 prediction and linspace spacing. The settings come
 * from the scheduler config through ddpm_diffusers_scheduler_parse and
 * ddpm_diffusers_sample_opts, as `ddpm sample --diffusers` takes them. */
static void run_ddim_case(const ddpm_checkpoint *ck, const char *name, int ddpm_rules,
                          float *x, size_t d, ddpm_schedule *sched) {
    char key[128];
    snprintf(key, sizeof key, "ddimx/%s/config", name);
    const char *cfg = meta(key);
    ddpm_diffusers_sampling smp;
    ddpm_prediction pred;
    if (ddpm_diffusers_scheduler_parse(cfg, strlen(cfg), name, sched, &pred, &smp))
        fail_msg("%s", ddpm_last_error());
    snprintf(key, sizeof key, "ddimx/%s/steps", name);
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.sampler = smp.sampler;
    o.steps = atoi(meta(key));
    o.spacing = smp.spacing;
    o.step.prediction = pred;
    o.step.clip_x0 = smp.clip_x0;
    o.threshold = smp.threshold;
    o.threshold_ratio = smp.threshold_ratio;
    o.threshold_max = smp.threshold_max;
    o.x_is_init = 1;
    if (!ddpm_rules) ddpm_diffusers_sample_opts(&smp, &o);
    int ts[64];
    assert_int_equal(ddpm_sample_timesteps(sched, &o, ts, NULL), DDPM_OK);
    char got[256] = "";
    for (int k = 0; k < o.steps; k++) snprintf(got + strlen(got), sizeof got - strlen(got), k ? ",%d" : "%d", ts[k]);
    snprintf(key, sizeof key, "ddimx/%s/timesteps", name);
    if (!ddpm_rules) assert_string_equal(got, meta(key));
    ddpm_model_sampler ms;
    assert_int_equal(ddpm_model_sampler_init(&ms, ck->model, 1), DDPM_OK);
    assert_int_equal(ddpm_sample_loop(sched, &o, ddpm_model_denoise, &ms, 1, d, x), DDPM_OK);
    ddpm_model_sampler_free(&ms);
}

static void test_ddim_scheduler_options(void **s) {
    (void)s;
    ddpm_checkpoint ck;
    ddpm_diffusers_sampling smp;
    if (ddpm_diffusers_load(folder("church"), &ck, &smp)) fail_msg("%s", ddpm_last_error());
    const size_t d = ck.model->sample_numel;
    char cases[256];
    snprintf(cases, sizeof cases, "%s", meta("ddimx/cases"));
    int n_cases = 0;
    for (char *name = strtok(cases, ","); name; name = strtok(NULL, ","), n_cases++) {
        char key[128];
        snprintf(key, sizeof key, "ddimx/%s/", name);
        float *x = nc_tensor(&FX, key, "x_T", d), *ref = NULL;
        ddpm_schedule sched;
        run_ddim_case(&ck, name, 0, x, d, &sched);
        snprintf(key, sizeof key, "ddimx/%s/sample", name);
        cmp_ref(key, x, d, 1e-4);
        /* the check can fail: with ddpm's own DDIM rules (eps re-derived from the clipped x_0,
         * the next listed timestep, the final alpha 1, no offset) every case differs */
        ref = tu_tensor(&FX, key, d, NULL);
        free(x);
        ddpm_schedule_free(&sched);
        snprintf(key, sizeof key, "ddimx/%s/", name);
        x = nc_tensor(&FX, key, "x_T", d);
        run_ddim_case(&ck, name, 1, x, d, &sched);
        double diff = 0, scale = 0;
        for (size_t i = 0; i < d; i++) {
            diff = fmax(diff, fabs((double)x[i] - ref[i]));
            scale = fmax(scale, fabs((double)ref[i]));
        }
        printf("[unet2d] DDIM %s: ddpm's own rules differ from DDIMScheduler's by %.3g (max |ref| %.3g)\n",
               name, diff, scale);
        /* (not the x_0 case: its last step returns the network's thresholded x_0 under both
         * rules, and the earlier steps reach it only through the network's input) */
        if (strcmp(name, "threshold_sample_linspace") != 0) assert_true(diff > 1e-3 * scale); /* 10x the tolerance */
        ddpm_schedule_free(&sched);
        free(x);
        free(ref);
    }
    assert_int_equal(n_cases, 4);
    ddpm_checkpoint_free(&ck);
}

/* A folder with only diffusion_pytorch_model.bin (torch.save by Debian's torch, the older
 * attention names) loads the same weights as its safetensors twin. */
static void test_bin_folder(void **s) {
    (void)s;
    ddpm_checkpoint a, b;
    ddpm_diffusers_sampling smp;
    if (ddpm_diffusers_load(folder("church"), &a, &smp)) fail_msg("%s", ddpm_last_error());
    if (ddpm_diffusers_load(folder("church_bin"), &b, &smp)) fail_msg("%s", ddpm_last_error());
    assert_int_equal(a.model->n_params, b.model->n_params);
    assert_memory_equal(a.model->params, b.model->params, sizeof(float) * a.model->n_params);
    ddpm_checkpoint_free(&a);
    ddpm_checkpoint_free(&b);
}

static void test_ddpm_step_matches_ddpmscheduler(void **s) {
    (void)s;
    ddpm_checkpoint ck;
    ddpm_diffusers_sampling smp;
    if (ddpm_diffusers_load(folder("cifar"), &ck, &smp)) fail_msg("%s", ddpm_last_error());
    const char *cases[] = {"ddpm_small", "ddpm_large"};
    const int tv[] = {500, 1, 0};
    for (int v = 0; v < 2; v++)
        for (int k = 0; k < 3; k++) {
            ddpm_step_opts so = {.prediction = DDPM_PRED_EPS, .clip_x0 = 1,
                                 .variance = v ? DDPM_VAR_LARGE : DDPM_VAR_SMALL};
            char pre[64];
            snprintf(pre, sizeof pre, "%s/t%d/", cases[v], tv[k]);
            const size_t n = 2 * 3 * 4 * 4;
            float *xt = nc_tensor(&FX, pre, "xt", n), *eps = nc_tensor(&FX, pre, "eps", n);
            float *z = nc_tensor(&FX, pre, "noise", n), *prev = malloc(sizeof(float) * n);
            ddpm_step_ddpm(&ck.schedule, &so, tv[k], xt, eps, z, 2, n / 2, prev, NULL);
            char key[80];
            snprintf(key, sizeof key, "%sprev", pre);
            cmp_ref(key, prev, n, ATOL_REL);
            free(xt);
            free(eps);
            free(z);
            free(prev);
        }
    ddpm_checkpoint_free(&ck);
}

/* ---- configuration errors ------------------------------------------------------------------ */

#define BASE "\"kind\":\"unet2d\",\"sample_size\":8,\"block_out_channels\":[16,16],\"norm_num_groups\":4," \
             "\"down_block_types\":[\"DownBlock2D\",\"AttnDownBlock2D\"],\"up_block_types\":[\"AttnUpBlock2D\",\"UpBlock2D\"]"

static void test_config_errors(void **s) {
    (void)s;
    ddpm_model *m = nc_create("{" BASE "}", 1);
    ddpm_model_free(m);
    nc_expect_bad_config("{" BASE ",\"cross_attention_dim\":8}", "cross_attention_dim");
    nc_expect_bad_config("{" BASE ",\"resnet_time_scale_shift\":\"scale_shift\"}", "resnet_time_scale_shift");
    nc_expect_bad_config("{" BASE ",\"out_channels\":6}", "out_channels");
    nc_expect_bad_config("{" BASE ",\"downsample_type\":\"resnet\"}", "downsample_type");
    nc_expect_bad_config("{" BASE ",\"time_embedding_type\":\"fourier\"}", "time_embedding_type");
    nc_expect_bad_config("{" BASE ",\"class_embed_type\":\"timestep\"}", "class_embed_type");
    nc_expect_bad_config("{" BASE ",\"act_fn\":\"gelu\"}", "act_fn");
    nc_expect_bad_config("{" BASE ",\"norm_num_groups\":3}", "norm_num_groups");
    nc_expect_bad_config("{" BASE ",\"attention_head_dim\":12}", "multiple of 16");
    nc_expect_bad_config("{" BASE ",\"sample_size\":[8,16]}", "sample_size");
    nc_expect_bad_config("{" BASE ",\"downsample_padding\":2}", "downsample_padding");
    nc_expect_bad_config("{" BASE ",\"freq_shift\":8}", "divide by zero");
    nc_expect_bad_config("{\"kind\":\"unet2d\",\"sample_size\":8,\"block_out_channels\":[16,16],\"norm_num_groups\":4,"
                         "\"down_block_types\":[\"DownBlock2D\",\"CrossAttnDownBlock2D\"],"
                         "\"up_block_types\":[\"UpBlock2D\",\"UpBlock2D\"]}", "CrossAttnDownBlock2D");
    nc_expect_bad_config("{\"kind\":\"unet2d\",\"sample_size\":8,\"block_out_channels\":[16,16,16],"
                         "\"norm_num_groups\":4,\"down_block_types\":[\"DownBlock2D\",\"DownBlock2D\"],"
                         "\"up_block_types\":[\"UpBlock2D\",\"UpBlock2D\"]}", "block_out_channels");
    nc_expect_bad_config("{\"kind\":\"unet2d\",\"block_out_channels\":[16,16],\"norm_num_groups\":4}", "sample_size");
    nc_expect_bad_config("{" BASE ",\"_class_name\":\"UNet2DConditionModel\"}", "_class_name");

    /* the scheduler's keys */
    ddpm_schedule sc;
    ddpm_prediction pred;
    ddpm_diffusers_sampling smp;
    const char *bad[][2] = {
        {"{\"_class_name\":\"DDPMScheduler\",\"beta_schedule\":\"linear\",\"variance_type\":\"learned\"}", "variance_type"},
        {"{\"_class_name\":\"EulerDiscreteScheduler\"}", "_class_name"},
        {"{\"num_train_timesteps\":1000,\"use_karras_sigmas\":true}", "use_karras_sigmas"},
        {"{\"steps_offset\":1.5}", "steps_offset"},
        {"{\"steps_offset\":-1}", "steps_offset"},
        {"{\"clip_sample_range\":0}", "clip_sample_range"},
        {"{\"_class_name\":\"DDIMScheduler\",\"set_alpha_to_one\":1}", "set_alpha_to_one"},
        {"{\"trained_betas\":[0.1,0.2]}", "trained_betas"},
        {"{\"prediction_type\":\"flow\"}", "prediction_type"},
        {"[1,2]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = ddpm_diffusers_scheduler_parse(bad[i][0], strlen(bad[i][0]), "sched.json", &sc, &pred, &smp);
        tu_expect_status(rc, DDPM_ERR_FORMAT, "sched.json", bad[i][1]);
    }
    /* the mappings: scaled_linear (custom betas), squaredcos_cap_v2 (ddpm's cosine), v */
    const char *ok = "{\"_class_name\":\"PNDMScheduler\",\"beta_schedule\":\"scaled_linear\",\"beta_start\":0.00085,"
                     "\"beta_end\":0.012,\"num_train_timesteps\":1000,\"prediction_type\":\"v_prediction\","
                     "\"skip_prk_steps\":true,\"set_alpha_to_one\":false,\"steps_offset\":0}";
    assert_int_equal(ddpm_diffusers_scheduler_parse(ok, strlen(ok), "s", &sc, &pred, &smp), DDPM_OK);
    assert_int_equal(pred, DDPM_PRED_V);
    assert_int_equal(smp.sampler, DDPM_SAMPLER_DDIM);
    const double b999 = 0.012, b0 = 0.00085;
    assert_true(fabs(sc.betas_f64[0] - b0) < 1e-15 && fabs(sc.betas_f64[999] - b999) < 1e-15);
    const double mid = pow((sqrt(b0) + sqrt(b999)) / 2, 2); /* linspace's middle, squared */
    assert_true(fabs((sc.betas_f64[499] + sc.betas_f64[500]) / 2 - mid) < 1e-8);
    ddpm_schedule_free(&sc);
    const char *cosine = "{\"beta_schedule\":\"squaredcos_cap_v2\",\"num_train_timesteps\":50,\"variance_type\":\"fixed_large\"}";
    assert_int_equal(ddpm_diffusers_scheduler_parse(cosine, strlen(cosine), "s", &sc, &pred, &smp), DDPM_OK);
    assert_int_equal(sc.config.kind, DDPM_SCHEDULE_COSINE);
    assert_int_equal(sc.n, 50);
    /* diffusers' betas_for_alpha_bar: beta_0 = 1 - abar(1/T) / abar(0) */
    const double a0 = cos(0.008 / 1.008 * M_PI / 2), a1 = cos((1.0 / 50 + 0.008) / 1.008 * M_PI / 2);
    assert_true(fabs(sc.betas_f64[0] - (1 - a1 * a1 / (a0 * a0))) < 1e-12);
    assert_int_equal(smp.variance, DDPM_VAR_LARGE);
    ddpm_schedule_free(&sc);
}

/* Folder errors: each names the file (and key). */
static void test_folder_errors(void **s) {
    (void)s;
    ddpm_checkpoint ck;
    ddpm_diffusers_sampling smp;
    const char *dir = tu_tmp("flat");
    assert_int_equal(tu_system("mkdir -p '%s' && cp '%s'/* '%s'/", dir, folder("church"), dir), 0);
    char cfg[1100], w[1100], sc[1100];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(w, sizeof w, "%s/diffusion_pytorch_model.safetensors", dir);
    snprintf(sc, sizeof sc, "%s/scheduler_config.json", dir);
    assert_int_equal(ddpm_diffusers_load(dir, &ck, &smp), DDPM_OK);
    ddpm_checkpoint_free(&ck);
    /* an unknown key in config.json */
    assert_int_equal(tu_system("sed -i 's/\"act_fn\"/\"foo_bar\": 1, \"act_fn\"/' '%s'", cfg), 0);
    tu_expect_status(ddpm_diffusers_load(dir, &ck, &smp), DDPM_ERR_INVALID, "config.json", "foo_bar");
    assert_int_equal(tu_system("sed -i 's/\"foo_bar\": 1, //' '%s'", cfg), 0);
    /* a tensor of the wrong shape: another layers_per_block */
    assert_int_equal(tu_system("sed -i 's/\"layers_per_block\": 2/\"layers_per_block\": 1/' '%s'", cfg), 0);
    tu_expect_status(ddpm_diffusers_load(dir, &ck, &smp), DDPM_ERR_FORMAT, "diffusion_pytorch_model.safetensors", "");
    assert_int_equal(tu_system("sed -i 's/\"layers_per_block\": 1/\"layers_per_block\": 2/' '%s'", cfg), 0);
    /* a scheduler key ddpm does not map */
    assert_int_equal(tu_system("sed -i 's/\"beta_end\"/\"use_karras_sigmas\": true, \"beta_end\"/' '%s'", sc), 0);
    tu_expect_status(ddpm_diffusers_load(dir, &ck, &smp), DDPM_ERR_FORMAT, "scheduler_config.json", "use_karras_sigmas");
    /* the weights missing, then only a .bin */
    assert_int_equal(tu_system("rm '%s'", w), 0);
    tu_expect_status(ddpm_diffusers_load(dir, &ck, &smp), DDPM_ERR_IO, "diffusion_pytorch_model.safetensors", "missing");
    assert_int_equal(tu_system("sed -i 's/\"use_karras_sigmas\": true, //' '%s'", sc), 0);
    assert_int_equal(tu_system("touch '%s/diffusion_pytorch_model.bin'", dir), 0);
    tu_expect_status(ddpm_diffusers_load(dir, &ck, &smp), DDPM_ERR_FORMAT, "diffusion_pytorch_model.bin", "");
    /* not a folder of a model */
    tu_expect_status(ddpm_diffusers_load(tu_tmp("none"), &ck, &smp), DDPM_ERR_IO, "none", "not a directory");
}

/* ---- writing a folder ---------------------------------------------------------------------- */

static void test_save_and_load_again(void **s) {
    (void)s;
    ddpm_checkpoint a, b;
    ddpm_diffusers_sampling smp;
    if (ddpm_diffusers_load(folder("cifar"), &a, &smp)) fail_msg("%s", ddpm_last_error());
    const char *dir = tu_tmp("export");
    if (ddpm_diffusers_save(dir, a.model, &a.schedule, a.train.prediction)) fail_msg("%s", ddpm_last_error());
    if (ddpm_diffusers_load(dir, &b, &smp)) fail_msg("%s", ddpm_last_error());
    assert_int_equal(a.model->n_params, b.model->n_params);
    assert_memory_equal(a.model->params, b.model->params, sizeof(float) * a.model->n_params);
    assert_string_equal(a.model->config_json, b.model->config_json);
    assert_memory_equal(a.schedule.betas, b.schedule.betas, sizeof(float) * 1000);
    assert_string_equal(smp.scheduler, "DDPMScheduler");
    /* the folder has what DDPMPipeline.from_pretrained reads */
    char p[1100];
    snprintf(p, sizeof p, "%s/model_index.json", dir);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    /* the unet's keys are diffusers' */
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    ddpm_safetensors f;
    assert_int_equal(ddpm_safetensors_read(p, &f), DDPM_OK);
    assert_non_null(ddpm_safetensors_find(&f, "down_blocks.1.attentions.0.to_q.weight"));
    assert_non_null(ddpm_safetensors_find(&f, "up_blocks.0.upsamplers.0.conv.weight"));
    assert_string_equal(ddpm_safetensors_meta(&f, "format"), "pt");
    ddpm_safetensors_free(&f);
    /* a zero-terminal-SNR schedule goes out as rescale_betas_zero_snr and comes back the same */
    ddpm_schedule z;
    ddpm_schedule_config zc;
    ddpm_schedule_config_default(&zc, DDPM_SCHEDULE_LINEAR, 1000);
    zc.zero_terminal_snr = 1;
    assert_int_equal(ddpm_schedule_init(&z, &zc), DDPM_OK);
    const char *zdir = tu_tmp("export_zsnr");
    if (ddpm_diffusers_save(zdir, a.model, &z, DDPM_PRED_V)) fail_msg("%s", ddpm_last_error());
    ddpm_checkpoint c;
    if (ddpm_diffusers_load(zdir, &c, &smp)) fail_msg("%s", ddpm_last_error());
    assert_int_equal(c.schedule.config.zero_terminal_snr, 1);
    assert_int_equal(c.train.prediction, DDPM_PRED_V);
    assert_true(c.schedule.alphas_cumprod[999] == 0.0f);
    assert_memory_equal(c.schedule.alphas_cumprod, z.alphas_cumprod, sizeof(float) * 1000);
    ddpm_checkpoint_free(&c);
    ddpm_schedule_free(&z);
    /* another network is refused by name */
    ddpm_model *m = nc_create("{\"kind\":\"mlp\",\"dim\":2,\"num_timesteps\":1000}", 1);
    tu_expect_status(ddpm_diffusers_save(dir, m, &a.schedule, DDPM_PRED_EPS), DDPM_ERR_INVALID, "", "not a mlp");
    ddpm_model_free(m);
    ddpm_checkpoint_free(&a);
    ddpm_checkpoint_free(&b);
}

/* Trainable on the tape like ddpm's own networks: the trainer's steps run and the loss falls on
 * a fixed batch. */
static void test_trains(void **s) {
    (void)s;
    ddpm_model *m = nc_create(meta("g/config"), 3);
    nc_adam a;
    const int B = 3;
    nc_adam_init(&a, m, B);
    const size_t n = (size_t)B * m->sample_numel;
    float *x = nc_tensor(&FX, "g/", "x", n), *target = nc_tensor(&FX, "g/", "dout", n);
    float *cond = nc_tensor(&FX, "g/", "cond", (size_t)B * 3);
    int *t = nc_tensor_int(&FX, "g/", "t", B);
    ddpm_model_input in = {.x = x, .t = t, .cond = cond, .B = B, .train = 1};
    float norm;
    const double first = nc_adam_step(&a, &in, target, &norm);
    double last = first;
    for (int k = 0; k < 20; k++) last = nc_adam_step(&a, &in, target, &norm);
    printf("[unet2d] 21 Adam steps on one batch: loss %.4f -> %.4f\n", first, last);
    assert_true(isfinite(last) && last < 0.9 * first);
    nc_adam_free(&a);
    free(x);
    free(target);
    free(cond);
    free(t);
    ddpm_model_free(m);
}

/* Micro-batches (the trainer's microbatch, tape_net.c's concurrent micro-batches): a step with
 * micro-batches of 1 and 2 items lands where the plain step does (float rounding apart). */
static void test_microbatches(void **s) {
    (void)s;
    const int N = 4;
    float *x = tu_randn_alloc((size_t)N * 2 * 8 * 8, 0.5f), *cond = calloc((size_t)N * 3, sizeof(float));
    for (int i = 0; i < N; i++) cond[i * 3 + i % 3] = 1.0f;
    ddpm_schedule sch;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 1000);
    assert_int_equal(ddpm_schedule_init(&sch, &sc), DDPM_OK);
    float *ref = NULL, loss0 = 0, norm0 = 0;
    size_t np = 0;
    for (int mb = 0; mb <= 2; mb++) {
        ddpm_model *m = nc_create(meta("g/config"), 5);
        ddpm_train_config tc;
        ddpm_train_config_default(&tc);
        tc.batch_size = N;
        tc.total_steps = 1;
        tc.ema_decay = 0;
        tc.microbatch = mb;
        ddpm_train_data td = {.x = x, .cond = cond, .n = (size_t)N};
        ddpm_trainer tr;
        if (ddpm_trainer_init(&tr, m, &sch, &tc, &td)) fail_msg("%s", ddpm_last_error());
        if (ddpm_trainer_step(&tr)) fail_msg("%s", ddpm_last_error());
        if (!ref) {
            np = m->n_params;
            ref = malloc(sizeof(float) * np);
            memcpy(ref, m->params, sizeof(float) * np);
            loss0 = tr.last_loss;
            norm0 = tr.last_grad_norm;
        } else {
            /* Adam's first step hardly depends on the gradient's scale: the loss and the
             * gradient norm before clipping must agree too */
            assert_true(fabs(tr.last_loss - loss0) <= 1e-5 * loss0);
            assert_true(fabs(tr.last_grad_norm - norm0) <= 1e-5 * norm0);
            char what[64];
            snprintf(what, sizeof what, "weights after a step with micro-batches of %d", mb);
            tu_assert_close(m->params, ref, np, 1e-5, 1e-6, what);
        }
        ddpm_trainer_free(&tr);
        ddpm_model_free(m);
    }
    ddpm_schedule_free(&sch);
    free(ref);
    free(x);
    free(cond);
}

/* ddpm's own unet as a UNet2DModel: the same function (random weights everywhere, also where
 * the unet starts at zero), and through a folder; what does not map is refused by name. */
static void test_unet_maps_to_unet2d(void **s) {
    (void)s;
    ddpm_model *u = nc_create("{\"kind\":\"unet\",\"in_channels\":3,\"height\":16,\"base_channels\":16,"
                              "\"channel_mult\":[1,2],\"num_res_blocks\":1,\"attn_resolutions\":[8],\"heads\":2,"
                              "\"dim_head\":16,\"groups\":4,\"num_classes\":3,\"num_timesteps\":100}", 1);
    for (size_t k = 0; k < u->n_tensors; k++) {
        float *w = ddpm_model_tensor_data(u, &u->tensors[k]);
        float *r = tu_randn_alloc(u->tensors[k].numel, 0.2f);
        memcpy(w, r, sizeof(float) * u->tensors[k].numel);
        free(r);
    }
    ddpm_model *v = NULL;
    if (ddpm_diffusers_from_unet(u, &v)) fail_msg("%s", ddpm_last_error());
    assert_string_equal(v->ops->kind, "unet2d");
    assert_int_equal(ddpm_model_weight_count(v), ddpm_model_weight_count(u));
    const int B = 2;
    const size_t n = (size_t)B * u->sample_numel;
    float *x = tu_randn_alloc(n, 1.0f), *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    float cond[6] = {0, 1, 0, 1, 0, 0};
    int t[2] = {99, 3};
    ddpm_model_input in = {.x = x, .t = t, .cond = cond, .B = B};
    assert_int_equal(ddpm_model_reserve(u, B), DDPM_OK);
    assert_int_equal(ddpm_model_reserve(v, B), DDPM_OK);
    assert_int_equal(u->ops->forward(u, &in, a), DDPM_OK);
    assert_int_equal(v->ops->forward(v, &in, b), DDPM_OK);
    /* the same operations but the sinusoidal frequencies (exp(-k ln(1e4) / (half - 1)) rounded as
     * diffusers vs as the unet): float rounding, the tolerance of the PyTorch comparisons */
    tu_assert_close(b, a, n, 1e-4, 1e-5 * tu_maxabs(a, n), "unet2d of a unet vs the unet");
    /* through a folder: ddpm_diffusers_save converts it */
    ddpm_schedule sch;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_COSINE, 100);
    assert_int_equal(ddpm_schedule_init(&sch, &sc), DDPM_OK);
    const char *dir = tu_tmp("from_unet");
    if (ddpm_diffusers_save(dir, u, &sch, DDPM_PRED_V)) fail_msg("%s", ddpm_last_error());
    ddpm_checkpoint ck;
    ddpm_diffusers_sampling smp;
    if (ddpm_diffusers_load(dir, &ck, &smp)) fail_msg("%s", ddpm_last_error());
    assert_int_equal(ck.train.prediction, DDPM_PRED_V);
    assert_int_equal(ck.schedule.config.kind, DDPM_SCHEDULE_COSINE);
    assert_int_equal(ddpm_model_reserve(ck.model, B), DDPM_OK);
    assert_int_equal(ck.model->ops->forward(ck.model, &in, b), DDPM_OK);
    tu_assert_close(b, a, n, 1e-4, 1e-5 * tu_maxabs(a, n), "the folder of a unet vs the unet");
    ddpm_checkpoint_free(&ck);
    ddpm_schedule_free(&sch);
    ddpm_model_free(v);
    ddpm_model_free(u);
    /* 4 heads of 32 at 32 channels: diffusers' attention is heads x head dim = channels */
    u = nc_create("{\"kind\":\"unet\",\"height\":8,\"channel_mult\":[1,2]}", 1);
    tu_expect_status(ddpm_diffusers_from_unet(u, &v), DDPM_ERR_INVALID, "", "attention_head_dim");
    assert_null(v);
    ddpm_model_free(u);
    u = nc_create("{\"kind\":\"unet\",\"height\":8,\"channel_mult\":[1,2],\"self_cond\":true,\"dim_head\":0}", 1);
    tu_expect_status(ddpm_diffusers_from_unet(u, &v), DDPM_ERR_INVALID, "", "self_cond");
    ddpm_model_free(u);
    free(x);
    free(a);
    free(b);
}

/* `ddpm export --diffusers` of a checkpoint ddpm trained: the church folder's model, two trainer
 * steps on random images, saved; the exported folder loads back with the trained weights and
 * samples through `ddpm sample --diffusers`. */
static void test_export_cli(void **s) {
    (void)s;
    ddpm_checkpoint src;
    ddpm_diffusers_sampling smp;
    if (ddpm_diffusers_load(folder("church"), &src, &smp)) fail_msg("%s", ddpm_last_error());
    ddpm_model *m = src.model;
    const size_t N = 4, d = m->sample_numel;
    float *x = tu_randn_alloc(N * d, 0.5f);
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.batch_size = 2;
    tc.total_steps = 2;
    tc.ema_decay = 0;
    ddpm_train_data td = {.x = x, .n = N};
    ddpm_trainer tr;
    if (ddpm_trainer_init(&tr, m, &src.schedule, &tc, &td)) fail_msg("%s", ddpm_last_error());
    for (int i = 0; i < 2; i++)
        if (ddpm_trainer_step(&tr)) fail_msg("step %d: %s", i, ddpm_last_error());
    const char *ck = tu_tmp("u2.safetensors"), *dir = tu_tmp("u2_export");
    if (ddpm_checkpoint_save(ck, &tr, NULL, NULL, NULL, 0)) fail_msg("%s", ddpm_last_error());
    assert_int_equal(tu_system("'%s' export --ckpt '%s' --diffusers '%s' --quiet", tu_ddpm_bin(), ck, dir), 0);
    ddpm_checkpoint back;
    if (ddpm_diffusers_load(dir, &back, &smp)) fail_msg("%s", ddpm_last_error());
    assert_memory_equal(back.model->params, m->params, sizeof(float) * m->n_params);
    assert_string_equal(smp.scheduler, "DDPMScheduler");
    assert_int_equal(smp.variance, DDPM_VAR_SMALL);
    assert_int_equal(tu_system("'%s' sample --diffusers '%s' -n 1 --sampler ddim --steps 2 --quiet --out '%s'",
                               tu_ddpm_bin(), dir, tu_tmp("u2.png")), 0);
    ddpm_checkpoint_free(&back);
    ddpm_trainer_free(&tr);
    ddpm_checkpoint_free(&src);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_pytorch_g),
        cmocka_unit_test(test_cifar_folder),
        cmocka_unit_test(test_church_folder_legacy_names),
        cmocka_unit_test(test_ddim_sample_matches_ddimscheduler),
        cmocka_unit_test(test_ddpm_step_matches_ddpmscheduler),
        cmocka_unit_test(test_ddim_scheduler_options),
        cmocka_unit_test(test_bin_folder),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_folder_errors),
        cmocka_unit_test(test_save_and_load_again),
        cmocka_unit_test(test_trains),
        cmocka_unit_test(test_export_cli),
        cmocka_unit_test(test_microbatches),
        cmocka_unit_test(test_unet_maps_to_unet2d),
    };
    tu_use_fixture("diffusers/reference.safetensors", &FX);
    return cmocka_run_group_tests(tests, setup, teardown);
}
