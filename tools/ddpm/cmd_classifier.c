/* cmd_classifier.c - `ddpm classifier train|test`: the image classifier whose features `ddpm eval`
 * measures samples with (Frechet distance, KID, precision/recall) and whose predictions give the
 * class accuracy of conditional samples. train: fits it on a labelled image source and reports
 * its accuracy on the held-out split; test: that accuracy for a saved classifier. */
#include "image_sets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "32,64,64" into c->channels. */
static int parse_channels(const char *s, ddpm_classifier_config *c) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 4096 || n >= DDPM_CLASSIFIER_MAX_BLOCKS) return -1;
        c->channels[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    c->n_blocks = n;
    return n > 0 ? 0 : -1;
}

/* Accuracy of m on s (labels -1 are skipped), overall and per class (printed). */
static int report_accuracy(ddpm_model *m, const image_set *s, double *acc_out) {
    int *pred = malloc(sizeof(int) * (size_t)s->n);
    int *hit = calloc((size_t)m->n_classes, sizeof(int)), *tot = calloc((size_t)m->n_classes, sizeof(int));
    if (!pred || !hit || !tot) {
        free(pred), free(hit), free(tot);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    int rc = ddpm_classifier_predict(m, s->x, (size_t)s->n, pred);
    int correct = 0, total = 0;
    for (int i = 0; !rc && i < s->n; i++) {
        const int y = s->labels[i];
        if (y < 0 || y >= m->n_classes) continue;
        tot[y]++, total++;
        if (pred[i] == y) hit[y]++, correct++;
    }
    if (!rc && total == 0) rc = ddpm_fail(DDPM_ERR_INVALID, "no labelled test images");
    if (!rc) {
        *acc_out = (double)correct / total;
        printf("test accuracy %.4f (%d of %d)\nper class:", *acc_out, correct, total);
        for (int k = 0; k < m->n_classes; k++)
            printf(" %d:%.3f", k, tot[k] ? (double)hit[k] / tot[k] : 0.0);
        printf("\n");
    }
    free(pred), free(hit), free(tot);
    return rc;
}

/* The shape checks between a classifier and an image set. */
static int check_shape(const ddpm_model *m, const image_set *s, const char *what) {
    if (s->c != m->channels || s->h != m->height || s->w != m->width)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: images are %dx%dx%d, the classifier takes %dx%dx%d",
                         what, s->c, s->h, s->w, m->channels, m->height, m->width);
    return DDPM_OK;
}

