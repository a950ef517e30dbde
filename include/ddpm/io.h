/* ddpm/io.h - file formats and data: safetensors, 2-D point sets and CSV, .npy arrays, images (PNG, grids, GIFs, decoding) and image datasets.
 * Part of the public API; include "ddpm.h" for all of it. */
#ifndef DDPM_IO_H
#define DDPM_IO_H

#include "ddpm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* safetensors files (checkpoints, weights, fixtures)                                           */
/* ------------------------------------------------------------------------------------------ */

typedef enum {
    DDPM_DT_F32 = 0, DDPM_DT_F64, DDPM_DT_F16, DDPM_DT_BF16, DDPM_DT_I64, DDPM_DT_I32,
    DDPM_DT_U8, DDPM_DT_I8, DDPM_DT_BOOL, DDPM_DT_COUNT
} ddpm_dtype;
const char *ddpm_dtype_name(ddpm_dtype t); /* "F32", ... as safetensors spells them */
size_t ddpm_dtype_size(ddpm_dtype t);

#define DDPM_MAX_DIMS 8
typedef struct {
    char *name;
    ddpm_dtype dtype;
    int ndim;
    int64_t shape[DDPM_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const void *data; /* points into the file's data section (reader) or the caller's (writer) */
} ddpm_tensor;

typedef struct {
    ddpm_tensor *tensors;
    size_t n_tensors;
    char **meta_keys, **meta_values; /* the __metadata__ map (string to string) */
    size_t n_meta;
    unsigned char *file_;            /* the whole file */
    size_t file_size_;
} ddpm_safetensors;

/* Reads and validates a safetensors file: header length, JSON, every dtype, shape and offset
 * within the file, the data section fully covered, and the "ddpm.crc32" checksum of the data
 * when the metadata has one. Errors name the file and the problem. */
int ddpm_safetensors_read(const char *path, ddpm_safetensors *st);
void ddpm_safetensors_free(ddpm_safetensors *st);
const ddpm_tensor *ddpm_safetensors_find(const ddpm_safetensors *st, const char *name);
/* The metadata value for key, or NULL. */
const char *ddpm_safetensors_meta(const ddpm_safetensors *st, const char *key);
/* Converts a float tensor (F32, F64, F16, BF16) to float32 into dst[numel]. */
int ddpm_tensor_to_f32(const ddpm_tensor *t, float *dst);

/* Writes tensors and metadata (n_meta key/value pairs) atomically: a temporary file in the same
 * directory, fsync, rename, fsync of the directory. Adds the "ddpm.crc32" checksum. */
int ddpm_safetensors_write(const char *path, const ddpm_tensor *tensors, size_t n_tensors,
                           const char *const *meta_keys, const char *const *meta_values,
                           size_t n_meta);

/* ---- PyTorch files (torch.save) and any weights file ---------------------------------------- */

/* Reads a state dict saved by torch.save, without Python: the ZIP format (torch >= 1.6) or the
 * legacy one (_use_new_zipfile_serialization=False), through a restricted unpickler that accepts
 * only what a state dict holds (dicts, OrderedDict, lists, tuples, numbers, strings, tensors,
 * parameters and float32/64/16, bfloat16, int64/32/8, uint8 and bool storages) and refuses
 * anything else, e.g. a GLOBAL of os.system, with a message naming the file and the global;
 * nothing in the file is ever run. key selects the state dict:
 *   NULL   the saved dict itself; it must hold its tensors directly (other values, such as
 *          "step": 5, are skipped), else the error lists the keys that hold tensors;
 *   "K"    the dict under key K ("a.b": key "b" of the dict under "a", if no key is "a.b");
 *   "*"    every tensor anywhere, named by its dotted path ("model.conv.weight", "ema.0").
 * Every view is checked against its storage; a strided one (a transpose, a slice with steps) is
 * copied out contiguously, a contiguous one points into the file's bytes, so st is what
 * ddpm_safetensors_read gives (no metadata; data not aligned beyond its dtype's size in
 * general); free it with ddpm_safetensors_free. Errors: DDPM_ERR_IO (unreadable), DDPM_ERR_INVALID (no such
 * key, or nested tensors and no key), DDPM_ERR_FORMAT (anything wrong in the file). */
int ddpm_torch_read(const char *path, const char *key, ddpm_safetensors *st);
/* Reads any weights file, by its content (not its name): safetensors (key K then keeps the
 * tensors named K.* without the prefix; NULL or "*" keeps all), or a PyTorch .pth/.pt/.bin
 * as ddpm_torch_read. */
int ddpm_weights_read(const char *path, const char *key, ddpm_safetensors *st);


/* ---- 2-D point sets ---- */

/* A set of n points of dim floats each, row-major: x[i * dim + j]. // [n, dim] */
typedef struct {
    float *x;
    size_t n;
    int dim;
} ddpm_points;

/* Allocates n zeroed points of dim floats (n may be 0; dim >= 1). Free with ddpm_points_free. */
int ddpm_points_init(ddpm_points *p, size_t n, int dim);
/* Frees p->x and zeroes *p (safe on a zeroed struct and twice in a row). */
void ddpm_points_free(ddpm_points *p);

/* The built-in 2-D data sets, as one string for messages and --help:
 * "s-curve, swiss-roll, moons, circles, 8-gaussians, checkerboard". */
const char *ddpm_points_dataset_names(void);
/* Draws n points of the named 2-D data set. Point i uses only the draws (seed, DDPM_STREAM_DATA,
 * item i, steps 0 and 1), so the same seed gives the same first k points whatever n is.
 *   s-curve      the tutorial's data: sklearn make_s_curve(n, noise=0.1), columns x and z, / 10.
 *                About [-0.1, 0.1] x [-0.2, 0.2] (noise sd 0.01 after scaling).
 *   swiss-roll   sklearn make_swiss_roll(noise=0.5) columns x and z (t cos t, t sin t,
 *                t = 1.5 pi (1 + 2U)), / 15: about [-1, 1]^2.
 *   moons        sklearn make_moons(noise=0.05), a uniformly random position along each moon
 *                (even points on the upper moon, odd on the lower one), centred by (-0.5, -0.25)
 *                and scaled by 2/3: about [-1, 1] x [-0.5, 0.5], mean ~ 0.
 *   circles      sklearn make_circles(factor=0.5, noise=0.05): even points on the unit circle,
 *                odd on radius 0.5, uniformly random angle; not rescaled (about [-1.1, 1.1]^2).
 *   8-gaussians  FFJORD's toy data / 4: centres (4 (cos, sin) of k pi/4) / 1.414 / 4, i.e. on
 *                radius 0.7072, sd 0.5 / 1.414 / 4 = 0.0884, uniformly chosen: about [-1, 1]^2.
 *   checkerboard FFJORD's toy data / 4: uniform on the 8 dark squares of a 4x4 board covering
 *                [-1, 1)^2 (cells of side 0.5 whose floor(2x) + floor(2y) is even).
 * An unknown name fails with DDPM_ERR_INVALID and a message listing the names. On success out
 * owns a new allocation (dim 2); free it with ddpm_points_free. */
int ddpm_points_generate(const char *name, size_t n, uint64_t seed, ddpm_points *out);

/* Reads a CSV of N rows x D numbers (any D >= 1, the same on every row). Fields are separated by
 * a comma (spaces around it allowed) or by spaces/tabs; blank lines and '#' comments are skipped;
 * CRLF line ends, a UTF-8 BOM and numbers in double quotes are accepted. The first row is a header, and skipped, when none
 * of its fields is a number. Errors name the file and the line: DDPM_ERR_IO if the file cannot be
 * read; DDPM_ERR_FORMAT for a field that is not a number ("points.csv:17: column 2: 'abc' is not
 * a number"), NaN or inf, an empty field, a ragged row ("points.csv:9: 3 columns, expected 2 as
 * on line 1") or no data rows. On success out owns a new allocation. */
int ddpm_points_read_csv(const char *path, ddpm_points *out);
/* Writes p as CSV: a header "x0,x1,..." and one row per point, each value with 9 significant
 * digits (floats round-trip exactly). The file is replaced atomically. */
int ddpm_points_write_csv(const char *path, const ddpm_points *p);


/* ---- NumPy .npy files ---------------------------------------------------------------------- */

/* An array read from a .npy file. dtype is the kind and size without the byte order: "f4", "f8",
 * "f2", "u1", "i1", "b1", "i2", "u2", "i4", "u4", "i8", "u8" (the file must be little-endian or
 * byte-sized). data holds numel items in C order, malloc'd and aligned for the dtype. */
typedef struct {
    int ndim;                     /* 0 (a scalar) .. DDPM_MAX_DIMS */
    int64_t shape[DDPM_MAX_DIMS];
    char dtype[4];
    size_t itemsize;              /* bytes per item */
    size_t numel;
    void *data;
} ddpm_npy;

/* Reads a .npy file of format version 1.0, 2.0 or 3.0. Fails (DDPM_ERR_IO for a missing or
 * unreadable file, DDPM_ERR_FORMAT otherwise, the message naming the file) on a bad magic, a
 * malformed header dict, fortran_order True, a big-endian or unsupported dtype (structured arrays
 * included), or data shorter or longer than the shape needs. Free with ddpm_npy_free. */
int ddpm_npy_read(const char *path, ddpm_npy *out);
void ddpm_npy_free(ddpm_npy *a);
/* Converts every element of a to float32 into dst[a->numel] (bool -> 0/1). */
int ddpm_npy_to_f32(const ddpm_npy *a, float *dst);
/* Write a C-order float32 ('<f4') or uint8 ('|u1') array of any rank 0..DDPM_MAX_DIMS as a
 * version 1.0 .npy file (header padded to 64 bytes as numpy does), atomically. */
int ddpm_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape);
int ddpm_npy_write_u8(const char *path, const uint8_t *data, int ndim, const int64_t *shape);

