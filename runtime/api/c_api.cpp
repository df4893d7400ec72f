// The C API (moejit/moejit_c.h) over the C++ API: every exception becomes a
// status code and this thread's last-error message.
#include "moejit/moejit_c.h"

#include "moejit/moejit.h"

#include <new>
#include <string>

struct moejit_runtime {
  moejit::Runtime runtime;
};
struct moejit_spec {
  moejit::Spec spec;
};
struct moejit_kernels {
  moejit::LayerKernels kernels;
};

struct moejit_layer {
  moejit::MoeLayer layer;
};

namespace {

// The C API's error slot: one message per thread, as moejit_last_error()
// promises; nothing else in moejit keeps such state.
std::string &lastError() {
  thread_local std::string message;
  return message;
}

moejit_status fail(moejit_status status, std::string message) {
  lastError() = std::move(message);
  return status;
}

// Runs `body` and maps what it throws; `failedAs` is the status of a plain
// moejit::Error (ErrorKind::Failed) in this call.
template <class Body>
moejit_status guarded(Body &&body, moejit_status failedAs = MOEJIT_ERROR_FAILED) noexcept {
  try {
    body();
    return MOEJIT_OK;
  } catch (const moejit::Error &e) {
    switch (e.kind()) {
    case moejit::ErrorKind::NoGpu:
      return fail(MOEJIT_ERROR_NO_GPU, e.what());
    case moejit::ErrorKind::CudaCall:
      return fail(MOEJIT_ERROR_CUDA, e.what());
    case moejit::ErrorKind::Failed:
      break;
    }
    return fail(failedAs, e.what());
  } catch (const std::bad_alloc &) {
    return fail(MOEJIT_ERROR_FAILED, "out of host memory");
  } catch (const std::exception &e) {
    return fail(MOEJIT_ERROR_FAILED, e.what());
  } catch (...) {
    return fail(MOEJIT_ERROR_FAILED, "unknown exception");
  }
}

moejit_status nullArgument(const char *function, const char *name) {
  return fail(MOEJIT_ERROR_INVALID_ARGUMENT,
              std::string(function) + ": argument '" + name + "' is NULL");
}

const moejit::LayerSpec *findLayer(const moejit::Spec &spec, const char *name) {
  if (!name)
    return spec.layers.empty() ? nullptr : &spec.layers.front();
  return spec.layer(name);
}

moejit_status noLayer(const char *name) {
  return fail(MOEJIT_ERROR_NOT_FOUND, name ? std::string("the spec has no layer '") + name + "'"
                                           : std::string("the spec has no layer"));
}

moejit::ForwardOptions forwardOptions(const moejit_forward_options *options) {
  moejit::ForwardOptions cpp;
  if (options) {
    cpp.tokenRounding = options->token_rounding != 0;
    cpp.keepH = options->keep_h != 0;
  }
  return cpp;
}

} // namespace

