/* data_source.c - training data from its JSON description (the one stored in checkpoints):
 * built-in or CSV points, Fashion-MNIST, image folders and .npy files. */
#include "data_source.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *job_points_json(const char *data, size_t n, uint64_t seed) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "points");
    const char *dot = strrchr(data, '.');
    if (dot && (strcmp(dot, ".csv") == 0 || strcmp(dot, ".txt") == 0)) {
        cJSON_AddStringToObject(o, "path", data);
    } else {
        char sd[32];
        snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
        cJSON_AddStringToObject(o, "name", data);
        cJSON_AddNumberToObject(o, "n", (double)n);
        cJSON_AddStringToObject(o, "seed", sd);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

void job_data_free(job_data *d) {
    free(d->x);
    free(d->cond);
    free(d->json);
    for (int i = 0; d->class_names && i < d->n_class_names; i++) free(d->class_names[i]);
    free(d->class_names);
    memset(d, 0, sizeof *d);
}

/* Images: {"type":"images","source":"fashion-mnist"|"folder"|"npy", ...}; with "shard": true
 * and several processes, this process's part only (Fashion-MNIST is read whole, then cut). */
static int load_images(const cJSON *o, ddpm_shard sh, job_data *d) {
    const char *src = jstr(o, "source");
    const cJSON *v;
    ddpm_image_dataset ds;
    int rc;
    if (!src) return ddpm_fail(DDPM_ERR_INVALID, "image data description names no source");
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "shard"))) sh = (ddpm_shard){0, 1};
    if (strcmp(src, "fashion-mnist") == 0) {
        v = cJSON_GetObjectItemCaseSensitive(o, "max_items");
        rc = ddpm_dataset_fashion_mnist(jstr(o, "dir"), 1, cJSON_IsNumber(v) ? (int)v->valuedouble : 0, &ds);
        if (!rc && sh.count > 1 && (rc = ddpm_dataset_keep_shard(&ds, sh))) ddpm_dataset_free(&ds);
    } else if (strcmp(src, "folder") == 0) {
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(o, "image_size");
        const cJSON *width = cJSON_GetObjectItemCaseSensitive(o, "image_width");
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "channels");
        const int h = cJSON_IsNumber(size) ? (int)size->valuedouble : 32;
        rc = ddpm_dataset_folder_shard(jstr(o, "path") ? jstr(o, "path") : "", h,
                                       cJSON_IsNumber(width) ? (int)width->valuedouble : h,
                                       cJSON_IsNumber(ch) ? (int)ch->valuedouble : 3,
                                       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "labels_from_dirs")),
                                       sh, &ds);
    } else if (strcmp(src, "npy") == 0) {
        rc = ddpm_dataset_npy_shard(jstr(o, "path") ? jstr(o, "path") : "", jstr(o, "labels"), sh, &ds);
    } else {
        return ddpm_fail(DDPM_ERR_INVALID, "unknown image source '%s'", src);
    }
    if (rc) return rc;
    d->n_total = sh.count > 1 ? (size_t)ds.n_total : 0;
    d->x = ds.x;
    d->cond = ds.cond;
    d->n = (size_t)ds.n;
    d->channels = ds.c;
    d->height = ds.h;
    d->width = ds.w;
    d->dim = ds.c * ds.h * ds.w;
    d->cond_dim = ds.cond ? ds.cond_dim : 0;
    d->n_classes = ds.n_classes;
    d->class_names = ds.class_names;
    d->n_class_names = ds.n_classes;
    ds.x = NULL; /* moved */
    ds.cond = NULL;
    ds.class_names = NULL;
    ds.n_classes = 0;
    ddpm_dataset_free(&ds);
    v = cJSON_GetObjectItemCaseSensitive(o, "hflip");
    d->hflip = cJSON_IsBool(v) ? cJSON_IsTrue(v) : strcmp(src, "folder") == 0;
    return DDPM_OK;
}

size_t job_data_items(const job_data *d) { return d->n_total > 0 ? d->n_total : d->n; }

int job_data_load(const char *json, job_data *d) { return job_data_load_shard(json, 0, 1, d); }

int job_data_load_shard(const char *json, int rank, int size, job_data *d) {
    memset(d, 0, sizeof *d);
    cJSON *o = cJSON_Parse(json);
    if (!o) return ddpm_fail(DDPM_ERR_FORMAT, "data description is not JSON: %s", json);
    const char *type = jstr(o, "type"), *name = jstr(o, "name"), *path = jstr(o, "path");
    int rc = DDPM_OK;
    ddpm_points p = {0};
    if (type && strcmp(type, "images") == 0) {
        rc = load_images(o, (ddpm_shard){rank, size}, d);
    } else if (!type || strcmp(type, "points") != 0) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "unknown data type in %s", json);
    } else if (path) {
        rc = ddpm_points_read_csv(path, &p);
    } else if (name) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "n");
        const char *seed = jstr(o, "seed");
        rc = ddpm_points_generate(name, cJSON_IsNumber(n) ? (size_t)n->valuedouble : 10000,
                                  seed ? strtoull(seed, NULL, 10) : 0, &p);
    } else {
        rc = ddpm_fail(DDPM_ERR_INVALID, "data description names no data set: %s", json);
    }
    cJSON_Delete(o);
    if (rc) {
        job_data_free(d);
        return rc;
    }
    if (p.x) {
        d->x = p.x;
        d->n = p.n;
        d->dim = p.dim;
    }
    d->json = strdup(json);
    if (!d->json) {
        job_data_free(d);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    return DDPM_OK;
}

int job_data_fresh_points(const char *json, size_t n, uint64_t seed, ddpm_points *out) {
    cJSON *o = cJSON_Parse(json);
    const char *name = o ? jstr(o, "name") : NULL;
    int rc = name ? ddpm_points_generate(name, n, seed, out)
                  : ddpm_fail(DDPM_ERR_INVALID, "the training data is a file, not a built-in "
                                                "generator: pass --reference FILE.csv");
    cJSON_Delete(o);
    return rc;
}

