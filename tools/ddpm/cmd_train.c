/* cmd_train.c - `ddpm train`: train a diffusion model on points (or, later, images). */
#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every flag of `ddpm train`, with its value after parsing. */
typedef struct {
    const char *data, *model, *time_embedding, *schedule, *betas_file, *prediction, *loss,
        *optimizer, *lr_decay, *out, *resume;
    int n_points, hidden, depth, timesteps, warmup, batch, epochs, save_every, log_every, quiet,
        no_ema_warmup;
    uint64_t data_seed, seed;
    int64_t steps_i;
    double beta_start, beta_end, lr, beta1, beta2, adam_eps, weight_decay, min_lr;
    float min_snr, grad_clip, ema_decay;
    int steps;
    int set_steps, set_epochs, set_bs, set_be, set_T, set_schedule;
} train_args;

int train_print_config(const ddpm_model *m, const ddpm_schedule *s, const ddpm_train_config *c,
                       const char *data_json, size_t n_data) {
    char *sj = ddpm_schedule_config_json(s);
    printf("model     %s  (%zu parameters)\n", m->config_json, m->n_params);
    printf("schedule  %s\n", sj ? sj : "?");
    printf("data      %s  (%zu items)\n", data_json, n_data);
    printf("training  %s loss on %s, %s lr %g (warm-up %d, decay %s), batch %d, %lld steps, "
           "grad clip %g, EMA %g%s, seed %llu\n",
           ddpm_loss_name(c->loss), ddpm_prediction_name(c->prediction),
           ddpm_optimizer_name(c->optimizer), c->lr, c->warmup_steps, ddpm_lr_decay_name(c->decay),
           c->batch_size, (long long)c->total_steps, c->grad_clip, c->ema_decay,
           c->ema_warmup ? " (warm-up)" : "", (unsigned long long)c->seed);
    if (c->min_snr_gamma > 0) printf("          min-SNR-gamma weighting, gamma %g\n", c->min_snr_gamma);
    free(sj);
    return 0;
}

