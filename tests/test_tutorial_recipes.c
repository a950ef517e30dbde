/* test_tutorial_recipes.c - the command line against the tutorials' own PyTorch code
 * (fixtures of scripts/fixtures/gen_recipes.py and gen_diffusers.py):
 *   - `ddpm sample --preset course --sampler ddim` on the course's ContextUnet saved by
 *     torch.save (no learned shortcut: --shortcut none) from a given x_T and context rows equals
 *     the course's sample_ddim (n = 20); ddpm's defaults do not (leading spacing, clipping);
 *   - `--preset course --sampler ddpm` is exactly `--variance large --no-clip`, and
 *     `--preset simple-unet` exactly `--variance small --no-clip`;
 *   - `ddpm predict` equals one evaluation of the course's network (with contexts) and of
 *     diffusers' UNet2DModel (a diffusers folder);
 *   - the error for a course export without --shortcut none suggests it;
 *   - `ddpm export --weights` of a batch-norm network holds the EMA parameters with the running
 *     statistics (what sampling uses), and an MLP with non-default --hidden/--depth/--time-embedding
 *     samples from that export as from its checkpoint; points take --x-init (N from the array).
 *
 * Tolerance against the float64 references: |got - ref| <= 1e-4 |ref| + 1e-4 max|ref| for the
 * 20-step sample (the float32 network twenty times), 1e-4 |ref| + 1e-5 max|ref| for one forward. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tu_worst worst;

/* A path in a buffer of its own (tu_tmp's and fx's buffers rotate). */
#define PATH(var, expr) char var[1024]; snprintf(var, sizeof var, "%s", expr)

static const char *fx(const char *name) {
    static char path[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s", tu_fixture_path(name));
    return path[k];
}

/* The float32 contents of a .npy file (n elements, else the test fails). */
static float *npy(const char *path, size_t n) {
    ddpm_npy a;
    if (ddpm_npy_read(path, &a)) fail_msg("%s", ddpm_last_error());
    size_t numel = 1;
    for (int k = 0; k < a.ndim; k++) numel *= (size_t)a.shape[k];
    if (numel != n) fail_msg("%s holds %zu values, not %zu", path, numel, n);
    float *v = malloc(sizeof(float) * n);
    assert_non_null(v);
    assert_int_equal(ddpm_npy_to_f32(&a, v), DDPM_OK);
    ddpm_npy_free(&a);
    return v;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - b[i];
        m = d > m ? d : -d > m ? -d : m;
    }
    return m;
}

#define COURSE "--weights '%s' --model context-unet --n-feat 8 --n-cfeat 5 --height 16 --channels 3"

static void test_course_ddim_preset(void **s) {
    (void)s;
    const size_t n = 2 * 3 * 16 * 16;
    PATH(pth, fx("recipes/course_context_unet.pth"));
    PATH(xT, fx("recipes/x_T.npy"));
    PATH(ctx, fx("recipes/context.npy"));
    PATH(out, tu_tmp("course_ddim.npy"));
    PATH(def, tu_tmp("default_ddim.npy"));
    assert_int_equal(tu_system("'%s' sample " COURSE " --shortcut none --preset course --sampler ddim --steps 20 "
                               "--x-init '%s' --context-file '%s' --npy '%s' --out '%s' --quiet",
                               tu_ddpm_bin(), pth, xT, ctx, out, tu_tmp("g.png")), 0);
    float *got = npy(out, n), *ref = npy(fx("recipes/ddim20.npy"), n);
    tu_cmp_torch(&worst, "course sample_ddim n=20 vs --preset course", got, ref, n, 1e-4, 1e-4);
    /* the check can fail: ddpm's defaults (leading spacing, x_0 clipped) are another sampler */
    assert_int_equal(tu_system("'%s' sample " COURSE " --shortcut none --sampler ddim --steps 20 "
                               "--x-init '%s' --context-file '%s' --npy '%s' --out '%s' --quiet",
                               tu_ddpm_bin(), pth, xT, ctx, def, tu_tmp("g.png")), 0);
    float *other = npy(def, n);
    const double scale = tu_maxabs(ref, n);
    printf("[recipes] without the preset the sample differs by %.3g (max |ref| %.3g)\n",
           max_diff(other, ref, n), scale);
    assert_true(max_diff(other, ref, n) > 1e-2 * scale);
    free(got);
    free(ref);
    free(other);
}

