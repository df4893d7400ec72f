// moejit-opt: mlir-opt with the moe dialect and the moejit lowering passes.
#include "compiler/backend/dialects.h"
#include "compiler/lowering/passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  moejit::registerCompilerDialects(registry);
  moejit::registerMoeLoweringPipelines();
  mlir::registerConversionPasses();
  mlir::registerTransformsPasses();
  mlir::memref::registerMemRefPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "moejit optimizer driver\n", registry));
}