/* ---- Image output: PNG, grids, animated GIF -------------------------------------------------- */

/* Maps a model-space value in [-1, 1] to a pixel: round((x + 1) / 2 * 255), clamped to 0..255
 * (NaN -> 0). */
uint8_t ddpm_pixel_from_unit(float x);

/* Writes an 8-bit PNG atomically. pixels: h rows of w * channels bytes, interleaved; channels 1
 * (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). Errors name the path. */
int ddpm_png_write(const char *path, const uint8_t *pixels, int w, int h, int channels);

/* Lays N images [N, C, H, W] with values in [-1, 1] out in a grid as torchvision's make_grid does:
 * ncol = min(nrow, N) images per row, ceil(N / ncol) rows, `padding` pixels of value pad_value
 * (0..255) around and between the images. Each image is first enlarged scale times (nearest
 * neighbour; padding is not scaled). C must be 1 (the grid is gray) or 3 (RGB).
 * On success *pixels_out (malloc'd, interleaved, C bytes per pixel) is *h_out rows of *w_out
 * pixels: w = ncol * (W * scale + padding) + padding, likewise h. */
int ddpm_image_grid(const float *images, int N, int C, int H, int W, int nrow, int padding,
                    int pad_value, int scale, uint8_t **pixels_out, int *w_out, int *h_out);
