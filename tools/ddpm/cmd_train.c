/* cmd_train.c - `ddpm train`: train a diffusion model on points or images. */
#include "train_driver.h"
#include "model_flags.h"
#include "dist.h"
#include "sample_driver.h"
#include "memory_check.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Every flag of `ddpm train`, with its value after parsing. */
typedef struct {
    const char *data, *schedule, *betas_file, *prediction, *loss, *optimizer, *lr_decay, *out,
        *resume;
    int n_points, timesteps, warmup, batch, epochs, save_every, log_every, quiet, no_ema_warmup,
        threads;
    uint64_t data_seed, seed;
    int64_t steps_i;
    double beta_start, beta_end, lr, beta1, beta2, adam_eps, weight_decay, min_lr;
    float min_snr, grad_clip, ema_decay, p2_gamma, p2_k, offset_noise;
    int steps;
    int set_steps, set_epochs, set_bs, set_be, set_T, set_schedule;
    model_flags net;
    /* images */
    const char *labels;
    const char *image_size_arg; /* --image-size S or HxW */
    int image_size, image_width; /* height and width of folder images */
    int channels, labels_from_dirs, max_items, hflip, no_hflip, sample_every, sample_n;
    float cond_drop;
    int set_lr, set_batch, set_decay, set_warmup, set_cond_drop, set_loss;
    int microbatch, set_microbatch, deterministic, zero_snr, shard_data;
    /* sample quality during training */
    int eval_every, eval_n, eval_steps, keep_best;
    const char *eval_sampler, *eval_features;
    float eval_guidance;
    uint64_t eval_seed;
    int allow_large_memory;
} train_args;

/* --deterministic without --microbatch: micro-batches of this many items (U-Net, farm-bench CPU
 * time at 1 thread, loaded Xeon, 128-bit sums then: +3% with 16, +10% with 8, against one float
 * batch; idle, 2 threads, int64 limbs: 1.81 vs 1.86 steps/s with 16). */
enum { DETERMINISTIC_MICROBATCH = 16 };