/* The presets are the documented flags, bit for bit. */
static void test_presets_are_their_flags(void **s) {
    (void)s;
    PATH(pth, fx("recipes/course_context_unet.pth"));
    PATH(a, tu_tmp("preset.npy"));
    PATH(b, tu_tmp("flags.npy"));
    const char *cases[][2] = {
        {"--preset course --sampler ddpm", "--sampler ddpm --variance large --no-clip"},
        {"--preset course --sampler ddim --steps 10", "--sampler ddim --steps 10 --spacing trailing --no-clip"},
        {"--preset simple-unet --sampler ddpm", "--sampler ddpm --variance small --no-clip"},
        {"--preset course --sampler ddpm --variance small", "--sampler ddpm --variance small --no-clip"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int k = 0; k < 2; k++)
            assert_int_equal(tu_system("'%s' sample " COURSE " --shortcut none %s --timesteps 40 -n 2 --class 1 "
                                       "--seed 3 --npy '%s' --out '%s' --quiet",
                                       tu_ddpm_bin(), pth, cases[i][k], k ? b : a, tu_tmp("g.png")), 0);
        if (tu_system("cmp -s '%s' '%s'", a, b) != 0) fail_msg("'%s' differs from '%s'", cases[i][0], cases[i][1]);
    }
    assert_int_equal(tu_system("'%s' sample " COURSE " --shortcut none --preset nope --out '%s' 2>'%s'",
                               tu_ddpm_bin(), pth, tu_tmp("g.png"), tu_tmp("err.txt")), 2);
    assert_int_equal(tu_system("grep -q \"unknown --preset 'nope' (expected course or simple-unet)\" '%s'", tu_tmp("err.txt")), 0);
}

static void test_predict_vs_pytorch(void **s) {
    (void)s;
    /* the course's network with two context rows, t = 250 of its 1..500 */
    const size_t n = 2 * 3 * 16 * 16;
    PATH(out, tu_tmp("predict.npy"));
    assert_int_equal(tu_system("'%s' predict " COURSE " --shortcut none --x '%s' --t 250 --context-file '%s' "
                               "--out '%s' --quiet",
                               tu_ddpm_bin(), fx("recipes/course_context_unet.pth"), fx("recipes/x_T.npy"),
                               fx("recipes/context.npy"), out), 0);
    float *got = npy(out, n), *ref = npy(fx("recipes/predict_t250.npy"), n);
    tu_cmp_torch(&worst, "predict: course ContextUnet", got, ref, n, 1e-4, 1e-5);
    free(got);
    free(ref);
    /* diffusers' UNet2DModel (the 256-pixel layout at 32x32), t = 500 */
    const size_t n2 = 2 * 3 * 32 * 32;
    assert_int_equal(tu_system("'%s' predict --diffusers '%s' --x '%s' --t 500 --out '%s' --quiet", tu_ddpm_bin(),
                               fx("diffusers/church"), fx("diffusers/predict/x.npy"), out), 0);
    got = npy(out, n2);
    ref = npy(fx("diffusers/predict/out.npy"), n2);
    tu_cmp_torch(&worst, "predict: UNet2DModel", got, ref, n2, 1e-4, 1e-5);
    free(got);
    free(ref);
    /* errors: a timestep outside the schedule, an input of the wrong shape, a condition for an
     * unconditional network */
    PATH(err, tu_tmp("err.txt"));
    assert_int_equal(tu_system("'%s' predict --diffusers '%s' --x '%s' --t 1000 --out '%s' 2>'%s'", tu_ddpm_bin(),
                               fx("diffusers/church"), fx("diffusers/predict/x.npy"), out, err), 2);
    assert_int_equal(tu_system("grep -q 'outside the schedule.s steps 0..999' '%s'", err), 0);
    assert_int_equal(tu_system("'%s' predict --diffusers '%s' --x '%s' --t 10 --out '%s' 2>'%s'", tu_ddpm_bin(),
                               fx("diffusers/church"), fx("recipes/x_T.npy"), out, err), 2);
    assert_int_equal(tu_system("grep -q 'x_T.npy: --x must be an array \\[N, 3, 32, 32\\]' '%s'", err), 0);
    assert_int_equal(tu_system("'%s' predict --diffusers '%s' --x '%s' --t 10 --class 1 --out '%s' 2>'%s'",
                               tu_ddpm_bin(), fx("diffusers/church"), fx("diffusers/predict/x.npy"), out, err), 2);
    assert_int_equal(tu_system("grep -q 'the model is unconditional' '%s'", err), 0);
}