static int classifier_train(int argc, char **argv) {
    const char *data = NULL, *labels = NULL, *out = NULL, *conv = "32,64,64";
    int epochs = 3, batch = 64, features = 128, image_size = 28, channels = 1, test_every = 10,
        max_items = 0, log_every = 100;
    double lr = 2e-3;
    uint64_t seed = 0;
    const cli_opt opts[] = {
        {"data", CLI_STRING, &data, "SOURCE", "labelled images: fashion-mnist, a folder with one sub-folder per class, or FILE.npy with --labels", NULL},
        {"labels", CLI_STRING, &labels, "FILE.npy", "class labels of an .npy source", NULL},
        {"image-size", CLI_INT, &image_size, "S", "folder images are read at S x S (default 28)", NULL, 2, 4096},
        {"image-channels", CLI_INT, &channels, "C", "folder images: 1 (gray, default) or 3 (RGB)", NULL, 1, 3},
        {"test-every", CLI_INT, &test_every, "K", "folder / .npy: every K-th image is held out for the test (default 10)", NULL, 2, 1000000},
        {"max-items", CLI_INT, &max_items, "N", "train on the first N training images only (default all)", NULL, 0, 100000000},
        {"out", CLI_STRING, &out, "FILE.safetensors", "where to write the classifier (required)", NULL},
        {"epochs", CLI_INT, &epochs, "E", "passes over the training images (default 3)", NULL, 1, 100000},
        {"batch", CLI_INT, &batch, "B", "batch size (default 64)", NULL, 2, 65536},
        {"lr", CLI_DOUBLE, &lr, "LR", "Adam learning rate, cosine-decayed to 0 (default 2e-3)", NULL, 1e-8, 10},
        {"conv-channels", CLI_STRING, &conv, "LIST", "channels of the conv blocks (default 32,64,64)", NULL},
        {"features", CLI_INT, &features, "F", "width of the feature layer (default 128)", NULL, 2, 65536},
        {"seed", CLI_U64, &seed, "S", "initialisation and shuffle seed (default 0)", NULL},
        {"log-every", CLI_INT, &log_every, "N", "print progress every N steps (default 100)", NULL, 1, 100000000},
    };
    int rc = cli_parse("classifier train",
                       "Trains the image classifier whose features `ddpm eval` measures samples "
                       "with, and reports its accuracy on the held-out split.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (!data) return cli_usage_error("classifier train", "--data SOURCE is required");
    if (!out) return cli_usage_error("classifier train", "--out FILE.safetensors is required");
    ddpm_classifier_config cc;
    ddpm_classifier_config_default(&cc);
    if (parse_channels(conv, &cc))
        return cli_usage_error("classifier train", "--conv-channels '%s' is not a list of 1..%d channel counts in 1..4096",
                               conv, DDPM_CLASSIFIER_MAX_BLOCKS);
    cc.features = features;
    image_set tr = {0}, te = {0};
    ddpm_model *m = NULL;
    ddpm_classifier_trainer ct = {0};
    char *json = NULL;
    if ((rc = image_set_load(data, SPLIT_TRAIN, test_every, image_size, channels, labels, &tr))) goto done;
    if (!tr.labels || tr.n_classes < 2) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s: the images have no class labels (a folder needs one sub-folder per class; an .npy needs --labels)", data);
        goto done;
    }
    if ((rc = image_set_load(data, SPLIT_TEST, test_every, image_size, channels, labels, &te))) goto done;
    if (tr.h != tr.w) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s: the classifier takes square images; these are %dx%d", data, tr.h, tr.w);
        goto done;
    }
    /* images without a class (label -1, e.g. directly in the folder) are left out */
    int n = 0;
    const size_t d = (size_t)tr.c * tr.h * tr.w;
    for (int i = 0; i < tr.n && (!max_items || n < max_items); i++)
        if (tr.labels[i] >= 0) {
            if (n != i) memmove(tr.x + (size_t)n * d, tr.x + (size_t)i * d, sizeof(float) * d);
            tr.labels[n++] = tr.labels[i];
        }
    cc.in_channels = tr.c;
    cc.height = tr.h;
    cc.classes = tr.n_classes;
    if (!(json = ddpm_classifier_config_json(&cc))) {
        rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = ddpm_model_create(json, seed, &m))) goto done;
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.batch_size = batch;
    tc.lr = lr;
    tc.seed = seed;
    tc.decay = DDPM_LR_COSINE;
    tc.min_lr = 0.0;
    tc.warmup_steps = 100;
    if ((rc = ddpm_classifier_trainer_init(&ct, m, &tc, tr.x, tr.labels, (size_t)n))) goto done;
    const int64_t spe = ddpm_classifier_steps_per_epoch(&ct), total = spe * epochs;
    ct.cfg.total_steps = total;
    printf("classifier %s  (%zu weights, %.0f KB)\n", json, ddpm_model_weight_count(m),
           4.0 * (double)ddpm_model_weight_count(m) / 1024.0);
    printf("training on %d images of %s, %d classes; test: %d images (%s)\n", n, tr.split_desc,
           tr.n_classes, te.n, te.split_desc);
    printf("%d epochs x %lld steps, batch %d, Adam lr %g (100 warm-up steps, cosine to 0), seed %llu, %d threads\n",
           epochs, (long long)spe, batch, lr, (unsigned long long)seed, ddpm_threads());
    const double t0 = now_s();
    double loss_sum = 0, acc_sum = 0;
    int seen = 0;
    for (int64_t s = 0; s < total; s++) {
        if ((rc = ddpm_classifier_trainer_step(&ct))) goto done;
        loss_sum += ct.last_loss, acc_sum += ct.last_accuracy, seen++;
        if ((s + 1) % log_every == 0 || s + 1 == total) {
            printf("step %6lld/%lld  epoch %d  loss %.4f  batch accuracy %.3f  lr %.2e  %.0f s\n",
                   (long long)s + 1, (long long)total, (int)(s / spe) + 1, loss_sum / seen,
                   acc_sum / seen, ct.last_lr, now_s() - t0);
            fflush(stdout);
            loss_sum = acc_sum = 0, seen = 0;
        }
    }
    const double train_s = now_s() - t0;
    printf("trained in %.1f s\n", train_s);
    double acc = 0;
    if ((rc = check_shape(m, &te, data)) || (rc = report_accuracy(m, &te, &acc))) goto done;
    char acc_s[32], n_s[32], ep_s[32], seed_s[32], time_s[32], nt_s[32];
    snprintf(acc_s, sizeof acc_s, "%.4f", acc);
    snprintf(n_s, sizeof n_s, "%d", n);
    snprintf(nt_s, sizeof nt_s, "%d", te.n);
    snprintf(ep_s, sizeof ep_s, "%d", epochs);
    snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)seed);
    snprintf(time_s, sizeof time_s, "%.1f", train_s);
    const char *keys[] = {"data", "test_split", "test_accuracy", "test_items", "train_items", "epochs", "seed", "train_seconds"};
    const char *vals[] = {data, te.split_desc, acc_s, nt_s, n_s, ep_s, seed_s, time_s};
    if ((rc = ddpm_classifier_save(out, m, keys, vals, sizeof keys / sizeof keys[0]))) goto done;
    cli_wrote(out, "the classifier");
