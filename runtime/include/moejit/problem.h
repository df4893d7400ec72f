// A grouped GEMM of a layer, reduced to the generic shape every kernel
// computes. This is the contract between the spec, the compiler and the
// runtime; docs/kernel-abi.md describes the kernel parameters.
#pragma once

#include "moejit/spec.h"

#include <array>
#include <cstdint>
#include <string>

namespace moejit {

// Which GEMM dimension varies per expert at run time.
//   M: rows grouped by expert (offsets over rows); N and K fixed.
//   K: the reduction grouped by expert (weight gradients); M and N fixed.
enum class Varlen { M, K };

enum class Epilogue {
  Store,       // C = acc (converted to the dtype)
  ActForward,  // C = H = acc; aux_out = act(H) (n columns)
  ScaleRows,   // C = scale[row] * acc
  DActivation, // dA = acc; aux_in = H; C = dH = dact(H, scale[row] * dA);
               // aux_out[row] += sum_j dA[row, j] * act(H)[row, j]  (f32)
};

// For every family: C[M x N] (+)= A[M x K] * B[K x N] per expert.
struct GemmProblem {
  GemmKind kind = GemmKind::UpProj;
  DType dtype = DType::BF16;
  Varlen varlen = Varlen::M;
  int experts = 0;
  // The fixed sizes; the varlen dimension is 0 here.
  int64_t m = 0, n = 0, k = 0;
  // Storage of A: true = [M][K] (K contiguous), false = [K][M].
  bool aKContiguous = true;
  // Storage of B per expert: true = [N][K] (K contiguous), false = [K][N].
  // Varlen-M: B has one matrix per expert, E of them back to back.
  // Varlen-K: B is a grouped-rows activation like A.
  bool bKContiguous = false;
  // Rows of the varlen dimension read through gather[row] (token index).
  bool gatherA = false, gatherB = false;
  // Varlen-K only: rows of B (the reduction) scaled by scale[row].
  bool scaleBRows = false;
  Epilogue epilogue = Epilogue::Store;
  Activation activation = Activation::None;
  GateUpLayout gateUp = GateUpLayout::Concatenated;
  // Leading dimension (elements) of C; for ActForward/DActivation C has
  // cColumns = upColumns while the GEMM's N is n (DActivation) or upColumns.
  int64_t cColumns = 0;
  int64_t auxColumns = 0; // columns of aux_in / aux_out matrices (0: none)
  Schedule schedule;
  std::string kernelName; // the PTX entry symbol
};

GemmProblem makeGemmProblem(const LayerSpec &layer, const GemmSpec &gemm);

// The launch of a problem for a given total row count (sum over experts).
struct LaunchShape {
  std::array<unsigned, 3> grid{1, 1, 1};
  std::array<unsigned, 3> block{1, 1, 1};
  unsigned sharedBytes = 0;
  // CTAs per cluster along x (the kernel's compile-time cluster shape).
  unsigned cluster = 1;
  // The kernel walks its work items grid-stride, so any grid (a multiple of
  // `cluster`) is correct: the launch may shrink it to the clusters that can
  // be resident at once (a cluster that waits for a free GPC would double
  // the time of a static schedule).
  bool persistent = false;
};

// Code path of a kernel. Portable: mma.sync + cp.async, sm_80 and newer.
// Hopper (sm_90a): warp-specialised and persistent, cp.async into 128B-swizzled
// shared memory + mbarriers + wgmma; taken
// for the varlen-M families when the schedule's tile suits wgmma.
enum class KernelPath { Portable, Hopper };
KernelPath selectKernelPath(const GemmProblem &problem, const Target &target);

// Warps of the portable path along M and N of the tile; each warp computes a
// (tile.m / m) x (tile.n / n) block of the output tile.
struct WarpLayout {
  int m = 1, n = 1;
};
WarpLayout portableWarpLayout(const Schedule &schedule);

// Shared-memory tiles of the portable path, per pipeline stage: A and B are
// each an [outer][inner + padding] array whose inner dimension is the
// operand's contiguous one in global memory. The padding (8 elements) keeps
// the 16-byte cp.async chunks aligned and spreads ldmatrix rows over banks.
struct PortableTileLayout {
  int64_t aOuter = 0, aInner = 0; // inner includes the padding
  int64_t bOuter = 0, bInner = 0;
  int64_t stageElements() const { return aOuter * aInner + bOuter * bInner; }
};
PortableTileLayout portableTileLayout(const TileShape &tile, Varlen varlen,
                                      bool bKContiguous);

// Threads per block of the portable path (mma.sync) for a schedule.
int portableThreads(const Schedule &schedule);

// Dynamic shared memory the pipeline needs.
int64_t pipelineSharedBytes(const GemmProblem &problem);

// Shared-memory tiles of the Hopper path, per pipeline stage: A [tile.m]
// rows and B [tile.n] rows (K-contiguous B) or tile.n / 64 blocks of
// [tile.k] rows (N-contiguous B), every row 128 bytes in the 128B-swizzle
// pattern wgmma reads. The kernel aligns its base to kAlignBytes at run
// time, so the launch asks for that much more.
struct HopperTileLayout {
  static constexpr int64_t kRowBytes = 128;
  static constexpr int64_t kAlignBytes = 1024;
  static constexpr int64_t kBarrierBytes = 8;
  // TMA stores (hopperTmaStores): per consumer warpgroup, kStagingBuffers
  // buffers of one 64-row x 128-byte box each.
  static constexpr int64_t kStagingBuffers = 2;
  static constexpr int64_t kStagingBufferBytes = 64 * kRowBytes;
  int64_t aStageBytes = 0, bStageBytes = 0;
};
HopperTileLayout hopperTileLayout(const TileShape &tile);
// Whether the Hopper path runs the schedule ping-pong: two consumer
// warpgroups each own whole tiles and take turns, so one's epilogue
// overlaps the other's main loop. Only with tile.m = 64, or 128 with
// tile.n <= 128; a ping-pong schedule of other tiles runs cooperatively
// (docs/schedules.md).
bool hopperPingPong(const Schedule &schedule);
// Whether the Hopper path runs the schedule staggered: cooperative 128-row
// tiles whose two consumer warpgroups store their halves in turns, so one's
// epilogue overlaps the other's next main loop. Only with tile.m = 128; a
// staggered schedule of other tiles runs cooperatively.
bool hopperStaggered(const Schedule &schedule);
// Threads per block of the Hopper path: a producer warpgroup and one
// consumer warpgroup per 64 rows of M (two for ping-pong).
int hopperThreads(const Schedule &schedule);
// The launch's dynamic shared memory: the stages, their barriers, the
// expert offsets, the alignment slack and, with TMA stores, the consumers'
// staging buffers (hopperStagingBytes).
int64_t hopperSharedBytes(const GemmProblem &problem, const Target &target);

// TMA stores (registers -> shared staging -> cp.async.bulk.tensor): each
// cooperative consumer warpgroup writes its 64 rows of a tile 64 columns at
// a time into one of two 8 KiB staging buffers (128B swizzle) and one
// thread stores the box by TMA, so the consumers go on while the TMA unit
// writes. Taken where the schedule says `stores = tma`, for the plain and
// row-scaled stores (down_proj, dx) and the gated forward with concatenated
// halves (up_proj: H and act(H)) of a cooperative tile, when the staging
// fits beside the stages in the target's shared memory (227 KiB on sm_90).
// A box of the last M tile of an expert would write the next expert's rows:
// the threads copy its valid rows out of the staging buffer instead.
bool hopperTmaStores(const GemmProblem &problem, const Target &target);
int64_t hopperStagingBytes(const GemmProblem &problem);

LaunchShape launchShape(const GemmProblem &problem, int64_t totalRows,
                        const Target &target);

// The weights (B) of a Hopper kernel seen by the tensor memory accelerator: a
// 3-D tensor of E matrices, dimensions fastest first, and the box one TMA
// load copies into a stage (one 128-byte swizzle row wide). K-contiguous B
// [E][N][K]: dims (K, N, E), box (64, tile.n, 1), one load per stage.
// N-contiguous B [E][K][N]: dims (N, K, E), box (64, tile.k, 1), one load
// per 64 columns of the tile.
struct WeightMapShape {
  std::array<uint64_t, 3> dims{};
  std::array<uint64_t, 2> strideBytes{}; // of dims 1 and 2
  std::array<uint32_t, 3> box{};
};
// Whether the kernel loads B by TMA (through KernelArg::WeightMap): the
// Hopper path, except for a gated forward with concatenated halves whose
// gate and up halves of the tile are not whole 64-column boxes of an
// N-contiguous B (tile.n not a multiple of 128); those copy B by cp.async.
bool usesWeightTma(const GemmProblem &problem, const Target &target);
// The rule behind it, shared with the Hopper lowering: B's tile is whole
// 64-column boxes unless it is gate/up halves (`gateUpHalves`: a gated
// forward with concatenated halves) of a K-contiguous B or of a tile.n that
// is not a multiple of 128.
bool weightTileIsBoxes(bool gateUpHalves, bool bKContiguous, int64_t tileN);
WeightMapShape weightMapShape(const GemmProblem &problem);

// A (the grouped rows, K contiguous) seen by the tensor memory accelerator:
// a 2-D tensor (K, total_rows) and the box one TMA load copies into a stage,
// one 128-byte swizzle row wide and tile.m rows tall; rows past total_rows
// arrive as zeros.
struct ActivationMapShape {
  std::array<uint64_t, 2> dims{};
  uint64_t strideBytes = 0; // of dim 1
  std::array<uint32_t, 2> box{};
};
// Whether the kernel loads A by TMA (through KernelArg::ActivationMap): the
// Hopper path for rows that are not gathered. Gathered rows go by cp.async
// (one TMA load per row ran the up-projections 30-35% slower on an H100).
bool usesActivationTma(const GemmProblem &problem, const Target &target);
ActivationMapShape activationMapShape(const GemmProblem &problem, int64_t totalRows);

// An output (C, or act(H) in aux_out) seen by the TMA stores: a 2-D tensor
// (columns, total_rows) and a box of 64 columns x 64 rows (one consumer
// warpgroup's rows), 128B swizzle; boxes clip at the tensor's edges.
struct OutputMapShape {
  std::array<uint64_t, 2> dims{};
  uint64_t strideBytes = 0; // of dim 1
  std::array<uint32_t, 2> box{};
};
// Whether the kernel writes its outputs by TMA (through KernelArg::OutputMap
// and KernelArg::AuxMap): the Hopper path where hopperTmaStores holds.
bool usesOutputTma(const GemmProblem &problem, const Target &target);
// `aux`: the map of aux_out (act(H), auxColumns wide) instead of C.
OutputMapShape outputMapShape(const GemmProblem &problem, int64_t totalRows, bool aux);

// CTAs per thread-block cluster of a Hopper kernel, all along M: the cluster's
// CTAs take neighbouring M tiles of one expert and the same N tile, so they
// need the same B tile; each loads 1 / size of it by TMA and multicasts it to
// all of them, which divides B's L2 traffic by the size. The schedule's
// cluster (m x 1, m = 2 or 4) when B goes by TMA and splits into that many
// parts (N-contiguous: whole 64-column boxes each; K-contiguous: whole
// 8-row swizzle atoms each), else 1 (the cluster is then ignored).
int hopperClusterSize(const GemmProblem &problem, const Target &target);
// The same rule without the path: what the weight map's box and the lowering
// assume once the Hopper path with TMA is known to be taken.
int weightClusterParts(const GemmProblem &problem);

// The revision of the generated kernels, part of every kernel cache key: a
// cache filled by a build of another revision is never served. Bump it with
// every change to the lowering that changes a kernel's code or parameters
// (the version number moves too seldom for that).
// 2: A by TMA where its rows are not gathered (the activation_map parameter).
// 3: sigmoid by one tanh.approx (the gated and dSwiGLU epilogues).
// 4: outputs by TMA store (the output_map and aux_map parameters).
inline constexpr int kKernelRevision = 4;

// Kernel parameter slots, in order (docs/kernel-abi.md).
enum class KernelArg : int {
  A = 0,
  B,
  C,
  AuxIn,
  AuxOut,
  Offsets,
  Gather,
  Scale,
  TotalRows,
  // A 128-byte CUtensorMap of B passed by value (__grid_constant__); read
  // only by kernels for which usesWeightTma holds, zeros for the others.
  WeightMap,
  // The same for A (usesActivationTma), encoded for every launch.
  ActivationMap,
  // The same for C and for aux_out (usesOutputTma), encoded for every
  // launch; zeros where the pointer is null.
  OutputMap,
  AuxMap,
  Count
};

} // namespace moejit