static void test_shortcut_hint(void **s) {
    (void)s;
    PATH(err, tu_tmp("err.txt"));
    assert_int_equal(tu_system("'%s' sample " COURSE " --out '%s' 2>'%s'", tu_ddpm_bin(),
                               fx("recipes/course_context_unet.pth"), tu_tmp("g.png"), err), 2);
    assert_int_equal(tu_system("grep -q \"'init_conv.shortcut.weight' of the context-unet model is missing.*add --shortcut none\" '%s'", err), 0);
}

/* export --weights: EMA parameters with the running statistics, as sampling uses them. */
static void test_export_weights(void **s) {
    (void)s;
    /* a context-unet (batch norm) trained a few steps on a tiny image folder */
    PATH(dir, tu_tmp("img"));
    assert_int_equal(tu_system("mkdir -p '%s/a' '%s/b' && for i in 1 2 3 4; do "
                               "{ printf 'P6\\n8 8\\n255\\n'; head -c 192 /dev/urandom; } > '%s/a/'$i.ppm; "
                               "{ printf 'P6\\n8 8\\n255\\n'; head -c 192 /dev/urandom; } > '%s/b/'$i.ppm; done",
                               dir, dir, dir, dir), 0);
    PATH(run, tu_tmp("run_cu"));
    assert_int_equal(tu_system("'%s' train --data '%s' --labels-from-dirs --image-size 8 --model context-unet "
                               "--n-feat 8 --timesteps 20 --batch-size 4 --steps 5 --ema-decay 0.5 --out '%s' --quiet",
                               tu_ddpm_bin(), dir, run), 0);
    char ck_path[1100];
    snprintf(ck_path, sizeof ck_path, "%s/ckpt.safetensors", run);
    PATH(w, tu_tmp("cu_ema.safetensors"));
    assert_int_equal(tu_system("'%s' export --ckpt '%s' --weights '%s' --ema --quiet", tu_ddpm_bin(), ck_path, w), 0);
    ddpm_checkpoint ck;
    ddpm_safetensors st;
    if (ddpm_checkpoint_load(ck_path, &ck)) fail_msg("%s", ddpm_last_error());
    if (ddpm_safetensors_read(w, &st)) fail_msg("%s", ddpm_last_error());
    assert_non_null(ck.ema);
    assert_int_equal(st.n_tensors, ck.model->n_tensors);
    int buffers = 0, differ = 0;
    for (size_t i = 0; i < ck.model->n_tensors; i++) {
        const ddpm_param_info *p = &ck.model->tensors[i];
        const ddpm_tensor *t = ddpm_safetensors_find(&st, p->name);
        if (!t) fail_msg("the export lacks %s", p->name);
        assert_int_equal(t->numel, p->numel);
        const float *want = p->is_buffer ? ck.model->buffers + p->offset : ck.ema + p->offset;
        assert_memory_equal(t->data, want, sizeof(float) * p->numel);
        buffers += p->is_buffer;
        if (!p->is_buffer) differ |= memcmp(want, ck.model->params + p->offset, sizeof(float) * p->numel) != 0;
    }
    assert_true(buffers > 0); /* running means and variances */
    assert_true(differ);      /* the EMA weights, not the raw ones */
    ddpm_safetensors_free(&st);
    ddpm_checkpoint_free(&ck);
    /* the export samples as the checkpoint does (EMA weights, running statistics) */
    PATH(a, tu_tmp("a.npy"));
    PATH(b, tu_tmp("b.npy"));
    assert_int_equal(tu_system("'%s' sample --ckpt '%s' -n 2 --class 1 --sampler ddim --steps 5 --npy '%s' --out '%s' --quiet",
                               tu_ddpm_bin(), ck_path, a, tu_tmp("g.png")), 0);
    assert_int_equal(tu_system("'%s' sample --weights '%s' --model context-unet --n-feat 8 --n-cfeat 2 --height 8 "
                               "--channels 3 --timesteps 20 -n 2 --class 1 --sampler ddim --steps 5 --npy '%s' --out '%s' --quiet",
                               tu_ddpm_bin(), w, b, tu_tmp("g.png")), 0);
    assert_int_equal(tu_system("cmp -s '%s' '%s'", a, b), 0);
    /* --ema on a checkpoint without EMA weights, and a wrong extension */
    assert_int_equal(tu_system("'%s' train --data '%s' --image-size 8 --model context-unet --n-feat 8 --timesteps 20 "
                               "--batch-size 4 --steps 1 --ema-decay 0 --out '%s/noema' --quiet", tu_ddpm_bin(), dir, run), 0);
    assert_int_equal(tu_system("'%s' export --ckpt '%s/noema/ckpt.safetensors' --weights '%s' --ema 2>'%s'", tu_ddpm_bin(),
                               run, tu_tmp("x.safetensors"), tu_tmp("err.txt")), 2);
    assert_int_equal(tu_system("grep -q 'has no EMA weights' '%s'", tu_tmp("err.txt")), 0);
    assert_int_equal(tu_system("'%s' export --ckpt '%s' --weights '%s' 2>'%s'", tu_ddpm_bin(), ck_path,
                               tu_tmp("x.pth"), tu_tmp("err.txt")), 2);
    assert_int_equal(tu_system("grep -q 'must end in .safetensors' '%s'", tu_tmp("err.txt")), 0);
}