extern "C" {

const char *moejit_last_error(void) { return lastError().c_str(); }

const char *moejit_status_name(moejit_status status) {
  switch (status) {
  case MOEJIT_OK:
    return "MOEJIT_OK";
  case MOEJIT_ERROR_INVALID_ARGUMENT:
    return "MOEJIT_ERROR_INVALID_ARGUMENT";
  case MOEJIT_ERROR_PARSE:
    return "MOEJIT_ERROR_PARSE";
  case MOEJIT_ERROR_NOT_FOUND:
    return "MOEJIT_ERROR_NOT_FOUND";
  case MOEJIT_ERROR_NO_GPU:
    return "MOEJIT_ERROR_NO_GPU";
  case MOEJIT_ERROR_CUDA:
    return "MOEJIT_ERROR_CUDA";
  case MOEJIT_ERROR_FAILED:
    return "MOEJIT_ERROR_FAILED";
  }
  return "MOEJIT_STATUS_UNKNOWN";
}

const char *moejit_version(void) { return moejit::kVersion.data(); }

void moejit_runtime_options_init(moejit_runtime_options *options) {
  if (options)
    *options = moejit_runtime_options{nullptr, -1, nullptr, 0, nullptr};
}

moejit_status moejit_runtime_create(const moejit_runtime_options *options, moejit_runtime **out) {
  if (!out)
    return nullArgument("moejit_runtime_create", "out");
  *out = nullptr;
  return guarded([&] {
    moejit::RuntimeOptions cpp;
    if (options) {
      if (options->cache_dir)
        cpp.cacheDir = options->cache_dir;
      if (options->strict >= 0)
        cpp.strict = options->strict != 0;
      if (options->arch)
        cpp.arch = options->arch;
      cpp.device = options->device;
      if (options->tuning_db)
        cpp.tuningDb = options->tuning_db;
    }
    *out = new moejit_runtime{moejit::Runtime(std::move(cpp))};
  });
}

void moejit_runtime_destroy(moejit_runtime *runtime) { delete runtime; }

const char *moejit_runtime_arch(const moejit_runtime *runtime) {
  return runtime ? runtime->runtime.target().arch.c_str() : "";
}

moejit_status moejit_runtime_stats(const moejit_runtime *runtime, moejit_stats *out) {
  if (!runtime)
    return nullArgument("moejit_runtime_stats", "runtime");
  if (!out)
    return nullArgument("moejit_runtime_stats", "out");
  return guarded([&] {
    const moejit::RuntimeStats stats = runtime->runtime.stats();
    *out = moejit_stats{stats.memoryHits, stats.diskHits,      stats.misses,
                        stats.compiles,   stats.modulesLoaded, stats.ptxLinks};
  });
}

moejit_status moejit_spec_parse(const moejit_runtime *runtime, const char *text, size_t length,
                                const char *filename, moejit_spec **out) {
  if (!out)
    return nullArgument("moejit_spec_parse", "out");
  *out = nullptr;
  if (!runtime)
    return nullArgument("moejit_spec_parse", "runtime");
  if (!text)
    return nullArgument("moejit_spec_parse", "text");
  return guarded(
      [&] {
        *out = new moejit_spec{runtime->runtime.parseSpec(std::string_view(text, length),
                                                          filename ? filename : "<text>")};
      },
      MOEJIT_ERROR_PARSE);
}

moejit_status moejit_spec_parse_file(const moejit_runtime *runtime, const char *path,
                                     moejit_spec **out) {
  if (!out)
    return nullArgument("moejit_spec_parse_file", "out");
  *out = nullptr;
  if (!runtime)
    return nullArgument("moejit_spec_parse_file", "runtime");
  if (!path)
    return nullArgument("moejit_spec_parse_file", "path");
  moejit_status read =
      guarded([&] { *out = new moejit_spec{runtime->runtime.readSpec(path)}; }, MOEJIT_ERROR_PARSE);
  // An unreadable file is not a parse error.
  if (read == MOEJIT_ERROR_PARSE && lastError().rfind("cannot read", 0) == 0)
    return MOEJIT_ERROR_NOT_FOUND;
  return read;
}

void moejit_spec_destroy(moejit_spec *spec) { delete spec; }

size_t moejit_spec_layer_count(const moejit_spec *spec) {
  return spec ? spec->spec.layers.size() : 0;
}

const char *moejit_spec_layer_name(const moejit_spec *spec, size_t index) {
  if (!spec || index >= spec->spec.layers.size())
    return nullptr;
  return spec->spec.layers[index].name.c_str();
}

moejit_status moejit_precompile(moejit_runtime *runtime, const moejit_spec *spec,
                                const char *layer) {
  if (!runtime)
    return nullArgument("moejit_precompile", "runtime");
  if (!spec)
    return nullArgument("moejit_precompile", "spec");
  if (layer && !spec->spec.layer(layer))
    return noLayer(layer);
  return guarded([&] {
    for (const moejit::LayerSpec &each : spec->spec.layers)
      if (!layer || each.name == layer)
        runtime->runtime.precompile(each);
  });
}

moejit_status moejit_kernels_get(moejit_runtime *runtime, const moejit_spec *spec,
                                 const char *layer, moejit_kernels **out) {
  if (!out)
    return nullArgument("moejit_kernels_get", "out");
  *out = nullptr;
  if (!runtime)
    return nullArgument("moejit_kernels_get", "runtime");
  if (!spec)
    return nullArgument("moejit_kernels_get", "spec");
  const moejit::LayerSpec *found = findLayer(spec->spec, layer);
  if (!found)
    return noLayer(layer);
  return guarded([&] { *out = new moejit_kernels{runtime->runtime.kernels(*found)}; });
}

void moejit_kernels_destroy(moejit_kernels *kernels) { delete kernels; }

int moejit_kernels_has(const moejit_kernels *kernels, moejit_gemm_kind kind) {
  return kernels && kernels->kernels.has(static_cast<moejit::GemmKind>(kind)) ? 1 : 0;
}

moejit_status moejit_launch(const moejit_kernels *kernels, moejit_gemm_kind kind,
                            const moejit_gemm_args *args, void *stream) {
  if (!kernels)
    return nullArgument("moejit_launch", "kernels");
  if (!args)
    return nullArgument("moejit_launch", "args");
  if (static_cast<unsigned>(kind) > static_cast<unsigned>(MOEJIT_GEMM_DX))
    return fail(MOEJIT_ERROR_INVALID_ARGUMENT,
                "moejit_launch: unknown GEMM kind " + std::to_string(int(kind)));
  const auto gemmKind = static_cast<moejit::GemmKind>(kind);
  if (!kernels->kernels.has(gemmKind))
    return fail(MOEJIT_ERROR_NOT_FOUND, "layer '" + kernels->kernels.layerName() + "' has no " +
                                            std::string(moejit::toString(gemmKind)) + " GEMM");
  moejit::GemmArgs cpp;
  cpp.a = args->a;
  cpp.b = args->b;
  cpp.c = args->c;
  cpp.auxIn = args->aux_in;
  cpp.auxOut = args->aux_out;
  cpp.offsets = args->offsets;
  cpp.gather = args->gather;
  cpp.scale = args->scale;
  cpp.totalRows = args->total_rows;
  // The launch's only plain errors are argument checks; driver errors are CudaCall.
  return guarded([&] { kernels->kernels[gemmKind].launch(cpp, stream); },
                 MOEJIT_ERROR_INVALID_ARGUMENT);
}

moejit_status moejit_layer_create(moejit_runtime *runtime, const moejit_spec *spec,
                                  const char *layer, int with_rounding, moejit_layer **out) {
  if (!out)
    return nullArgument("moejit_layer_create", "out");
  *out = nullptr;
  if (!runtime)
    return nullArgument("moejit_layer_create", "runtime");
  if (!spec)
    return nullArgument("moejit_layer_create", "spec");
  const moejit::LayerSpec *found = findLayer(spec->spec, layer);
  if (!found)
    return noLayer(layer);
  return guarded(
      [&] { *out = new moejit_layer{runtime->runtime.layer(*found, with_rounding != 0)}; });
}

void moejit_layer_destroy(moejit_layer *layer) { delete layer; }

moejit_status moejit_layer_workspace_bytes(const moejit_layer *layer, int64_t tokens,
                                           const moejit_forward_options *options, size_t *out) {
  if (!layer)
    return nullArgument("moejit_layer_workspace_bytes", "layer");
  if (!out)
    return nullArgument("moejit_layer_workspace_bytes", "out");
  return guarded([&] { *out = layer->layer.workspaceBytes(tokens, forwardOptions(options)); },
                 MOEJIT_ERROR_INVALID_ARGUMENT);
}

moejit_status moejit_layer_forward(const moejit_layer *layer, const moejit_forward_args *args,
                                   void *stream) {
  if (!layer)
    return nullArgument("moejit_layer_forward", "layer");
  if (!args)
    return nullArgument("moejit_layer_forward", "args");
  moejit::ForwardArgs cpp;
  cpp.x = args->x;
  cpp.routerWeights = args->router_weights;
  cpp.routerLogits = args->router_logits;
  cpp.w1 = args->w1;
  cpp.w2 = args->w2;
  cpp.out = args->out;
  cpp.tokens = args->tokens;
  cpp.workspace = args->workspace;
  cpp.workspaceBytes = args->workspace_bytes;
  cpp.h = args->h;
  cpp.options = forwardOptions(&args->options);
  // The forward's only plain errors are argument checks; driver errors are CudaCall.
  return guarded([&] { layer->layer.forward(cpp, stream); }, MOEJIT_ERROR_INVALID_ARGUMENT);
}

} // extern "C"
