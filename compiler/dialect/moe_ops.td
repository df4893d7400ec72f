// The moe dialect: grouped GEMMs of Mixture-of-Experts layers, one op per
// kernel. The op carries everything the spec fixes (sizes, operand storage,
// epilogue, schedule, code path); the run-time values (row offsets, gather
// indices, scores, total rows) are the kernel's arguments in the fixed order
// of docs/kernel-abi.md, so the op itself has no operands.
#ifndef MOEJIT_MOE_OPS_TD
#define MOEJIT_MOE_OPS_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"

def Moe_Dialect : Dialect {
  let name = "moe";
  let summary = "Mixture-of-Experts grouped GEMMs";
  let cppNamespace = "::moejit::moe";
  let useDefaultAttributePrinterParser = 1;
}

class Moe_Enum<string name, string summary, list<I32EnumAttrCase> cases>
    : I32EnumAttr<name, summary, cases> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::moejit::moe";
}

def Moe_Varlen : Moe_Enum<"Varlen", "dimension that varies per expert", [
  I32EnumAttrCase<"M", 0, "m">, I32EnumAttrCase<"K", 1, "k">]>;
def Moe_Epilogue : Moe_Enum<"Epilogue", "what the kernel does with the accumulator", [
  I32EnumAttrCase<"Store", 0, "store">,
  I32EnumAttrCase<"ActForward", 1, "act_forward">,
  I32EnumAttrCase<"ScaleRows", 2, "scale_rows">,
  I32EnumAttrCase<"DActivation", 3, "d_activation">]>;
def Moe_Activation : Moe_Enum<"Activation", "activation function", [
  I32EnumAttrCase<"SwiGLU", 0, "swiglu">, I32EnumAttrCase<"GeGLU", 1, "geglu">,
  I32EnumAttrCase<"GeLU", 2, "gelu">, I32EnumAttrCase<"ReLU", 3, "relu">,
  I32EnumAttrCase<"None", 4, "none">]>;
def Moe_GateUpLayout : Moe_Enum<"GateUpLayout", "gate/up column layout", [
  I32EnumAttrCase<"Concatenated", 0, "concatenated">,
  I32EnumAttrCase<"Interleaved", 1, "interleaved">]>;
def Moe_KernelPath : Moe_Enum<"KernelPath", "code path of the kernel", [
  I32EnumAttrCase<"Portable", 0, "portable">,
  I32EnumAttrCase<"Hopper", 1, "hopper">]>;

class Moe_EnumAttr<EnumAttrInfo info, string mnemonic>
    : EnumAttr<Moe_Dialect, info, mnemonic> {
  let assemblyFormat = "`<` $value `>`";
}
def Moe_VarlenAttr : Moe_EnumAttr<Moe_Varlen, "varlen">;
def Moe_EpilogueAttr : Moe_EnumAttr<Moe_Epilogue, "epilogue">;
def Moe_ActivationAttr : Moe_EnumAttr<Moe_Activation, "activation">;
def Moe_GateUpLayoutAttr : Moe_EnumAttr<Moe_GateUpLayout, "gate_up">;
def Moe_KernelPathAttr : Moe_EnumAttr<Moe_KernelPath, "path">;

def Moe_GroupedGemmOp : Op<Moe_Dialect, "grouped_gemm", [Symbol]> {
  let summary = "one grouped-GEMM kernel over all experts";
  let description = [{
    Declares the kernel `sym_name` computing, for every expert e,
    C[M x N] = A[M x K] * B[K x N] followed by the epilogue, where the
    `varlen` dimension (M: rows grouped by expert, K: the reduction grouped
    by expert) comes from the `offsets` kernel argument at run time and the
    other two are `m`, `n`, `k` (the varlen one is 0). The kernel parameters
    are those of docs/kernel-abi.md; `element_type` is the dtype of A, B, C.

    Example:
    ```mlir
    moe.grouped_gemm @moejit_l_down_proj {
      varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
      m = 0 : i64, n = 2048 : i64, k = 768 : i64,
      a_k_contiguous = true, b_k_contiguous = false,
      epilogue = #moe.epilogue<scale_rows>, activation = #moe.activation<swiglu>,
      gate_up = #moe.gate_up<concatenated>, c_columns = 2048 : i64,
      aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64,
      warps = array<i64: 2, 2>, path = #moe.path<portable>}
    ```
  }];
  let arguments = (ins
    SymbolNameAttr:$sym_name,
    Moe_VarlenAttr:$varlen,
    TypeAttr:$element_type,
    I64Attr:$experts,
    I64Attr:$m, I64Attr:$n, I64Attr:$k,
    BoolAttr:$a_k_contiguous,
    BoolAttr:$b_k_contiguous,
    UnitAttr:$gather_a,
    UnitAttr:$gather_b,
    UnitAttr:$scale_b_rows,
    Moe_EpilogueAttr:$epilogue,
    Moe_ActivationAttr:$activation,
    Moe_GateUpLayoutAttr:$gate_up,
    I64Attr:$c_columns,
    I64Attr:$aux_columns,
    DenseI64ArrayAttr:$tile,
    I64Attr:$stages,
    DenseI64ArrayAttr:$warps,
    Moe_KernelPathAttr:$path,
    UnitAttr:$ping_pong,
    DefaultValuedAttr<I64Attr, "1">:$cluster_m,
    UnitAttr:$raster_along_m,
    UnitAttr:$staggered_epilogues,
    UnitAttr:$tma_stores);
  let assemblyFormat = "$sym_name attr-dict";
  let hasVerifier = 1;
}

#endif // MOEJIT_MOE_OPS_TD
