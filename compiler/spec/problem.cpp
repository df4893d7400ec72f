// makeGemmProblem: each family of docs/kernel-abi.md as the generic grouped
// GEMM C[M x N] = A[M x K] * B[K x N] per expert.
#include "moejit/problem.h"

#include <stdexcept>
#include <string>

namespace moejit {

GemmProblem makeGemmProblem(const LayerSpec &layer, const GemmSpec &gemm) {
  GemmProblem p;
  p.kind = gemm.kind;
  p.dtype = layer.dtype;
  p.experts = layer.experts;
  p.activation = layer.activation;
  p.gateUp = layer.gateUp;
  p.schedule = gemm.schedule;
  p.kernelName = "moejit_" + layer.name + "_" + std::string(toString(gemm.kind));

  const int64_t d = layer.hidden;
  const int64_t n = layer.intermediate;
  const int64_t u = layer.upColumns();
  switch (gemm.kind) {
  case GemmKind::UpProj: // H = gather(X) W1[e]; aux_out = act(H)
    p.varlen = Varlen::M;
    p.n = u;
    p.k = d;
    p.aKContiguous = true;
    p.bKContiguous = false;
    p.gatherA = true;
    p.epilogue = layer.activation == Activation::None ? Epilogue::Store
                                                      : Epilogue::ActForward;
    p.cColumns = u;
    p.auxColumns = layer.activation == Activation::None ? 0 : n;
    break;
  case GemmKind::DownProj: // Y = s * act W2[e]
    p.varlen = Varlen::M;
    p.n = d;
    p.k = n;
    p.aKContiguous = true;
    p.bKContiguous = false;
    p.epilogue = Epilogue::ScaleRows;
    p.cColumns = d;
    break;
  case GemmKind::DH: // dA = gather(dO) W2[e]^T; dH = dact(H, s dA); dS
    p.varlen = Varlen::M;
    p.n = n;
    p.k = d;
    p.aKContiguous = true;
    p.bKContiguous = true;
    p.gatherA = true;
    p.epilogue = Epilogue::DActivation;
    p.cColumns = u;
    p.auxColumns = u;
    break;
  case GemmKind::DW2: // dW2[e] = act[e]^T (s dO)[e]
    p.varlen = Varlen::K;
    p.m = n;
    p.n = d;
    p.aKContiguous = false;
    p.bKContiguous = false;
    p.gatherB = true;
    p.scaleBRows = true;
    p.cColumns = d;
    break;
  case GemmKind::DW1: // dW1[e] = gather(X)[e]^T dH[e]
    p.varlen = Varlen::K;
    p.m = d;
    p.n = u;
    p.aKContiguous = false;
    p.bKContiguous = false;
    p.gatherA = true;
    p.cColumns = u;
    break;
  case GemmKind::DX: // dX~ = dH[e] W1[e]^T
    p.varlen = Varlen::M;
    p.n = d;
    p.k = u;
    p.aKContiguous = true;
    p.bKContiguous = true;
    p.cColumns = d;
    break;
  }
  return p;
}

} // namespace moejit