/* An MLP of another size and embedding through --weights, and points from --x-init. */
static void test_mlp_weights_and_points_x_init(void **s) {
    (void)s;
    PATH(run, tu_tmp("run_mlp"));
    assert_int_equal(tu_system("'%s' train --n-points 300 --hidden 24 --depth 2 --time-embedding sinusoidal "
                               "--batch-size 32 --steps 20 --out '%s' --quiet", tu_ddpm_bin(), run), 0);
    char ck_path[1100];
    snprintf(ck_path, sizeof ck_path, "%s/ckpt.safetensors", run);
    PATH(w, tu_tmp("mlp.safetensors"));
    assert_int_equal(tu_system("'%s' export --ckpt '%s' --weights '%s' --quiet", tu_ddpm_bin(), ck_path, w), 0);
    PATH(a, tu_tmp("pa.npy"));
    PATH(b, tu_tmp("pb.npy"));
    assert_int_equal(tu_system("'%s' sample --ckpt '%s' -n 50 --seed 2 --out '%s' --quiet", tu_ddpm_bin(), ck_path, a), 0);
    /* sigmoid-2d with T 100 is the MLP preset's schedule (no --schedule / --timesteps needed) */
    assert_int_equal(tu_system("'%s' sample --weights '%s' --model mlp --hidden 24 --depth 2 --time-embedding sinusoidal "
                               "-n 50 --seed 2 --out '%s' --quiet", tu_ddpm_bin(), w, b), 0);
    assert_int_equal(tu_system("cmp -s '%s' '%s'", a, b), 0);
    /* --x-init: 7 rows give 7 samples; DDIM (eta 0) from the same x_T whatever the seed */
    const float xT[14] = {0.1f, -1.2f, 0.7f, 0.3f, -0.4f, 2.0f, 1.1f, -0.6f, 0.0f, 0.9f, -1.5f, 0.2f, 0.8f, -0.1f};
    const int64_t shape[2] = {7, 2};
    PATH(xi, tu_tmp("xT_points.npy"));
    assert_int_equal(ddpm_npy_write_f32(xi, xT, 2, shape), DDPM_OK);
    for (int seed = 1; seed <= 2; seed++)
        assert_int_equal(tu_system("'%s' sample --ckpt '%s' --x-init '%s' --sampler ddim --steps 10 --seed %d "
                                   "--out '%s' --quiet", tu_ddpm_bin(), ck_path, xi, seed, seed == 1 ? a : b), 0);
    float *s1 = npy(a, 14), *s2 = npy(b, 14);
    assert_memory_equal(s1, s2, sizeof xT);
    free(s1);
    free(s2);
    assert_int_equal(tu_system("'%s' sample --ckpt '%s' -n 7 --sampler ddim --steps 10 --seed 1 --out '%s' --quiet",
                               tu_ddpm_bin(), ck_path, b), 0);
    assert_int_not_equal(tu_system("cmp -s '%s' '%s'", a, b), 0); /* x_T drawn from the seed instead */
    assert_int_equal(tu_system("'%s' sample --ckpt '%s' --x-init '%s' -n 5 --out '%s' 2>'%s'", tu_ddpm_bin(), ck_path,
                               xi, b, tu_tmp("err.txt")), 2);
    assert_int_equal(tu_system("grep -q 'x_T must be an array \\[5, 2\\] (N x D)' '%s'", tu_tmp("err.txt")), 0);
}

static int teardown(void **state) {
    (void)state;
    tu_worst_print("recipes", &worst);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_course_ddim_preset),
        cmocka_unit_test(test_presets_are_their_flags),
        cmocka_unit_test(test_predict_vs_pytorch),
        cmocka_unit_test(test_shortcut_hint),
        cmocka_unit_test(test_export_weights),
        cmocka_unit_test(test_mlp_weights_and_points_x_init),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