/* ddpm_image_grid with padding 2 and pad value 0, written as a PNG. */
int ddpm_grid_write_png(const char *path, const float *images, int N, int C, int H, int W,
                        int nrow, int scale);

/* An animated GIF being written (frames are kept in memory; the file appears on close). */
typedef struct ddpm_gif ddpm_gif;
/* Starts an animated GIF of w x h frames with channels 1 (gray: a 256-level gray palette) or 3
 * (RGB: each frame gets its own palette, exact when the frame has at most 256 colours, otherwise
 * a 256-colour median-cut palette with nearest-colour mapping). delay_cs: the delay of each frame
 * in centiseconds. The GIF loops forever (NETSCAPE2.0 extension) and holds its last frame longer
 * (see ddpm_gif_set_final_delay). Fails if the directory of path does not exist. */
int ddpm_gif_open(const char *path, int w, int h, int channels, int delay_cs, ddpm_gif **out);
/* The delay of the last frame in centiseconds (default max(200, delay_cs)). */
void ddpm_gif_set_final_delay(ddpm_gif *g, int delay_cs);
/* Appends a frame: h rows of w * channels bytes (the layout ddpm_image_grid produces). */
int ddpm_gif_add_frame(ddpm_gif *g, const uint8_t *pixels);
/* Encodes the last frame and writes the file atomically (temporary name, then rename); frees g
 * whatever happens. Fails if no frame was added. */