int cmd_train(int argc, char **argv) {
    train_args a = {.data = "s-curve", .model = "mlp", .time_embedding = "learned",
                    .schedule = "sigmoid-2d", .prediction = "eps", .loss = "l2",
                    .optimizer = "adam", .lr_decay = "constant", .out = "runs/train",
                    .n_points = 10000, .hidden = 128, .depth = 3, .timesteps = 100, .batch = 128,
                    .save_every = 1000, .log_every = 1000, .steps = 10000, .lr = 1e-3,
                    .beta1 = 0.9, .beta2 = 0.999, .adam_eps = 1e-8, .grad_clip = 1.0f,
                    .ema_decay = 0.999f};
    const cli_opt opts[] = {
        {"data", CLI_STRING, &a.data, "NAME|FILE.csv", "built-in 2-D data set (s-curve, swiss-roll, moons, circles, 8-gaussians, checkerboard) or a CSV of points (default s-curve)", NULL},
        {"n-points", CLI_INT, &a.n_points, "N", "points drawn from a built-in data set (default 10000)", NULL},
        {"data-seed", CLI_U64, &a.data_seed, "S", "seed of the built-in data set (default 0)", NULL},
        {"model", CLI_STRING, &a.model, "NAME", "network: mlp (default)", NULL},
        {"hidden", CLI_INT, &a.hidden, "H", "MLP width (default 128)", NULL},
        {"depth", CLI_INT, &a.depth, "L", "MLP hidden layers (default 3)", NULL},
        {"time-embedding", CLI_STRING, &a.time_embedding, "KIND", "MLP time embedding: learned (tutorial) or sinusoidal", NULL},
        {"schedule", CLI_STRING, &a.schedule, "NAME", "beta schedule (default sigmoid-2d, the 2-D tutorial's)", &a.set_schedule},
        {"timesteps", CLI_INT, &a.timesteps, "T", "diffusion steps (default 100)", &a.set_T},
        {"beta-start", CLI_DOUBLE, &a.beta_start, "A", "first beta", &a.set_bs},
        {"beta-end", CLI_DOUBLE, &a.beta_end, "B", "last beta", &a.set_be},
        {"betas", CLI_STRING, &a.betas_file, "FILE", "custom schedule from a file of betas", NULL},
        {"prediction", CLI_STRING, &a.prediction, "KIND", "training target: eps (default), x0 or v", NULL},
        {"loss", CLI_STRING, &a.loss, "KIND", "l2 (default) or l1", NULL},
        {"min-snr-gamma", CLI_FLOAT, &a.min_snr, "G", "min-SNR-gamma loss weighting (5 is usual; default off)", NULL},
        {"optimizer", CLI_STRING, &a.optimizer, "NAME", "adam (default) or adamw", NULL},
        {"lr", CLI_DOUBLE, &a.lr, "LR", "learning rate (default 1e-3)", NULL},
        {"beta1", CLI_DOUBLE, &a.beta1, "B1", "Adam beta1 (default 0.9)", NULL},
        {"beta2", CLI_DOUBLE, &a.beta2, "B2", "Adam beta2 (default 0.999)", NULL},
        {"adam-eps", CLI_DOUBLE, &a.adam_eps, "E", "Adam epsilon (default 1e-8)", NULL},
        {"weight-decay", CLI_DOUBLE, &a.weight_decay, "W", "weight decay (L2 for adam, decoupled for adamw)", NULL},
        {"warmup", CLI_INT, &a.warmup, "N", "linear learning-rate warm-up steps (default 0)", NULL},
        {"lr-decay", CLI_STRING, &a.lr_decay, "KIND", "constant (default), cosine or linear decay to --min-lr", NULL},
        {"min-lr", CLI_DOUBLE, &a.min_lr, "LR", "final learning rate of the decay (default 0)", NULL},
        {"grad-clip", CLI_FLOAT, &a.grad_clip, "N", "max gradient norm, 0 = off (default 1)", NULL},
        {"ema-decay", CLI_FLOAT, &a.ema_decay, "D", "EMA decay of the weights, 0 = off (default 0.999)", NULL},
        {"no-ema-warmup", CLI_FLAG, &a.no_ema_warmup, NULL, "use the EMA decay from the first step", NULL},
        {"batch-size", CLI_INT, &a.batch, "B", "batch size (default 128)", NULL},
        {"steps", CLI_INT, &a.steps, "N", "optimizer steps (default 10000)", &a.set_steps},
        {"epochs", CLI_INT, &a.epochs, "E", "train for E passes over the data instead of --steps", &a.set_epochs},
        {"seed", CLI_U64, &a.seed, "S", "seed of initialisation, shuffling, t and noise (default 0)", NULL},
        {"out", CLI_STRING, &a.out, "DIR", "run directory (default runs/train)", NULL},
        {"save-every", CLI_INT, &a.save_every, "N", "checkpoint every N steps (default 1000)", NULL},
        {"log-every", CLI_INT, &a.log_every, "N", "progress line every N steps when not on a terminal", NULL},
        {"resume", CLI_STRING, &a.resume, "CKPT", "continue a run from its checkpoint (exactly)", NULL},
        {"quiet", CLI_FLAG, &a.quiet, NULL, "no progress display", NULL},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    int rc = cli_parse("train",
                       "Trains a denoising diffusion model and writes DIR/ckpt.safetensors (every "
                       "--save-every steps and at the end), DIR/loss.csv and DIR/loss.png. Ctrl-C "
                       "saves a checkpoint and stops; --resume continues exactly.",
                       argc, argv, opts, n_opts);
    if (rc) return rc < 0 ? 0 : rc;
    if (a.n_points < 1) return cli_usage_error("train", "--n-points must be at least 1");
    if (a.batch < 1) return cli_usage_error("train", "--batch-size must be at least 1");
    if (a.steps < 1 || (a.set_epochs && a.epochs < 1))
        return cli_usage_error("train", "--steps and --epochs must be at least 1");
    if (a.set_steps && a.set_epochs) return cli_usage_error("train", "give --steps or --epochs, not both");
    if (a.save_every < 0 || a.log_every < 0) return cli_usage_error("train", "--save-every and --log-every must be >= 0");

    ddpm_model *model = NULL;
    ddpm_schedule sched = {0};
    ddpm_checkpoint ck = {0};
    job_data data = {0};
    ddpm_trainer tr = {0};
    ddpm_train_config tc;
    int resumed = a.resume != NULL;
    if (resumed) {
        if ((rc = ddpm_checkpoint_load(a.resume, &ck))) return cli_fail("train", rc);
        if (!ck.has_train || !ck.adam_m) {
            ddpm_checkpoint_free(&ck);
            return cli_usage_error("train", "%s holds no training state to resume", a.resume);
        }
        tc = ck.train;
        if ((rc = job_data_load(ck.data_json ? ck.data_json : "{}", &data))) goto out;
        model = ck.model;
        sched = ck.schedule;
        if (a.set_steps) tc.total_steps = a.steps;
        if (a.set_epochs) tc.total_steps = (int64_t)a.epochs * (((int64_t)data.n + tc.batch_size - 1) / tc.batch_size);
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
        rc = ddpm_schedule_init(&sched, &sc);
        free(betas);
        if (rc) return cli_fail("train", rc);
        /* Data */
        char *dj = job_points_json(a.data, (size_t)a.n_points, a.data_seed);
        rc = dj ? job_data_load(dj, &data) : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        free(dj);
        if (rc) goto out;
        tc.total_steps = a.set_epochs ? (int64_t)a.epochs * (((int64_t)data.n + a.batch - 1) / a.batch) : a.steps;
        /* Model */
        if (strcmp(a.model, "mlp") != 0) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "--model %s does not take points (use mlp)", a.model);
            goto out;
        }
        ddpm_mlp_config mc = {.dim = data.dim, .hidden = a.hidden, .depth = a.depth,
                              .num_timesteps = sched.n,
                              .sinusoidal = strcmp(a.time_embedding, "sinusoidal") == 0};
        if (!mc.sinusoidal && strcmp(a.time_embedding, "learned") != 0) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "--time-embedding must be learned or sinusoidal (got '%s')", a.time_embedding);
            goto out;
        }
        char *mj = ddpm_mlp_config_json(&mc);
        rc = mj ? ddpm_model_create(mj, a.seed, &model) : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        free(mj);
        if (rc) goto out;
    }
    ddpm_train_data td = {.x = data.x, .cond = data.cond, .n = data.n, .hflip = data.hflip};
    if ((rc = ddpm_trainer_init(&tr, model, &sched, &tc, &td))) goto out;
    if (resumed && (rc = ddpm_trainer_restore(&tr, &ck))) goto out;
    if (!a.quiet) {
        train_print_config(model, &sched, &tc, data.json, data.n);
        if (resumed) printf("resuming %s at step %lld\n", a.resume, (long long)tr.step);
        printf("run dir   %s\n", a.out);
        fflush(stdout);
    }
    job_run_opts ro = {.out_dir = a.out, .save_every = a.save_every, .log_every = a.log_every, .quiet = a.quiet};
    rc = job_train(&tr, &data, &ro);
    if (!rc && !a.quiet) {
        printf("final loss %.5f after %lld steps\n", tr.last_loss, (long long)tr.step);
        job_wrote(job_path(a.out, "ckpt.safetensors"), "checkpoint (weights, EMA, optimizer state)");
        job_wrote(job_path(a.out, "loss.csv"), "loss per step");
    }
    if (!rc) rc = job_plot_loss(a.out, a.quiet);
out:
    ddpm_trainer_free(&tr);
    job_data_free(&data);
    if (resumed) {
        ddpm_checkpoint_free(&ck); /* owns model and schedule */
    } else {
        ddpm_model_free(model);
        ddpm_schedule_free(&sched);
    }
    return cli_fail("train", rc);
}
