/* dist.h - the processes of a data-parallel job (mpirun, srun, a hostfile), or just this one.
 *
 * Built with MPI (CMake finds it; -DDDPM_MPI=OFF leaves it out), a ddpm started by mpirun joins
 * MPI_COMM_WORLD; started alone it is rank 0 of 1 and never touches MPI. Every rank runs the
 * same command; rank 0 alone writes files and prints progress. */
#ifndef DDPM_CLI_DIST_H
#define DDPM_CLI_DIST_H

#include "ddpm.h"

/* Joins the job if mpirun (or srun) started this process; checks that every rank runs the same
 * binary with the same arguments. Returns a ddpm_status (the message says what differs). */
int dist_init(int argc, char **argv);
/* Leaves the job: a status every rank agreed on ends it normally, any other failure ends every
 * rank at once (MPI_Abort), so no rank waits forever for one that stopped. */
void dist_finish(int rc);
int dist_rank(void);
int dist_size(void);
int dist_lead(void); /* rank 0 */
/* The worst (largest) of every rank's rc, on every rank: a failure of the rank that writes
 * becomes everyone's, at the same step. */
int dist_agree(int rc);
/* The largest of every rank's v (collective: every rank calls it at the same point). */
int dist_max(int v);
/* Marks the command's result as agreed by every rank (see dist_finish). */
void dist_set_agreed(void);
/* Makes tr a rank of the job (no-op for one process) after checking that every rank has the same
 * model, configuration, data and weights. */
int dist_join_trainer(ddpm_trainer *tr, size_t n_items);
/* Every rank holds the same weights (a hash compared over ranks); the error names the step. */
int dist_check_weights(const ddpm_trainer *tr);
/* Splits n items over the ranks: this rank's [*lo, *hi). */
void dist_share(size_t n, size_t *lo, size_t *hi);
/* Gathers every rank's rows [lo, hi) of x (n rows of `row` floats) onto rank 0 (in place). */
int dist_gather_rows(float *x, size_t n, size_t row);

#endif