int ddpm_gif_close(ddpm_gif *g);
/* Frees g without writing anything (for error paths). NULL is fine. */
void ddpm_gif_discard(ddpm_gif *g);

/* ---- Image input ----------------------------------------------------------------------------- */

/* File name extensions (lower case) the image reader recognises: .png .jpg .jpeg .bmp .gif .tga
 * .psd .hdr .pic .ppm .pgm .pnm (JPEG through libjpeg-turbo, PNG through libpng, the others
 * through stb_image; a GIF gives its first frame). */
int ddpm_image_ext_supported(const char *path);

/* Reads one image file into dst [channels, size, size] with values in [-1, 1]:
 *  - transparency is composited onto white (so transparent sprite backgrounds become white);
 *  - channels 3 gives RGB (gray files are replicated), channels 1 gives the luminance
 *    0.299 R + 0.587 G + 0.114 B (exact for gray pixels);
 *  - the image is scaled so its shorter side is `size` and the centre size x size square is kept
 *    (torchvision's Resize(size) + CenterCrop(size)), resampling in 8-bit value space with an area
 *    average (box filter) when shrinking and bilinear interpolation when enlarging; when the
 *    shorter side already equals size the pixels are copied exactly (integer centre crop).
 * Errors: DDPM_ERR_IO if the file cannot be read, DDPM_ERR_FORMAT with the decoder's reason if it
 * cannot be decoded (truncated: shorter than its headers say, corrupt, unknown format, more than
 * 2^25 pixels or 4096 pixels per byte of the file); messages name the file. */
int ddpm_image_read(const char *path, int size, int channels, float *dst);
/* ddpm_image_read at out_h x out_w (dst [channels, out_h, out_w]): the image is scaled by
 * max(out_h / h, out_w / w), so that it covers the output, and the centre out_h x out_w kept (the
 * largest centred region of the output's aspect ratio, resampled as above; copied exactly when
 * that scale is 1). For out_h = out_w = size it is ddpm_image_read. */
int ddpm_image_read_hw(const char *path, int out_h, int out_w, int channels, float *dst);

/* The size of an image file and the channels stored in it (1 gray, 2 gray + alpha, 3 RGB,
 * 4 RGBA) from its header, with the reader's checks of the header; no pixel is decoded. */
int ddpm_image_info(const char *path, int *width, int *height, int *channels);

/* ---- Image datasets -------------------------------------------------------------------------- */

/* Images as float32 [n, c, h, w] in [-1, 1], with optional labels.
 *  - class labels: labels[n] (class index, or -1 for an image with no class) and n_classes > 0;
 *    cond is then the one-hot matrix [n, n_classes] (a zero row for label -1), cond_dim =
 *    n_classes, and class_names has n_classes strings;
 *  - context vectors that are not one-hot (multi-hot or real-valued, e.g. from a .npy): cond
 *    [n, cond_dim] only, labels NULL, n_classes 0, class_names NULL;
 *  - unlabelled: cond, labels and class_names NULL, n_classes = cond_dim = 0. */
typedef struct {
    float *x;          /* [n, c, h, w] */
    int n, c, h, w;
    int n_classes;     /* 0 = no class labels */
    int cond_dim;      /* K of the context vectors; n_classes for class labels; 0 = none */
    float *cond;       /* [n, cond_dim] or NULL */
    int *labels;       /* [n] or NULL */
    char **class_names;/* [n_classes] or NULL */
    int n_total;       /* items of the whole source when this is a shard of it (else n or 0) */
} ddpm_image_dataset;

/* A static part of a data set, for one of several processes that each hold only theirs: part
 * `index` of `count` is the items [N index / count, N (index + 1) / count) of the source's
 * order (N items). {0, 1} is the whole. Each part's classes and value mapping are the whole
 * set's (a shard looks at every label and pixel range, but keeps only its own). */
typedef struct {
    int index, count;
} ddpm_shard;

