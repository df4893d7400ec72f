// Builds a layer in C++, checks it and prints its hash: the public API from
// the installed package, without the source tree.
#include <moejit/dsl.h>
#include <moejit/version.h>

#include <iostream>

int main() {
  moejit::Spec spec;
  moejit::LayerSpec layer;
  layer.name = "consumer";
  layer.experts = 8;
  layer.hidden = 256;
  layer.intermediate = 128;
  layer.router.topK = 2;
  spec.layers.push_back(layer);
  moejit::Diagnostics diags;
  if (!moejit::resolveSpec(spec, moejit::Target::fromArch("sm_90a"), diags)) {
    std::cerr << diags.render();
    return 1;
  }
  std::cout << "moejit " << moejit::kVersion << " layer " << spec.layers[0].name
            << " gemms " << spec.layers[0].gemms.size() << " hash "
            << moejit::specHash(spec.layers[0]) << "\n";
  return spec.layers[0].gemms.size() == 6 ? 0 : 1;
}
