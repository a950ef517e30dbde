/* data_source.h - training data described as JSON (stored in checkpoints, so a run
 * resumes on the same data): built-in or CSV points, Fashion-MNIST, image folders, .npy files. */
#ifndef DDPM_DATA_SOURCE_H
#define DDPM_DATA_SOURCE_H

#include "cli.h"

/* Training data loaded from a description such as {"type":"points","name":"s-curve","n":10000,
 * "seed":0} or {"type":"points","path":"my.csv"}. */
typedef struct {
    float *x;     /* [n, d] */
    float *cond;  /* [n, cond_dim] or NULL */
    size_t n;
    int dim;      /* points: D */
    int channels, height, width; /* images */
    int cond_dim;
    int n_classes;      /* class labels (one-hot cond) or 0 */
    char **class_names; /* n_class_names names, or NULL */
    int n_class_names;
    int hflip;
    size_t n_total; /* a shard ({"shard":true} under mpirun): the items over all ranks; else 0 */
    char *json;   /* the description (malloc'd) */
} job_data;

/* Builds the description from --data and friends: a built-in name or a CSV path. */
char *job_points_json(const char *data, size_t n, uint64_t seed);
int job_data_load(const char *json, job_data *d);
/* The same for process `rank` of `size`: a description with "shard": true then loads only
 * this process's part of the images (ddpm_shard); with one process, all of them. */
int job_data_load_shard(const char *json, int rank, int size, job_data *d);
/* Items of the whole data set (n_total for a shard). */
size_t job_data_items(const job_data *d);
/* A fresh draw of the same built-in data set with another seed (for evaluation); fails for files. */
int job_data_fresh_points(const char *json, size_t n, uint64_t seed, ddpm_points *out);
void job_data_free(job_data *d);

#endif