/* Where Debian's dataset-fashion-mnist package installs the data. */
#define DDPM_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Fashion-MNIST (or any IDX pair with the same file names, e.g. MNIST): reads
 * {train,t10k}-images-idx3-ubyte[.gz] and {train,t10k}-labels-idx1-ubyte[.gz] from dir
 * (DDPM_FASHION_MNIST_DIR if NULL), gzip'd or not. Validates the magic numbers (0x00000803 for
 * images, 0x00000801 for labels), equal counts, sane dimensions, labels 0..9 and the data length.
 * Gives [n, 1, 28, 28] with 10 classes named "T-shirt/top", "Trouser", ... "Ankle boot".
 * max_items > 0 keeps only the first max_items images (0 = all). */
int ddpm_dataset_fashion_mnist(const char *dir, int train, int max_items, ddpm_image_dataset *out);

/* Every image file under dir (recursively; names starting with '.' are skipped; files in sorted
 * byte order of their paths, so the order is deterministic), each read with ddpm_image_read at
 * image_size x image_size with channels 1 or 3. With labels_from_subdirs, the class of an image
 * is its first-level sub-folder: the sub-folders holding images, in sorted order, are classes
 * 0, 1, ... with their names as class names; images directly in dir get label -1.
 * Errors: a missing directory (DDPM_ERR_IO), no images ("DIR: no images found (looked for .png
 * .jpg ...)", DDPM_ERR_INVALID), an unreadable image (the file and the decoder's reason). */
int ddpm_dataset_folder(const char *dir, int image_size, int channels, int labels_from_subdirs,
                        ddpm_image_dataset *out);
/* ddpm_dataset_folder at height x width (ddpm_image_read_hw); height = width = image_size is
 * ddpm_dataset_folder. */
int ddpm_dataset_folder_hw(const char *dir, int height, int width, int channels,
                           int labels_from_subdirs, ddpm_image_dataset *out);
/* The same, keeping one shard: only its files are decoded. */
int ddpm_dataset_folder_shard(const char *dir, int height, int width, int channels,
                              int labels_from_subdirs, ddpm_shard shard, ddpm_image_dataset *out);

/* Images from a .npy array: [N, H, W, C] (C = 1 or 3; the course's sprites layout), [N, H, W]
 * (gray), or [N, C, H, W] when the last dimension is not 1 or 3 but the second is. Values:
 * uint8 (and other integer types) must lie in 0..255 and map to [-1, 1]; float arrays in [0, 1]
 * are mapped to [-1, 1], float arrays with a negative minimum are taken as [-1, 1] already (and
 * must lie in it), float arrays in [0, 255] are taken as 8-bit values; anything else fails.
 * Optional labels (labels_path not NULL): a vector [N] (or [N, 1]) of non-negative integer class
 * indices (n_classes = max + 1, class names "0", "1", ...), or a matrix [N, K] of context
 * vectors (float or int): when every row is one-hot they are also class labels (n_classes = K),
 * otherwise they are kept as context only. Errors name the file: wrong rank or dtype, values out
 * of range, and a count mismatch ("labels.npy has 100 rows but images.npy has 1788 images"). */
int ddpm_dataset_npy(const char *images_path, const char *labels_path, ddpm_image_dataset *out);
/* The same, keeping one shard: only its images are converted (the file is read whole). */
int ddpm_dataset_npy_shard(const char *images_path, const char *labels_path, ddpm_shard shard,
                           ddpm_image_dataset *out);
/* Cuts a data set read whole down to one shard, in place (n_total keeps the whole count). */
int ddpm_dataset_keep_shard(ddpm_image_dataset *d, ddpm_shard shard);

/* Frees everything a dataset holds and zeroes it. NULL and zeroed datasets are fine. */
void ddpm_dataset_free(ddpm_image_dataset *d);

/* Random horizontal flips, deterministic: item b of the batch [B, C, H, W] is flipped when
 * ddpm_randu(seed, DDPM_STREAM_AUGMENT, item, epoch) < 0.5, where item = first_item + b. */
void ddpm_images_hflip_random(float *batch, int B, int C, int H, int W, uint64_t seed,
                              uint64_t first_item, uint32_t epoch);
/* The same with the dataset index of every batch item given (items[B]), for shuffled batches. */
void ddpm_images_hflip_random_items(float *batch, int B, int C, int H, int W, uint64_t seed,
                                    const uint64_t *items, uint32_t epoch);

#ifdef __cplusplus
}
#endif
#endif /* DDPM_IO_H */