done:
    ddpm_classifier_trainer_free(&ct);
    ddpm_model_free(m);
    free(json);
    image_set_free(&tr);
    image_set_free(&te);
    return cli_fail("classifier train", rc);
}

static int classifier_test(int argc, char **argv) {
    const char *weights = NULL, *data = "fashion-mnist", *labels = NULL;
    int test_every = 10, channels = 0;
    const cli_opt opts[] = {
        {"weights", CLI_STRING, &weights, "FILE.safetensors", "the classifier (required)", NULL},
        {"data", CLI_STRING, &data, "SOURCE", "labelled images (default fashion-mnist: its test files)", NULL},
        {"labels", CLI_STRING, &labels, "FILE.npy", "class labels of an .npy source", NULL},
        {"test-every", CLI_INT, &test_every, "K", "folder / .npy: the held-out split as in train (default 10)", NULL, 2, 1000000},
        {"image-channels", CLI_INT, &channels, "C", "folder images: 1 or 3 (default: the classifier's)", NULL, 1, 3},
    };
    int rc = cli_parse("classifier test", "Reports a classifier's accuracy on a held-out split.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (!weights) return cli_usage_error("classifier test", "--weights FILE.safetensors is required");
    ddpm_model *m = NULL;
    ddpm_safetensors st = {0};
    image_set te = {0};
    double acc = 0;
    if (!(rc = ddpm_classifier_load(weights, &m, &st))) {
        const char *stored = ddpm_safetensors_meta(&st, "test_accuracy");
        printf("%s: %s, stored test accuracy %s\n", weights, m->config_json, stored ? stored : "(none)");
        if (!(rc = image_set_load(data, SPLIT_TEST, test_every, m->height, channels ? channels : m->channels, labels, &te))) {
            printf("test: %d images (%s)\n", te.n, te.split_desc);
            if (!te.labels) rc = ddpm_fail(DDPM_ERR_INVALID, "%s: the images have no class labels", data);
            if (!rc) rc = check_shape(m, &te, data);
            if (!rc) rc = report_accuracy(m, &te, &acc);
        }
    }
    image_set_free(&te);
    ddpm_safetensors_free(&st);
    ddpm_model_free(m);
    return cli_fail("classifier test", rc);
}

int cmd_classifier(int argc, char **argv) {
    static const char usage[] =
        "usage: ddpm classifier train --data SOURCE --out CLS.safetensors [options]\n"
        "       ddpm classifier test --weights CLS.safetensors [--data SOURCE]\n"
        "(ddpm classifier train --help for the options)\n";
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "train") == 0) return classifier_train(argc - 1, argv + 1);
    if (strcmp(argv[1], "test") == 0) return classifier_test(argc - 1, argv + 1);
    return cli_usage_error("classifier", "unknown subcommand '%s' (train or test)", argv[1]);
}
