/* The moejit C API: opaque handles and status codes, for any language with
 * a C FFI. Every function returns a moejit_status (or a plain value that
 * cannot fail); on failure moejit_last_error() gives the message, per thread,
 * until the next failing call on that thread. Handles may be used from any
 * thread; destroy functions accept NULL. Device pointers are void *, and a
 * stream is a CUstream / cudaStream_t passed as void * (NULL: the default
 * stream). See moejit/moejit.h for the C++ API this wraps. */
#ifndef MOEJIT_C_H
#define MOEJIT_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum moejit_status {
  MOEJIT_OK = 0,
  MOEJIT_ERROR_INVALID_ARGUMENT = 1, /* a null handle, a bad launch argument */
  MOEJIT_ERROR_PARSE = 2,            /* the spec does not parse or check */
  MOEJIT_ERROR_NOT_FOUND = 3,        /* no such layer or GEMM, an unreadable file */
  MOEJIT_ERROR_NO_GPU = 4,           /* no CUDA driver or no usable device */
  MOEJIT_ERROR_CUDA = 5,             /* a CUDA driver call failed */
  MOEJIT_ERROR_FAILED = 6            /* anything else: a failed compile, a strict-mode miss */
} moejit_status;

/* The grouped GEMMs of a layer (docs/kernel-abi.md). */
typedef enum moejit_gemm_kind {
  MOEJIT_GEMM_UP_PROJ = 0,
  MOEJIT_GEMM_DOWN_PROJ = 1,
  MOEJIT_GEMM_DH = 2,
  MOEJIT_GEMM_DW1 = 3,
  MOEJIT_GEMM_DW2 = 4,
  MOEJIT_GEMM_DX = 5
} moejit_gemm_kind;

typedef struct moejit_runtime moejit_runtime;
typedef struct moejit_spec moejit_spec;
typedef struct moejit_kernels moejit_kernels;
typedef struct moejit_layer moejit_layer;

typedef struct moejit_runtime_options {
  const char *cache_dir; /* NULL: MOEJIT_CACHE_DIR, XDG, ~/.cache/moejit; "": memory only */
  int strict;            /* -1: MOEJIT_STRICT; 0: off; 1: a cache miss is an error */
  const char *arch;      /* NULL or "": MOEJIT_ARCH, else the GPU's, else sm_90a */
  int device;            /* CUDA device ordinal */
  const char *tuning_db; /* NULL: MOEJIT_TUNING_DB; "": none; else a `moejit tune` database */
} moejit_runtime_options;

/* The kernel parameters, device pointers in ABI order. */
typedef struct moejit_gemm_args {
  const void *a;
  const void *b;
  void *c;
  const void *aux_in;
  void *aux_out;
  const int32_t *offsets;
  const int32_t *gather;
  const float *scale;
  int64_t total_rows;
} moejit_gemm_args;

/* Options of a layer forward (moejit::ForwardOptions); zero: plain top-K. */
typedef struct moejit_forward_options {
  int token_rounding; /* 1: tile-aware token rounding (a layer created with_rounding) */
  int keep_h;         /* 1: keep H, in h when given, else in the workspace */
} moejit_forward_options;

/* The device pointers of one layer forward (moejit::ForwardArgs): row-major,
 * the layer's dtype, 16-byte aligned; exactly one of router_weights
 * ([d][E]) and router_logits ([T][E] fp32). */
typedef struct moejit_forward_args {
  const void *x;              /* X [T][d] */
  const void *router_weights; /* Wr [d][E], or NULL */
  const float *router_logits; /* [T][E], or NULL */
  const void *w1;             /* [E][d][u] */
  const void *w2;             /* [E][n][d] */
  void *out;                  /* O [T][d] */
  int64_t tokens;             /* T */
  void *workspace;            /* 256-byte aligned */
  size_t workspace_bytes;     /* at least moejit_layer_workspace_bytes */
  void *h;                    /* optional H [maxGroupedRows][u] with keep_h; NULL */
  moejit_forward_options options;
} moejit_forward_args;

typedef struct moejit_stats {
  uint64_t memory_hits;
  uint64_t disk_hits;
  uint64_t misses;
  uint64_t compiles;
  uint64_t modules_loaded;
  uint64_t ptx_links;
} moejit_stats;

/* The message of this thread's last failure ("" when none). */
const char *moejit_last_error(void);
const char *moejit_status_name(moejit_status status);
const char *moejit_version(void);

/* Defaults: cache_dir NULL, strict -1, arch NULL, device 0, tuning_db NULL. */
void moejit_runtime_options_init(moejit_runtime_options *options);

/* options NULL: the defaults. Needs no GPU. */
moejit_status moejit_runtime_create(const moejit_runtime_options *options, moejit_runtime **out);
void moejit_runtime_destroy(moejit_runtime *runtime);
/* The target arch, e.g. "sm_90a"; valid while the runtime lives. */
const char *moejit_runtime_arch(const moejit_runtime *runtime);
moejit_status moejit_runtime_stats(const moejit_runtime *runtime, moejit_stats *out);

/* Parses and checks .moe text (length bytes; filename for messages, may be NULL). */
moejit_status moejit_spec_parse(const moejit_runtime *runtime, const char *text, size_t length,
                                const char *filename, moejit_spec **out);
moejit_status moejit_spec_parse_file(const moejit_runtime *runtime, const char *path,
                                     moejit_spec **out);
void moejit_spec_destroy(moejit_spec *spec);
size_t moejit_spec_layer_count(const moejit_spec *spec);
/* NULL when index is out of range; valid while the spec lives. */
const char *moejit_spec_layer_name(const moejit_spec *spec, size_t index);

/* Fills the kernel cache with a layer (NULL: every layer); needs no GPU. */
moejit_status moejit_precompile(moejit_runtime *runtime, const moejit_spec *spec,
                                const char *layer);

/* The compiled and loaded GEMMs of a layer (NULL: the first). Needs a GPU. */
moejit_status moejit_kernels_get(moejit_runtime *runtime, const moejit_spec *spec,
                                 const char *layer, moejit_kernels **out);
void moejit_kernels_destroy(moejit_kernels *kernels);
/* 1 when the layer has that GEMM, else 0. */
int moejit_kernels_has(const moejit_kernels *kernels, moejit_gemm_kind kind);
/* Validates the arguments and enqueues the kernel on stream; asynchronous. */
moejit_status moejit_launch(const moejit_kernels *kernels, moejit_gemm_kind kind,
                            const moejit_gemm_args *args, void *stream);

/* The forward of a layer (NULL: the first): its up_proj and down_proj
 * through the cache, its routing kernels through NVRTC (with_rounding 1:
 * also the token-rounding ones). Needs a GPU (MOEJIT_ERROR_NO_GPU). */
moejit_status moejit_layer_create(moejit_runtime *runtime, const moejit_spec *spec,
                                  const char *layer, int with_rounding, moejit_layer **out);
void moejit_layer_destroy(moejit_layer *layer);
/* The workspace bytes a forward of `tokens` tokens needs (options NULL: zero). */
moejit_status moejit_layer_workspace_bytes(const moejit_layer *layer, int64_t tokens,
                                           const moejit_forward_options *options, size_t *out);
/* Validates the arguments and enqueues the whole forward on stream; asynchronous. */
moejit_status moejit_layer_forward(const moejit_layer *layer, const moejit_forward_args *args,
                                   void *stream);

#ifdef __cplusplus
}
#endif

#endif /* MOEJIT_C_H */