/* A built-in 2-D data set's name (a whole word of ddpm_points_dataset_names). */
static int is_builtin_points(const char *data) {
    const char *names = ddpm_points_dataset_names(); /* "s-curve, swiss-roll, ..." */
    const size_t n = strlen(data);
    for (const char *p = names; n && (p = strstr(p, data)); p += n)
        if ((p == names || p[-1] == ' ') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

/* Is --data an image source? fashion-mnist, a directory, or an .npy file. A built-in 2-D data
 * set's name means the data set even where a directory has that name (say, the run directory
 * of `--data moons --out moons`); ./moons means the directory. */
static int data_is_images(const char *data) {
    const char *dot = strrchr(data, '.');
    struct stat st;
    if (is_builtin_points(data)) return 0;
    return strcmp(data, "fashion-mnist") == 0 || (dot && strcmp(dot, ".npy") == 0) ||
           (stat(data, &st) == 0 && S_ISDIR(st.st_mode));
}

static char *images_json(const train_args *a) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "images");
    const char *dot = strrchr(a->data, '.');
    if (strcmp(a->data, "fashion-mnist") == 0) {
        cJSON_AddStringToObject(o, "source", "fashion-mnist");
        if (a->max_items > 0) cJSON_AddNumberToObject(o, "max_items", a->max_items);
    } else if (dot && strcmp(dot, ".npy") == 0) {
        cJSON_AddStringToObject(o, "source", "npy");
        cJSON_AddStringToObject(o, "path", a->data);
        if (a->labels) cJSON_AddStringToObject(o, "labels", a->labels);
    } else {
        cJSON_AddStringToObject(o, "source", "folder");
        cJSON_AddStringToObject(o, "path", a->data);
        cJSON_AddNumberToObject(o, "image_size", a->image_size);
        if (a->image_width != a->image_size) cJSON_AddNumberToObject(o, "image_width", a->image_width);
        cJSON_AddNumberToObject(o, "channels", a->channels);
        cJSON_AddBoolToObject(o, "labels_from_dirs", a->labels_from_dirs);
    }
    if (a->hflip || a->no_hflip) cJSON_AddBoolToObject(o, "hflip", a->hflip && !a->no_hflip);
    if (a->shard_data) cJSON_AddTrueToObject(o, "shard");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

int train_print_config(const ddpm_model *m, const ddpm_schedule *s, const ddpm_train_config *c,
                       const char *data_json, size_t n_data) {
    char *sj = ddpm_schedule_config_json(s);
    printf("model     %s  (%zu parameters)\n", m->config_json, ddpm_model_weight_count(m));
    printf("schedule  %s\n", sj ? sj : "?");
    printf("data      %s  (%zu items)\n", data_json, n_data);
    printf("training  %s loss on %s, %s lr %g (warm-up %d, decay %s), batch %d, %lld steps, "
           "grad clip %g, EMA %g%s, seed %llu\n",
           ddpm_loss_name(c->loss), ddpm_prediction_name(c->prediction),
           ddpm_optimizer_name(c->optimizer), c->lr, c->warmup_steps, ddpm_lr_decay_name(c->decay),
           c->batch_size, (long long)c->total_steps, c->grad_clip, c->ema_decay,
           c->ema_warmup ? " (warm-up)" : "", (unsigned long long)c->seed);
    if (c->min_snr_gamma > 0) printf("          min-SNR-gamma weighting, gamma %g\n", c->min_snr_gamma);
    if (c->p2_gamma > 0) printf("          P2 weighting (k + SNR)^-gamma, gamma %g, k %g\n", c->p2_gamma, c->p2_k);
    if (c->offset_noise > 0) printf("          offset noise %g\n", c->offset_noise);
    if (dist_size() > 1) printf("compute   %d processes x", dist_size());
    else printf("compute  ");
    printf(" %d thread%s, %s kernels", ddpm_threads(), ddpm_threads() == 1 ? "" : "s",
           ddpm_kernel_isa());
    if (c->microbatch > 0)
        printf("; micro-batches of %d, summed exactly (the same result for any thread or process "
               "count)", c->microbatch);
    printf("\n");
    free(sj);
    return 0;
}

/* --image-size S or HxW (sides 4..1024), and --image-width W for the width. */
static int parse_image_size(train_args *a) {
    const char *s = a->image_size_arg;
    char *end;
    long h = strtol(s, &end, 10), w = h;
    if (end != s && (*end == 'x' || *end == 'X')) {
        const char *ws = end + 1;
        w = strtol(ws, &end, 10);
        if (end == ws) w = 0;
        if (a->image_width && a->image_width != w)
            return cli_usage_error("train", "--image-size %s and --image-width %d disagree on the width", s, a->image_width);
    } else if (a->image_width) {
        w = a->image_width;
    }
    if (end == s || *end || h < 4 || h > 1024 || w < 4 || w > 1024)
        return cli_usage_error("train", "--image-size takes S or HxW with sides in 4..1024 (got '%s')", s);
    a->image_size = (int)h;
    a->image_width = (int)w;
    return 0;
}

int cmd_train(int argc, char **argv) {
    train_args a = {.data = "s-curve", .prediction = "eps", .optimizer = "adam",
                    .out = "runs/train", .n_points = 10000,
                    .save_every = 1000, .log_every = 1000, .steps = 10000,
                    .beta1 = 0.9, .beta2 = 0.999, .adam_eps = 1e-8, .grad_clip = 1.0f,
                    .ema_decay = 0.999f, .p2_k = 1.0f, .image_size_arg = "32", .channels = 3,
                    .cond_drop = 0.1f, .sample_every = 1000, .sample_n = 40,
                    .eval_n = 1000, .eval_steps = 25, .eval_sampler = "ddim"};
    model_flags_init(&a.net, "mlp");
    const cli_opt data_opts[] = {
        {"data", CLI_STRING, &a.data, "SOURCE", "points: s-curve (default), swiss-roll, moons, circles, 8-gaussians, checkerboard or FILE.csv; images: fashion-mnist, a folder of images or FILE.npy (N x H x W x C)", NULL},
        {"n-points", CLI_INT, &a.n_points, "N", "points drawn from a built-in data set (default 10000)", NULL, 1, 10000000},
        {"data-seed", CLI_U64, &a.data_seed, "S", "seed of the built-in data set (default 0)", NULL},
        {"labels", CLI_STRING, &a.labels, "FILE.npy", "labels for .npy images: class indices [N] or context vectors [N, K]", NULL},
        {"image-size", CLI_STRING, &a.image_size_arg, "S|HxW", "folder images: resize and center-crop to S x S (default 32) or H x W (height x width; the unet takes H != W)", NULL},
        {"image-width", CLI_INT, &a.image_width, "W", "folder images: width W (the height from --image-size)", NULL, 4, 1024},
        {"channels", CLI_INT, &a.channels, "C", "folder images: 3 (RGB, default) or 1 (grayscale)", NULL},
        {"labels-from-dirs", CLI_FLAG, &a.labels_from_dirs, NULL, "folder images: class labels from the sub-folder names", NULL},
        {"max-items", CLI_INT, &a.max_items, "N", "fashion-mnist: use the first N training images", NULL, 0, 1000000000},
        {"hflip", CLI_FLAG, &a.hflip, NULL, "random horizontal flips (default on for folders)", NULL},
        {"no-hflip", CLI_FLAG, &a.no_hflip, NULL, "no random flips", NULL},
        {"shard-data", CLI_FLAG, &a.shard_data, NULL, "under mpirun: each process loads only its 1/N of the images (a folder or .npy too big to hold N times); the run then differs from 1 process", NULL},
    };
    const cli_opt train_opts[] = {
        {"cond-drop", CLI_FLOAT, &a.cond_drop, "P", "labelled images: drop the label with probability P so the model also learns to sample unconditionally (default 0.1)", &a.set_cond_drop},
        {"schedule", CLI_STRING, &a.schedule, "NAME", "beta schedule (points: sigmoid-2d; unet: linear; context-unet: linear-course; simple-unet: linear)", &a.set_schedule},
        {"timesteps", CLI_INT, &a.timesteps, "T", "diffusion steps (points 100, unet 1000, context-unet 500, simple-unet 300)", &a.set_T},
        {"beta-start", CLI_DOUBLE, &a.beta_start, "A", "first beta", &a.set_bs},
        {"beta-end", CLI_DOUBLE, &a.beta_end, "B", "last beta", &a.set_be},
        {"betas", CLI_STRING, &a.betas_file, "FILE", "custom schedule from a file of betas", NULL},
        {"zero-terminal-snr", CLI_FLAG, &a.zero_snr, NULL, "rescale the schedule so its last step is pure noise (Lin et al. 2023; use --prediction v and sample with ddim --spacing trailing)", NULL},
        {"prediction", CLI_STRING, &a.prediction, "KIND", "training target: eps (default), x0 or v", NULL},
        {"loss", CLI_STRING, &a.loss, "KIND", "l2 (default; simple-unet: l1 as its tutorial) or l1", &a.set_loss},
        {"min-snr-gamma", CLI_FLOAT, &a.min_snr, "G", "min-SNR-gamma loss weighting (5 is usual; default off)", NULL, 0, 1e30},
        {"p2-gamma", CLI_FLOAT, &a.p2_gamma, "G", "P2 loss weight (k + SNR)^-G (Choi et al.; 1 is usual, 0 = off)", NULL, 0, 16},
        {"p2-k", CLI_FLOAT, &a.p2_k, "K", "k of the P2 weight (default 1)", NULL, 1e-6, 1e6},
        {"offset-noise", CLI_FLOAT, &a.offset_noise, "S", "images: add S times a per-channel normal draw to the noise (0.1 is usual; default off)", NULL, 0, 10},
        {"optimizer", CLI_STRING, &a.optimizer, "NAME", "adam (default) or adamw", NULL},
        {"lr", CLI_DOUBLE, &a.lr, "LR", "learning rate (default 1e-3; unet 2e-4)", &a.set_lr},
        {"beta1", CLI_DOUBLE, &a.beta1, "B1", "Adam beta1 (default 0.9)", NULL},
        {"beta2", CLI_DOUBLE, &a.beta2, "B2", "Adam beta2 (default 0.999)", NULL},
        {"adam-eps", CLI_DOUBLE, &a.adam_eps, "E", "Adam epsilon (default 1e-8)", NULL, 1e-30, 1},
        {"weight-decay", CLI_DOUBLE, &a.weight_decay, "W", "weight decay (L2 for adam, decoupled for adamw)", NULL, 0, 1e30},
        {"warmup", CLI_INT, &a.warmup, "N", "linear learning-rate warm-up steps (default 0; unet 500)", &a.set_warmup, 0, 2147483647},
        {"lr-decay", CLI_STRING, &a.lr_decay, "KIND", "constant (default), cosine or linear (context-unet, as the course) decay to --min-lr", &a.set_decay},
        {"min-lr", CLI_DOUBLE, &a.min_lr, "LR", "final learning rate of the decay (default 0)", NULL, 0, 1e30},
        {"grad-clip", CLI_FLOAT, &a.grad_clip, "N", "max gradient norm, 0 = off (default 1)", NULL, 0, 1e30},
        {"ema-decay", CLI_FLOAT, &a.ema_decay, "D", "EMA decay of the weights, 0 = off (default 0.999)", NULL},
        {"no-ema-warmup", CLI_FLAG, &a.no_ema_warmup, NULL, "use the EMA decay from the first step", NULL},
        {"batch-size", CLI_INT, &a.batch, "B", "batch size (default 128; context-unet 100, unet 64)", &a.set_batch, 1, 65536},
        {"microbatch", CLI_INT, &a.microbatch, "M", "split each batch into micro-batches of M items whose gradients are summed exactly: results no longer depend on the thread or process count (needed with mpirun; default 0 = one batch; batch norm then uses each micro-batch's statistics)", &a.set_microbatch, 0, 65536},
        {"deterministic", CLI_FLAG, &a.deterministic, NULL, "the same checkpoint for any thread or process count: --microbatch 16 unless given", NULL},
        {"steps", CLI_INT, &a.steps, "N", "optimizer steps (default 10000)", &a.set_steps},
        {"epochs", CLI_INT, &a.epochs, "E", "train for E passes over the data instead of --steps", &a.set_epochs},
        {"seed", CLI_U64, &a.seed, "S", "seed of initialisation, shuffling, t and noise (default 0)", NULL},
        {"out", CLI_STRING, &a.out, "DIR", "run directory (default runs/train)", NULL},
        {"save-every", CLI_INT, &a.save_every, "N", "checkpoint every N steps (default 1000)", NULL},
        {"sample-every", CLI_INT, &a.sample_every, "N", "images: a sample grid in DIR/samples every N steps, 0 = off (default 1000)", NULL},
        {"sample-n", CLI_INT, &a.sample_n, "N", "images: samples in those grids (default 40)", NULL, 1, 1000},
        {"eval-every", CLI_INT, &a.eval_every, "N", "images: every N steps and at the last, FD and KID (and class accuracy of labelled data) of --eval-n samples of the EMA weights against real images (the test files of fashion-mnist, else the training images), in DIR/eval.csv and DIR/eval.png (default 0 = off)", NULL, 0, 1000000000},
        {"eval-n", CLI_INT, &a.eval_n, "N", "samples (and real images) per evaluation (default 1000)", NULL, 4, 1000000},
        {"eval-sampler", CLI_STRING, &a.eval_sampler, "NAME", "sampler of the evaluations (default ddim)", NULL},
        {"eval-steps", CLI_INT, &a.eval_steps, "K", "its steps (default 25; the ddpm sampler takes all)", NULL, 1, 100000},
        {"eval-guidance", CLI_FLOAT, &a.eval_guidance, "W", "classifier-free guidance of the evaluations' labelled samples, -1..100 (default 0)", NULL, SAMPLE_GUIDANCE_MIN, SAMPLE_GUIDANCE_MAX},
        {"eval-seed", CLI_U64, &a.eval_seed, "S", "seed of the evaluations' samples, real subset and KID subsets (default 0)", NULL},
        {"eval-features", CLI_STRING, &a.eval_features, "CLS.safetensors", "classifier of the evaluations (default for 28x28 gray: the shipped Fashion-MNIST one)", NULL},
        {"keep-best", CLI_FLAG, &a.keep_best, NULL, "with --eval-every: keep DIR/best.safetensors, the checkpoint of the lowest FD so far", NULL},
        {"log-every", CLI_INT, &a.log_every, "N", "progress line every N steps when not on a terminal", NULL},
        {"resume", CLI_STRING, &a.resume, "CKPT", "continue a run from its checkpoint (exactly)", NULL},
        {"quiet", CLI_FLAG, &a.quiet, NULL, "no progress display", NULL},
        {"threads", CLI_INT, &a.threads, "N", "threads (default: OMP_NUM_THREADS or every core); results do not depend on it", NULL, 1, 4096},
        {"allow-large-memory", CLI_FLAG, &a.allow_large_memory, NULL, "start even if the run's memory estimate exceeds the memory available", NULL},
    };
    enum { N_DATA = sizeof data_opts / sizeof data_opts[0], N_TRAIN = sizeof train_opts / sizeof train_opts[0] };
    cli_opt opts[N_DATA + MODEL_FLAGS_N + N_TRAIN];
    memcpy(opts, data_opts, sizeof data_opts);
    model_flags_options(&a.net, opts + N_DATA);
    memcpy(opts + N_DATA + MODEL_FLAGS_N, train_opts, sizeof train_opts);
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    int rc = cli_parse("train",
                       "Trains a denoising diffusion model and writes DIR/ckpt.safetensors (every "
                       "--save-every steps and at the end), DIR/loss.csv and DIR/loss.png. Ctrl-C "
                       "saves a checkpoint and stops; --resume continues exactly.",
                       argc, argv, opts, n_opts);
    if (rc) return rc < 0 ? 0 : rc;
    if (a.threads > 0) ddpm_set_threads(a.threads);
    if (a.n_points < 1) return cli_usage_error("train", "--n-points must be at least 1");
    if (a.steps < 1 || (a.set_epochs && a.epochs < 1))
        return cli_usage_error("train", "--steps and --epochs must be at least 1");
    if (a.set_steps && a.set_epochs) return cli_usage_error("train", "give --steps or --epochs, not both");
    if (a.save_every < 0 || a.log_every < 0 || a.sample_every < 0)
        return cli_usage_error("train", "--save-every, --sample-every and --log-every must be >= 0");
    if (a.channels != 1 && a.channels != 3) return cli_usage_error("train", "--channels must be 1 or 3");
    if ((rc = parse_image_size(&a))) return rc;
    /* an --out that cannot take the run is refused before loading data or building a model */
    if ((rc = cli_check_out_dir("train", "--out", a.out))) return rc;

    const int images = !a.resume && data_is_images(a.data);
    if (a.shard_data && !a.resume && !images)
        return cli_usage_error("train", "--shard-data is for image data (a folder, an .npy file or fashion-mnist), not points");
    if (a.shard_data && a.resume)
        return cli_usage_error("train", "--shard-data is kept in the checkpoint: --resume shards as the run did");
    if (!a.resume) {
        /* The network's own tutorial settings, unless given. */
        if (!a.net.set_model) a.net.model = images ? "unet" : "mlp";
        const model_preset *p = model_preset_find(a.net.model);
        if (!p)
            return cli_usage_error("train", "unknown --model '%s' (expected mlp, unet, context-unet, simple-unet or unet2d)", a.net.model);
        if (!a.set_schedule) a.schedule = p->schedule;
        if (!a.set_T) a.timesteps = p->timesteps;
        if (!a.set_batch) a.batch = p->batch_size;
        if (!a.set_lr) a.lr = p->lr;
        if (!a.set_decay) a.lr_decay = p->lr_decay;
        if (!a.set_warmup) a.warmup = p->warmup;
        if (!a.set_loss) a.loss = p->loss;
        if (a.batch < 1) return cli_usage_error("train", "--batch-size must be at least 1");
    }

    ddpm_model *model = NULL;
    ddpm_schedule sched = {0};
    ddpm_checkpoint ck = {0};
    job_data data = {0};
    ddpm_trainer tr = {0};
    ddpm_train_config tc;
    int usage_printed = 0;
    int resumed = a.resume != NULL;
    if (resumed) {
        if ((rc = ddpm_checkpoint_load(a.resume, &ck))) return cli_fail("train", rc);
        if (!ck.has_train || !ck.adam_m) {
            ddpm_checkpoint_free(&ck);
            return cli_usage_error("train", "%s holds no training state to resume", a.resume);
        }
        tc = ck.train;
        if (a.set_microbatch) tc.microbatch = a.microbatch;
        else if (a.deterministic && tc.microbatch == 0) tc.microbatch = DETERMINISTIC_MICROBATCH;
        if ((rc = job_data_load_shard(ck.data_json ? ck.data_json : "{}", dist_rank(), dist_size(), &data))) goto out;
        model = ck.model;
        sched = ck.schedule;
        if (a.set_steps) tc.total_steps = a.steps;
        if (a.set_epochs) tc.total_steps = (int64_t)a.epochs * (((int64_t)job_data_items(&data) + tc.batch_size - 1) / tc.batch_size);
        if (tc.total_steps <= ck.step) {
            fprintf(stderr, "ddpm train: %s is at step %lld of %lld: nothing to do (raise --steps)\n",
                    a.resume, (long long)ck.step, (long long)tc.total_steps);
            rc = DDPM_OK;
            goto out;
        }
    } else {
        ddpm_train_config_default(&tc);
        if ((rc = ddpm_prediction_parse(a.prediction, &tc.prediction)) ||
            (rc = ddpm_loss_parse(a.loss, &tc.loss)) ||
            (rc = ddpm_optimizer_parse(a.optimizer, &tc.optimizer)) ||
            (rc = ddpm_lr_decay_parse(a.lr_decay, &tc.decay)))
            return cli_usage_error("train", "%s", ddpm_last_error());
        tc.min_snr_gamma = a.min_snr;
        tc.p2_gamma = a.p2_gamma;
        tc.p2_k = a.p2_k;
        tc.offset_noise = a.offset_noise;
        tc.lr = a.lr;
        tc.beta1 = a.beta1;
        tc.beta2 = a.beta2;
        tc.adam_eps = a.adam_eps;
        tc.weight_decay = a.weight_decay;
        tc.warmup_steps = a.warmup;
        tc.min_lr = a.min_lr;
        tc.grad_clip = a.grad_clip;
        tc.ema_decay = a.ema_decay;
        tc.ema_warmup = !a.no_ema_warmup;
        tc.batch_size = a.batch;
        tc.seed = a.seed;
        tc.self_cond = a.net.self_cond;
        tc.microbatch = a.deterministic && !a.set_microbatch ? DETERMINISTIC_MICROBATCH : a.microbatch;
        /* Schedule */
        ddpm_schedule_kind kind;
        if (ddpm_schedule_kind_parse(a.schedule, &kind)) return cli_usage_error("train", "%s", ddpm_last_error());
        double *betas = NULL;
        int T = a.timesteps;
        if (a.betas_file) {
            if ((rc = ddpm_betas_read(a.betas_file, &betas, &T))) return cli_fail("train", rc);
            kind = DDPM_SCHEDULE_CUSTOM;
        } else if (kind == DDPM_SCHEDULE_CUSTOM) {
            return cli_usage_error("train", "--schedule custom needs --betas FILE");
        }
        ddpm_schedule_config sc;
        ddpm_schedule_config_default(&sc, kind, T);
        if (a.set_bs) sc.beta_start = a.beta_start;
        if (a.set_be) sc.beta_end = a.beta_end;
        sc.betas = betas;
        sc.zero_terminal_snr = a.zero_snr;
        rc = ddpm_schedule_init(&sched, &sc);
        free(betas);
        if (rc) return cli_fail("train", rc);
        /* Data */
        char *dj = images ? images_json(&a) : job_points_json(a.data, (size_t)a.n_points, a.data_seed);
        rc = dj ? job_data_load_shard(dj, dist_rank(), dist_size(), &data) : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        free(dj);
        if (rc) goto out;
        tc.total_steps = a.set_epochs ? (int64_t)a.epochs * (((int64_t)job_data_items(&data) + a.batch - 1) / a.batch) : a.steps;
        if (data.cond_dim > 0) tc.cond_drop_prob = a.cond_drop;
        /* Model */
        char *mj = NULL;
        model_shape shape = {.dim = data.dim, .in_channels = data.channels, .height = data.height,
                             .width = data.width, .cond_dim = data.cond_dim, .num_timesteps = sched.n};
        if (images && data.height != data.width && strcmp(a.net.model, "unet") != 0)
            rc = ddpm_fail(DDPM_ERR_INVALID, "--model %s takes square images; the data are %dx%d (height x width; --model unet takes H != W)", a.net.model, data.height, data.width);
        if (!rc) rc = model_flags_config_json(&a.net, &shape, &mj);
        if (!rc) rc = ddpm_model_create(mj, a.seed, &model);
        free(mj);
        if (rc) goto out;
    }
    /* The memory the run needs, estimated before the trainer allocates its state and the first
     * step its activations: a run too large for the machine stops here with the estimate. (The
     * MLP's activations are allocated by reserving the batch, and so counted as in use.) */
    memory_need need;
    if ((rc = ddpm_model_reserve(model, tc.batch_size)) ||
        (rc = memory_need_train(model, &tc, data.n, &need)))
        goto out;
    if ((rc = dist_agree(memory_check(&need, a.allow_large_memory,
                                      "use a smaller --batch-size, or --microbatch M (M items a "
                                      "thread at a time)"))))
        goto out;
    ddpm_train_data td = {.x = data.x, .cond = data.cond, .n = data.n, .hflip = data.hflip,
                          .n_total = data.n_total};
    if ((rc = ddpm_trainer_init(&tr, model, &sched, &tc, &td))) goto out;
    if (resumed && (rc = ddpm_trainer_restore(&tr, &ck))) goto out;
    if ((rc = dist_join_trainer(&tr, job_data_items(&data)))) goto out;
    const int quiet = a.quiet || !dist_lead();
    if (!quiet) {
        train_print_config(model, &sched, &tc, data.json, job_data_items(&data));
        if (data.n_total > 0)
            printf("shards    each of the %d processes holds its part of the %zu items (--shard-data; "
                   "this one %zu)\n", dist_size(), data.n_total, data.n);
        memory_print(&need);
        if (resumed) printf("resuming %s at step %lld\n", a.resume, (long long)tr.step);
        printf("run dir   %s\n", a.out);
        fflush(stdout);
    }
    job_run_opts ro = {.out_dir = a.out, .save_every = a.save_every, .log_every = a.log_every,
                       .quiet = quiet, .sample_every = model->height > 0 ? a.sample_every : 0,
                       .sample_n = a.sample_n};
    if (a.keep_best && a.eval_every <= 0) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "--keep-best needs --eval-every N");
        goto out;
    }
    if (a.eval_every > 0) {
        if (model->height <= 0) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "--eval-every measures images; %s are points", data.json);
            goto out;
        }
        const ddpm_checkpoint ck_like = {.schedule = sched, .train = tc};
        const int T = sched.n - sched.t0;
        sampler_args sa = {.sampler = a.eval_sampler, .variance = "small", .spacing = "leading",
                           .steps = strcmp(a.eval_sampler, "ddpm") == 0 ? 0 : (a.eval_steps < T ? a.eval_steps : T),
                           .clip = 1, .seed = a.eval_seed};
        if ((rc = sampler_args_resolve("train", &sa, &ck_like, &ro.eval.sampler))) {
            usage_printed = 1; /* the message is out; rc is the exit code */
            goto out;
        }
        ro.eval.every = a.eval_every;
        ro.eval.n = a.eval_n;
        ro.eval.keep_best = a.keep_best;
        ro.eval.features = a.eval_features;
        ro.eval.guidance = a.eval_guidance;
        ro.eval.seed = a.eval_seed;
    }
    rc = job_train(&tr, &data, &ro);
    if (!rc && !quiet) {
        printf("final loss %.5f after %lld steps (peak resident memory %.3f GB)\n", tr.last_loss,
               (long long)tr.step, memory_peak() / 1e9);
        cli_wrote(cli_path(a.out, "ckpt.safetensors"), "checkpoint (weights, EMA, optimizer state)");
        cli_wrote(cli_path(a.out, "loss.csv"), "loss per step");
    }
    if (!rc && dist_lead()) rc = job_plot_loss(a.out, a.quiet);
    if (!rc && dist_lead() && a.eval_every > 0) {
        if (!quiet) cli_wrote(cli_path(a.out, "eval.csv"), "FD, KID and class accuracy per evaluation");
        if (!quiet && a.keep_best) cli_wrote(cli_path(a.out, "best.safetensors"), "checkpoint of the lowest FD");
        rc = job_plot_eval(a.out, a.quiet);
    }
out:
    ddpm_trainer_free(&tr);
    job_data_free(&data);
    if (resumed) {
        ddpm_checkpoint_free(&ck); /* owns model and schedule */
    } else {
        ddpm_model_free(model);
        ddpm_schedule_free(&sched);
    }
    if (usage_printed) return rc;
    const int code = cli_fail("train", rc);
    return rc == DDPM_ERR_IO && job_train_save_failed() ? CLI_EXIT_FAIL : code;
}
